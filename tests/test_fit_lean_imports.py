"""A task verb's process imports MONAI without mlflow, ignite, pandas and matplotlib (mitk/runner/imports.py), and
gives the same answer as a process that imports MONAI in full."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mitk.checkpoint import save_checkpoint

LUNG_CT = Path(__file__).parent / "data" / "lung1_image.nii.gz"
CHILD = """
import json, sys
from mitk.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as done:
    code = done.code
loaded = [name for name in ("monai", "mlflow", "ignite", "pandas", "matplotlib") if name in sys.modules]
import pandas  # hidden only while MONAI imported: importable as ever afterwards
print(json.dumps({"code": code, "loaded": loaded}))
"""
FULL = """
import sys
import monai  # in full, with the optional packages it finds
assert any(name in sys.modules for name in ("pandas", "ignite", "mlflow")), "MONAI was not imported in full"
import numpy as np
import mitk
weights, image, out = sys.argv[1:]
np.save(out, mitk.load(weights=weights, device="cpu").segment(image).label_map)
"""


def test_segment_runs_on_a_lean_monai_with_the_same_labels(tmp_path: Path) -> None:
    from mitk_builtin._segment_networks import UNetSegmenter


    plugin = UNetSegmenter()
    config = plugin.resolve_config({"network": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
                                    "labels": ["background", "lesion"]})
    torch.manual_seed(3)
    weights = tmp_path / "unet.safetensors"
    save_checkpoint(weights, plugin.network(config).state_dict(), task="segment", plugin="unet",
                    plugin_version=None, config=config)
    out = tmp_path / "seg.nii.gz"
    done = subprocess.run([sys.executable, "-c", CHILD, "segment", str(LUNG_CT), "--weights", str(weights),
                           "-o", str(out), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "loaded": ["monai"]}, report
    # the same labels as a process that imported MONAI in full (a fresh one: this test process may have imported
    # MONAI leanly already, through an in-process command of another test)
    full = tmp_path / "full.npy"
    done = subprocess.run([sys.executable, "-c", FULL, str(weights), str(LUNG_CT), str(full)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    mine = np.load(full)
    theirs = np.asarray(nib.load(out).dataobj)
    assert theirs.any() or mine.any()
    np.testing.assert_array_equal(theirs, mine)
