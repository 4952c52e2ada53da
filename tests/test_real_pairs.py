"""The whole segmentation workflow on the real CT and MR image+label pairs in ../shared/data.

``mitk train segment`` → ``mitk segment --weights`` → ``mitk evaluate segment`` through the CLI, on the
pyradiomics brain1 (MR, tumour) and lung1 (CT, lesion) pairs. A few CPU epochs cannot segment a small
lesion well, so the test checks the contract — a checkpoint that describes itself, a label map on the
input's exact grid, an evaluation that scores it — and that the trained network beats an empty guess on
its training case.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import run_mitk

pytestmark = pytest.mark.slow

CASES = {
    # spacing keeps the slices (6.5 mm / 5 mm) and halves in-plane resolution; windowing as a CT or MR user would
    "brain1": ({"spacing": [1.6, 1.6, 6.5], "intensity": {"mode": "mr"}}, "tumour"),
    "lung1": ({"spacing": [1.2, 1.2, 5.0], "intensity": {"mode": "ct", "a_min": -1000, "a_max": 400}}, "lesion"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_segment_evaluate_on_real_pair(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    image = request.getfixturevalue("brain_mr" if name == "brain1" else "lung_ct")
    label = request.getfixturevalue("brain_mr_label" if name == "brain1" else "lung_ct_label")
    settings, label_name = CASES[name]
    datalist = tmp_path / "dataset.json"
    pair = {"image": str(image), "label": str(label)}
    datalist.write_text(json.dumps({"labels": {"0": "background", "1": label_name},
                                    "training": [pair], "validation": [pair]}))
    set_args = [arg for key, value in settings.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    run = tmp_path / "run"
    trained = run_mitk("train", "segment", "--plugin", "unet", "--data", str(datalist), "-d", str(run),
                       "--epochs", "3", "--patch-size", "64,64,16", "--lr", "0.01", "--seed", "0",
                       "--set", "network.channels=[8,16,32]", "--set", "network.strides=[2,2]",
                       "--set", "positive=3", *set_args, "--json")
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)
    checkpoint = Path(report["checkpoint"])
    assert checkpoint.exists()

    prediction = tmp_path / "pred" / f"{name}_seg.nii.gz"
    segmented = run_mitk("segment", str(image), "--weights", str(checkpoint), "-o", str(prediction), "--json")
    assert segmented.returncode == 0, segmented.stderr
    source, output = nib.load(image), nib.load(prediction)
    assert output.shape == source.shape
    np.testing.assert_allclose(output.affine, source.affine, atol=1e-5)
    assert np.asanyarray(output.dataobj).dtype.kind == "u"

    evaluated = run_mitk("evaluate", "segment", "--pred", str(prediction), "--ref", str(label), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    scores = json.loads(evaluated.stdout)
    dice = scores["cases"][0]["labels"][0]["dice"] if "labels" in scores["cases"][0] else None
    assert dice is not None and 0.0 <= dice <= 1.0
    print(f"{name}: Dice {dice:.3f} after 3 epochs")
