"""The ``retinanet`` recipe that sees the lesions: patches centred on boxes, spacing and anchors planned from the
training boxes, the too-small / too-few warnings, and a short training on real anatomy that learns to rank the
anchors on lesions above the background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import invoke
from mitk_builtin._detect_retinanet import RetinaNetDetectorPlugin, build_detector
from mitk_builtin._detect_sampling import RandBoxPatches, crop_boxes, plan

from mitk.tasks.detect.recipe import LoadBoxCase, box_statistics, read_box_datalist, size_warnings


def test_patches_centred_on_boxes_contain_them() -> None:
    image = torch.zeros(1, 60, 50, 40)
    image[:, 40:44, 10:14, 30:34] = 1.0  # the lesion: voxels 40..43 → extent 39.5 .. 43.5
    box = np.array([[39.5, 9.5, 29.5, 43.5, 13.5, 33.5]], dtype=np.float32)
    patches = RandBoxPatches([16, 16, 16], 20, 1.0, seed=3)({"image": image, "box": box, "label": np.array([0])})
    assert len(patches) == 20 and len({tuple(p["box"][0]) for p in patches}) > 5  # shifted at random
    for patch in patches:
        assert patch["image"].shape == (1, 16, 16, 16) and len(patch["box"]) == 1
        low, high = patch["box"][0][:3], patch["box"][0][3:]
        assert np.all(low >= -0.5) and np.all(high <= 15.5) and np.allclose(high - low, 4.0)
        inside = patch["image"][0][tuple(slice(int(a + 0.5), int(b + 0.5)) for a, b in zip(low, high, strict=True))]
        assert inside.numel() == 64 and float(inside.min()) == 1.0 and float(patch["image"].sum()) == 64.0
    anywhere = RandBoxPatches([16, 16, 16], 40, 0.0, seed=3)({"image": image, "box": box, "label": np.array([0])})
    assert sum(len(p["box"]) for p in anywhere) < 20  # random patches mostly miss a small lesion


def test_crop_drops_boxes_centred_outside_and_clips_the_rest() -> None:
    boxes = np.array([[-1.5, 0.5, 0.5, 1.5, 3.5, 3.5], [-6.5, 0, 0, -1.5, 2, 2]], dtype=np.float32)
    kept, labels = crop_boxes(boxes, np.array([0, 1]), np.array([0, 0, 0]), np.array([8, 8, 8]))
    assert labels.tolist() == [0] and kept.tolist() == [[-0.5, 0.5, 0.5, 1.5, 3.5, 3.5]]


def test_spacing_and_anchors_planned_from_the_boxes() -> None:
    config = {"spatial_dims": 3, "spacing": "auto", "anchors": {"base_shapes": "auto"},
              "box_statistics": {"count": 40, "p5_mm": [12.0, 12.0, 16.0], "p95_mm": [24.0, 24.0, 24.0]}}
    planned = plan(config)
    assert planned["spacing"] == [3.0, 3.0, 3.0]  # the small boxes 4 voxels across
    assert planned["anchors"]["base_shapes"][0] == [4.0, 4.0, 5.33]
    assert planned["anchors"]["base_shapes"][1] == pytest.approx([5.66, 5.66, 6.53], abs=0.01)
    fixed = plan({"spatial_dims": 3, "spacing": [6, 6, 6], "anchors": {"base_shapes": "auto"},
                  "box_statistics": {"count": 40, "p5_mm": [12, 12, 12], "p95_mm": [12, 12, 12]}})
    assert fixed["anchors"]["base_shapes"] == [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("patches") / "sample"
    code, _, stderr = invoke(["sample", "detect", "-d", str(folder), "--cases", "5", "--size", "32", "--seed", "2"])
    assert code == 0, stderr
    return folder


def test_warnings_name_the_spacing_that_shows_the_lesions(sample: Path) -> None:
    datalist = read_box_datalist(sample, seed=0, validation_fraction=0.2)
    stats = box_statistics(datalist.training)
    assert stats["count"] == sum(len(c["box"]) for c in datalist.training)
    coarse = size_warnings(datalist, {"spacing": [12.0, 12.0, 12.0], "box_statistics": stats})
    assert any("a small data set" in w for w in coarse)
    [small] = [w for w in coarse if "lesions are small" in w]
    suggested = float(small.split("spacing=[")[1].split(",")[0])
    assert suggested == pytest.approx(min(stats["p5_mm"]) / 3, abs=0.02)
    planned = RetinaNetDetectorPlugin().resolve_config({"box_statistics": stats})
    assert not any("lesions are small" in w for w in size_warnings(datalist, planned))
    code, stdout, stderr = invoke(["train", "detect", "--plugin", "retinanet", "--data", str(sample), "--output-dir",
                                   str(sample.parent / "run"), "--epochs", "1", "--set", "spacing=[12,12,12]",
                                   "--set", "sampling.patch_size=[8,8,8]", "--set", "backbone.block_inplanes=[8,8,8,8]",
                                   "--set", "backbone.fpn_channels=8"])
    assert code == 0, stderr
    assert "warning: lesions are small for the network grid" in stdout + stderr


def _anchor_ranking(detector: torch.nn.Module, patches: list[dict[str, object]]) -> float:
    """P(score of a positive anchor > score of a negative one) over ``patches`` (0.5: no ranking)."""
    from monai.apps.detection.utils.detector_utils import preprocess_images

    detector.eval()
    positives, negatives = [], []
    with torch.no_grad():
        for patch in patches:
            images, _ = preprocess_images([torch.as_tensor(patch["image"])], 3, detector.size_divisible)
            head = detector.network(images)
            detector.generate_anchors(images, head)
            counts = [x.shape[2:].numel() for x in head[detector.cls_key]]
            target = {"box": torch.as_tensor(patch["box"]), "label": torch.as_tensor(patch["label"])}
            [matched] = detector.compute_anchor_matched_idxs(detector.anchors, [target], counts)
            logits = torch.cat([x.permute(0, 2, 3, 4, 1).reshape(-1, detector.num_classes)
                                for x in head[detector.cls_key]])
            scores = logits.reshape(-1, detector.num_classes).max(dim=1).values
            positives.append(scores[matched >= 0])
            negatives.append(scores[matched == -1])
    detector.train()
    pos, neg = torch.cat(positives), torch.cat(negatives)
    return float((pos[:, None] > neg[None, ::7]).float().mean())


def test_short_training_on_real_anatomy_ranks_lesion_anchors_first(sample: Path) -> None:
    """A few dozen steps on box-centred patches: the anchors matched to lesions score above the background
    (ranking near 0.5 before training, clearly above after 30 steps); most patches hold a lesion."""
    torch.manual_seed(0)
    plugin = RetinaNetDetectorPlugin()
    datalist = read_box_datalist(sample, seed=0, validation_fraction=0.2)
    config = plugin.resolve_config({"labels": {"1": "bright lesion", "2": "dark lesion"},
                                    "box_statistics": box_statistics(datalist.training),
                                    "backbone": {"block_inplanes": [8, 16, 16, 16], "fpn_channels": 8,
                                                 "returned_layers": [1]},
                                    "sampling": {"patch_size": [16, 16, 16], "per_case": 2, "box_fraction": 0.67}})
    transform = plugin.training_transforms(config)
    cases = [LoadBoxCase(1)(case) for case in datalist.training]
    fixed = [p for case in cases for p in RandBoxPatches([16] * 3, 2, 1.0, seed=5)(
        plugin.validation_transforms(config)(case))]
    detector = build_detector(config)
    step = plugin.training_step(config)
    before = _anchor_ranking(detector, fixed)
    optimizer = torch.optim.AdamW(detector.parameters(), lr=3e-3)
    with_boxes = 0
    for n in range(30):
        batch = [p for case in cases[n % len(cases): n % len(cases) + 2] for p in transform(case)]
        with_boxes += sum(len(p["box"]) > 0 for p in batch)
        loss = step.loss(detector, batch, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _anchor_ranking(detector, fixed)
    assert with_boxes >= 30  # most patches hold a lesion
    assert abs(before - 0.5) < 0.15 and after > 0.65 and after - before > 0.08, (before, after)


def test_a_checkpoint_saved_before_head_convs_existed_still_loads(tmp_path: Path) -> None:
    """Checkpoints of the earlier recipe store no ``backbone.head_convs``: they get MONAI's four head convolutions
    they were trained with, and their weights load."""
    import torch
    from mitk_builtin._detect_retinanet import RetinaNetDetectorPlugin

    from mitk.checkpoint import save_checkpoint
    from mitk.runner.model import load_model

    plugin = RetinaNetDetectorPlugin()
    config = plugin.resolve_config({"spacing": [4.0, 4.0, 4.0], "anchors": {"base_shapes": [[6, 6, 6]]},
                                    "backbone": {"head_convs": 4}, "sampler": {"name": "hard_negative"}})
    torch.manual_seed(0)
    state = plugin.network(config).state_dict()
    saved = {**config, "backbone": {k: v for k, v in config["backbone"].items() if k != "head_convs"},
             "sampler": {k: v for k, v in config["sampler"].items() if k != "name"}}
    path = save_checkpoint(tmp_path / "old.safetensors", state, task="detect", plugin="retinanet",
                           plugin_version=None, config=saved)
    model = load_model("detect", None, path)
    assert model.config["backbone"]["head_convs"] == 4 and model.config["sampler"]["name"] == "hard_negative"
