"""The core imports no heavy toolkit: ART, Captum, scikit-learn/-image, torchvision stay out."""
import subprocess
import sys

HEAVY = ("art", "captum", "sklearn", "skimage", "torchvision", "pandas")

SCRIPT = """
import sys, os
os.environ["ADVINTERP_DISABLE_PLUGINS"] = ",".join(
    ep.name for ep in __import__("importlib.metadata").metadata.entry_points(group="advinterp"))
import advinterp, advinterp.testing, advinterp.datasets.broden, advinterp.datasets.cub
import advinterp.datasets.imagenet, advinterp.viz, advinterp.cli, advinterp.demo
advinterp.list_components()
from advinterp.testing import toy_model, toy_batch
m = toy_model(); b = toy_batch(m)
advinterp.get_analyzer("activation_distance").analyze(m, b)
print(",".join(sorted(k for k in {heavy} if k in sys.modules)))
"""


def test_core_imports_no_heavy_toolkit():
    code = SCRIPT.format(heavy=repr(set(HEAVY)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"the core imported: {r.stdout.strip()}"
