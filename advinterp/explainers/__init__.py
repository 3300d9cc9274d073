"""The core's built-in explainers (the CAM family lives in the advinterp-captum plugin)."""
