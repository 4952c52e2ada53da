"""Uncertainty outputs: the per-voxel entropy map of ``mitk segment --uncertainty`` on the input's exact grid
(SimpleITK is the oracle) with its record summary, and the formulas against scipy.stats.entropy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke
from test_ensemble import unet_checkpoint

from mitk.runner.ensemble import entropy, mutual_information

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def test_formulas_match_scipy() -> None:
    from scipy.stats import entropy as scipy_entropy

    rng = np.random.default_rng(0)
    passes = rng.dirichlet([1.0, 2.0, 3.0], size=5)
    assert entropy(passes[0]) == pytest.approx(scipy_entropy(passes[0]))
    np.testing.assert_allclose(entropy(passes, axis=-1), scipy_entropy(passes, axis=-1))
    mean = passes.mean(axis=0)
    expected = scipy_entropy(mean) - np.mean([scipy_entropy(p) for p in passes])
    assert mutual_information(passes) == pytest.approx(expected) and expected > 0
    assert mutual_information(np.repeat(passes[:1], 4, axis=0)) == pytest.approx(0.0, abs=1e-12)  # agreement
    sigmoid = np.array([0.9, 0.2])  # multi-label: each class its own Bernoulli
    binary = sum(scipy_entropy([p, 1 - p]) for p in sigmoid)
    assert entropy(sigmoid, axis=-1, binary=True) == pytest.approx(binary)
    assert entropy(np.array([1.0, 0.0])) == pytest.approx(0.0, abs=1e-9)  # 0 log 0 = 0


def test_segment_entropy_map_is_on_the_input_grid(brain_mr: Path, tmp_path: Path) -> None:
    import SimpleITK as sitk

    weights = unet_checkpoint(tmp_path / "best.safetensors", seed=0)
    code, stdout, stderr = invoke(["segment", str(brain_mr), "-w", str(weights), "-d", str(tmp_path / "out"),
                                   "--uncertainty", "--tta", "--json", "--device", "cpu"])
    assert code == 0, stderr
    record = json.loads(stdout)["cases"][0]
    summary = record["uncertainty"]
    entropy_path = tmp_path / "out" / summary["entropy_map"]
    assert summary["passes"] == 8 and record["passes"] == {"members": 1, "flips": 8, "total": 8}
    assert set(summary) >= {"mean_entropy", "passes", "entropy_map"}
    reference, written = sitk.ReadImage(str(brain_mr)), sitk.ReadImage(str(entropy_path))
    assert written.GetSize() == reference.GetSize()
    np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-6)
    assert written.GetPixelID() == sitk.sitkFloat32
    values = sitk.GetArrayFromImage(written)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(record["output"]))
    assert values.min() >= 0.0 and values.max() <= np.log(2) + 1e-5  # two labels: at most log 2 nats
    region = labels != 0 if summary["region"] == "foreground" else np.ones_like(labels, bool)
    assert summary["mean_entropy"] == pytest.approx(float(values[region].mean()), rel=1e-5)


def test_without_the_flag_there_is_no_entropy(brain_mr: Path, tmp_path: Path) -> None:
    weights = unet_checkpoint(tmp_path / "best.safetensors", seed=0)
    code, stdout, stderr = invoke(["segment", str(brain_mr), "-w", str(weights), "-d", str(tmp_path / "out"),
                                   "--json", "--device", "cpu"])
    assert code == 0, stderr
    record = json.loads(stdout)["cases"][0]
    assert "uncertainty" not in record and "passes" not in record
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["brain1_image_seg.nii.gz"]
