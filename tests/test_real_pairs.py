"""The whole segmentation workflow on the real CT and MR image+label pairs in tests/data.

``mitk train segment`` → ``mitk segment --weights`` → ``mitk evaluate segment`` through the CLI, on the
pyradiomics brain1 (MR, tumour) and lung1 (CT, lesion) crops. The contract — a checkpoint that describes
itself, a label map on the input's exact grid, an evaluation that scores it — and learning: 40 seeded CPU
steps of a small U-Net on patches around the lesion (no augmentation) must segment the training case far
better than an empty or an all-foreground guess (about 0.55 and 0.4 Dice; the bar is 0.3).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import run_mitk

pytestmark = pytest.mark.slow

NO_AUGMENTATION = {"flip": 0, "rotate90": 0, "intensity": 0, "scale": 0, "shift": 0}
CASES = {
    # spacing keeps the slices (6.5 mm / 5 mm) and about halves in-plane resolution; windowing as a user would
    "brain1": ({"spacing": [1.6, 1.6, 6.5], "intensity": {"mode": "mr"}}, "tumour"),
    "lung1": ({"spacing": [1.2, 1.2, 5.0], "intensity": {"mode": "ct", "a_min": -1000, "a_max": 400}}, "lesion"),
}
MIN_DICE = 0.3


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    total = np.count_nonzero(prediction) + np.count_nonzero(reference)
    return 2.0 * np.count_nonzero(prediction & reference) / total if total else 1.0


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_segment_evaluate_on_real_pair(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    image = request.getfixturevalue("brain_mr" if name == "brain1" else "lung_ct")
    label = request.getfixturevalue("brain_mr_label" if name == "brain1" else "lung_ct_label")
    settings, label_name = CASES[name]
    datalist = tmp_path / "dataset.json"
    pair = {"image": str(image), "label": str(label)}
    datalist.write_text(json.dumps({"labels": {"0": "background", "1": label_name},
                                    "training": [pair], "validation": [pair]}))
    settings = {**settings, "augmentation": NO_AUGMENTATION, "samples_per_case": 4, "negative": 0.5}
    set_args = [arg for key, value in settings.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    run = tmp_path / "run"
    trained = run_mitk("train", "segment", "--plugin", "unet", "--data", str(datalist), "-d", str(run),
                       "--epochs", "40", "--val-every", "20", "--patch-size", "32,32,16", "--lr", "0.01",
                       "--seed", "0", "--set", "network.channels=[16,32]", "--set", "network.strides=[2]",
                       *set_args, "--json")
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
    (row,) = json.loads(evaluated.stdout)["cases"][0]["labels"]
    reference = np.asanyarray(nib.load(label).dataobj) > 0
    predicted = np.asanyarray(output.dataobj) > 0
    assert row["dice"] == pytest.approx(dice(predicted, reference), abs=1e-5)
    empty_guess = dice(np.zeros_like(reference), reference)  # 0
    everything_guess = dice(np.ones_like(reference), reference)  # 2|R| / (|R| + N): 0.02 and 0.002 here
    print(f"{name}: Dice {row['dice']:.3f} after 40 steps (empty {empty_guess:.3f}, all {everything_guess:.3f})")
    assert row["dice"] > max(MIN_DICE, empty_guess, 10 * everything_guess)
