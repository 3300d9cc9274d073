"""Built-in probes: model-level analyses over a dataset (:class:`advinterp.Probe`)."""
