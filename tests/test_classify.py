"""``mitk classify`` end to end with an in-process plugin whose answer can be computed by hand.

The test network reads the mean intensity of the preprocessed image and maps it to two logits with a
linear layer; its weights come only from a checkpoint, so the probabilities prove that the runner loaded
the plugin, its configuration and its weights from that checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import invoke, load

from mitk import hookimpl
from mitk.checkpoint import save_checkpoint
from mitk.tasks import ClassificationPlugin, Transform

PLUGIN = "mean-intensity"
CLASS_NAMES = ["dim", "bright"]
SCALE = 1000.0
WEIGHT = [[-0.25], [0.25]]
BIAS = [1.0, -1.0]


class MeanIntensityClassifier(ClassificationPlugin):
    """Logits ``W · mean(image / scale) + b``: a classifier small enough to check by hand."""

    def default_config(self) -> dict[str, Any]:
        return {"scale": 1.0, "class_names": ["a", "b"]}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2))

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        from monai.transforms import Lambdad

        scale = float(config["scale"])
        divide: Any = Lambdad(keys="image", func=lambda image: image / scale)
        return divide


def expected_probabilities(path: Path) -> list[float]:
    """Softmax of the two logits, in float64, from the image as nibabel reads it."""
    mean = float(np.mean(load(path).get_fdata(dtype=np.float64))) / SCALE
    logits = np.asarray(WEIGHT)[:, 0] * mean + np.asarray(BIAS)
    exp = np.exp(logits - logits.max())
    return list(exp / exp.sum())


@pytest.fixture
def classifier(mitk_plugins: Callable[..., Any]) -> None:
    """Register ``mean-intensity`` for this test only."""

    class Plugin:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register: Any) -> None:
            register(PLUGIN, task="classify", factory=MeanIntensityClassifier)

    mitk_plugins(Plugin())


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    network = MeanIntensityClassifier().network({})
    state = network.state_dict()
    state["2.weight"] = torch.tensor(WEIGHT)
    state["2.bias"] = torch.tensor(BIAS)
    return save_checkpoint(tmp_path / "classifier.safetensors", state, task="classify", plugin=PLUGIN,
                           plugin_version="0", config={"scale": SCALE, "class_names": CLASS_NAMES})


@pytest.fixture
def corrupt(brain_mr: Path, tmp_path: Path) -> Path:
    raw = brain_mr.read_bytes()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(raw[: len(raw) // 3])
    return path


@pytest.mark.usefixtures("classifier")
def test_probabilities_match_hand_computation(checkpoint: Path, brain_mr: Path, anatomical_t1: Path) -> None:
    code, stdout, stderr = invoke(["classify", str(brain_mr), str(anatomical_t1), "--weights", str(checkpoint),
                                   "--json"])
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["plugin"] == PLUGIN and document["summary"]["ok"] == 2
    predicted = []
    for record, path in zip(document["cases"], (brain_mr, anatomical_t1), strict=True):
        assert record["input"] == str(path) and record["status"] == "ok" and record["output"] is None
        expected = expected_probabilities(path)
        assert list(record["probabilities"]) == CLASS_NAMES  # names from the checkpoint's config
        assert np.allclose(list(record["probabilities"].values()), expected, atol=2e-6)
        assert record["predicted"] == CLASS_NAMES[int(np.argmax(expected))]
        predicted.append(record["predicted"])
    assert predicted == ["dim", "bright"]  # the two images fall on either side: the weights matter


@pytest.mark.usefixtures("classifier")
def test_output_dir_writes_class_json(checkpoint: Path, brain_mr: Path, anatomical_t1: Path, tmp_path: Path
                                      ) -> None:
    out = tmp_path / "out"
    code, _, stderr = invoke(["classify", str(brain_mr), str(anatomical_t1), "--weights", str(checkpoint),
                              "--output-dir", str(out)])
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["anatomical_class.json", "brain1_image_class.json"]
    record = json.loads((out / "brain1_image_class.json").read_text())
    assert record["input"] == str(brain_mr) and record["predicted"] == "dim"
    assert np.allclose(list(record["probabilities"].values()), expected_probabilities(brain_mr), atol=2e-6)


@pytest.mark.usefixtures("classifier")
def test_segmentation_checkpoint_is_refused(brain_mr: Path, tmp_path: Path) -> None:
    from mitk_builtin._threshold import ThresholdSegmenter

    path = tmp_path / "segmenter.safetensors"
    save_checkpoint(path, {"weight": torch.zeros(1)}, task="segment", plugin="threshold", plugin_version=None,
                    config=ThresholdSegmenter().default_config())
    out = tmp_path / "out"
    code, stdout, stderr = invoke(["classify", str(brain_mr), "--weights", str(path), "--output-dir", str(out)])
    assert code == 1
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr
    assert lines[0].startswith("mitk: error:") and str(path) in lines[0]
    assert "segment task, not classify" in lines[0]
    assert not out.exists()


@pytest.mark.usefixtures("classifier")
def test_one_corrupt_input_among_good_ones(checkpoint: Path, brain_mr: Path, anatomical_t1: Path,
                                           corrupt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = invoke(["classify", str(brain_mr), str(corrupt), str(anatomical_t1),
                                   "--weights", str(checkpoint), "-d", str(out), "--json"])
    assert code == 3, stderr
    records = json.loads(stdout)["cases"]
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert str(corrupt) in records[1]["error"] and "\n" not in records[1]["error"]
    assert records[2]["predicted"] == "bright"
    assert sorted(p.name for p in out.iterdir()) == ["anatomical_class.json", "brain1_image_class.json"]
