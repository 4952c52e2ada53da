"""The built-in ``retinanet``: no torchvision, trains on ``mitk sample detect``, its checkpoint round trips,
and ``mitk detect --weights`` / ``mitk evaluate detect`` run end to end; box datalists by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke

from mitk.tasks.detect.recipe import world_boxes

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "spacing=[9,9,9]", "--set", "patch_size=[32,32,32]", "--set", "backbone.block_inplanes=[8,16,32,64]",
        "--set", "backbone.fpn_channels=16"]


def test_retinanet_builds_and_trains_without_torchvision() -> None:
    """torchvision made unimportable: the ATSS matcher and hard-negative sampler path still computes losses."""
    script = """
import sys
sys.modules["torchvision"] = None  # import torchvision now raises ImportError
import torch
from mitk_builtin._detect_retinanet import RetinaNetDetectorPlugin
plugin = RetinaNetDetectorPlugin()
config = plugin.resolve_config({"backbone": {"block_inplanes": [8, 16, 32, 64], "fpn_channels": 16},
                                "sampler": {"name": "hard_negative"}})
detector = plugin.network(config)
image = torch.rand(1, 32, 32, 32)
image[:, 10:16, 10:16, 10:16] += 2
losses = detector([image], [{"box": torch.tensor([[9.5, 9.5, 9.5, 15.5, 15.5, 15.5]]), "label": torch.tensor([0])}])
assert set(losses) == {"classification", "box_regression"} and all(torch.isfinite(v) for v in losses.values())
(losses["classification"] + losses["box_regression"]).backward()
detector.eval()
with torch.no_grad():
    [output] = detector([image])
assert output["box"].shape[1] == 6
print("ok", "torchvision" in sys.modules and sys.modules["torchvision"] is not None)
"""
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["ok", "False"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("retinanet")
    sample, run = folder / "sample", folder / "run"
    code, _, stderr = invoke(["sample", "detect", "-d", str(sample), "--cases", "4", "--size", "24", "--seed", "1"])
    assert code == 0, stderr
    code, _, stderr = invoke(["train", "detect", "--plugin", "retinanet", "--data", str(sample), "--output-dir",
                              str(run), "--epochs", "4", *TINY])
    assert code == 0, stderr
    return sample, run


def test_training_loss_falls_and_validation_is_scored(trained: tuple[Path, Path]) -> None:
    _, run = trained
    rows = json.loads((run / "log.json").read_text())["epochs"]
    losses = [float(row["loss"]) for row in rows]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert all(key in rows[-1] for key in ("val_mAP", "val_mAR", "val_froc")), rows[-1]


def test_checkpoint_round_trips_and_detects(trained: tuple[Path, Path]) -> None:
    import torch

    from mitk.checkpoint import load_checkpoint
    from mitk.runner.model import load_model

    sample, run = trained
    checkpoint = load_checkpoint(run / "last.safetensors")
    model = load_model("detect", None, run / "last.safetensors", {}, "cpu")
    assert model.name == "retinanet" and checkpoint.plugin == "retinanet"
    state = model.network.state_dict()
    assert all(torch.equal(state[key].cpu(), value.cpu()) for key, value in checkpoint.state_dict.items())

    predictions = sample / "pred"
    code, stdout, stderr = invoke(["detect", "--weights", str(run / "last.safetensors"), str(sample / "imagesTs"),
                                   "-d", str(predictions), "--json"])
    assert code == 0, stderr
    [record] = json.loads(stdout)["cases"]
    for box in record["boxes"]:  # boxes come back on the input grid, with world mm
        assert np.all(np.asarray(box["box_voxel"][3:]) >= np.asarray(box["box_voxel"][:3]))
        assert box["name"] in ("bright lesion", "dark lesion")
    code, stdout, stderr = invoke(["evaluate", "detect", "--pred", str(predictions), "--ref",
                                   str(sample / "boxesTs"), "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["scans"] == 1


def test_resume_continues_the_run(trained: tuple[Path, Path]) -> None:
    _, run = trained
    code, _, stderr = invoke(["train", "detect", "--output-dir", str(run), "--resume", "--epochs", "5"])
    assert code == 0, stderr
    epochs = [row["epoch"] for row in json.loads((run / "log.json").read_text())["epochs"]]
    assert epochs == [1, 2, 3, 4, 5]


def test_datalist_boxes_by_hand() -> None:
    """World/voxel coordinates, RAS/LPS and MONAI box modes all become world RAS extents."""
    affine = np.array([[2.0, 0, 0, -10], [0, 3.0, 0, 20], [0, 0, 1.5, 5], [0, 0, 0, 1]])
    settings = {"box_mode": "xyzxyz", "box_coordinates": "world", "coordinate_system": "RAS"}
    assert world_boxes({"box": [[1, 2, 3, 4, 5, 6]]}, affine, settings).tolist() == [[1, 2, 3, 4, 5, 6]]
    lps = {**settings, "coordinate_system": "LPS"}
    assert world_boxes({"box": [[1, 2, 3, 4, 5, 6]]}, affine, lps).tolist() == [[-4, -5, 3, -1, -2, 6]]
    centre = {**settings, "box_mode": "cccwhd"}
    assert world_boxes({"box": [[10, 20, 30, 4, 6, 8]]}, affine, centre).tolist() == [[8, 17, 26, 12, 23, 34]]
    voxel = {**settings, "box_coordinates": "voxel"}
    # voxels 1..3 along i: extent 0.5..3.5 → x = 2·0.5 − 10 .. 2·3.5 − 10
    assert world_boxes({"box": [[1, 0, 2, 4, 1, 4]]}, affine, voxel).tolist() == \
        [[-9.0, 18.5, 7.25, -3.0, 21.5, 10.25]]


def test_resampling_to_the_network_grid_keeps_exact_geometry() -> None:
    """A linear ramp in world mm, resampled to ~4 mm: every interior value is the ramp at the new voxel centre
    given by the new affine (so boxes map back exactly)."""
    import torch
    from mitk_builtin._detect_retinanet import ResampleToSpacing
    from monai.data import MetaTensor

    affine = np.array([[0.5, 0, 0, -10], [0, 0.7, 0, 3], [0, 0, 1.3, 7], [0, 0, 0, 1.0]])

    def ramp(grid_affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        world = np.einsum("ij,jklm->iklm", grid_affine[:3, :3], np.indices(shape).astype(float))
        world += grid_affine[:3, 3, None, None, None]
        return np.asarray(world[0] + 2 * world[1] - world[2])

    image = MetaTensor(torch.as_tensor(ramp(affine, (64, 50, 30)), dtype=torch.float32)[None],
                       affine=torch.as_tensor(affine))
    out = ResampleToSpacing([4.0, 4.0, 4.0])({"image": image})["image"]
    new_affine = np.asarray(out.affine, dtype=float)
    assert np.allclose(np.linalg.norm(new_affine[:3, :3], axis=0), 4.0, atol=0.15)
    expected = ramp(new_affine, tuple(out.shape[1:]))
    assert np.abs(out[0].numpy() - expected)[1:-1, 1:-1, 1:-1].max() < 1e-3


def test_retinanet_in_2d_trains_and_detects() -> None:
    """spatial_dims=2 on a one-slice image: targets drop the k axis, detected boxes span the only slice."""
    import torch
    from mitk_builtin._detect_retinanet import RetinaNetDetectorPlugin
    from monai.data import MetaTensor

    plugin = RetinaNetDetectorPlugin()
    config = plugin.resolve_config({"spatial_dims": 2, "spacing": [1.0, 1.0, 1.0],
                                    "backbone": {"block_inplanes": [8, 16, 32, 64],
                                                                    "fpn_channels": 16}})
    detector = plugin.network(config)
    image = torch.rand(1, 48, 48, 1)
    image[:, 10:18, 20:28] += 2
    case = {"image": MetaTensor(image, affine=torch.eye(4, dtype=torch.float64)), "labels": np.array([1]),
            "boxes_world": np.array([[9.5, 19.5, -0.5, 17.5, 27.5, 0.5]]), "name": "slice"}
    target = plugin.validation_transforms(config)(case)
    assert tuple(target["image"].shape) == (1, 48, 48)
    assert np.allclose(target["box"], [[9.5, 19.5, 17.5, 27.5]])  # identity grid: world extent = voxel extent
    losses = detector([target["image"]], [{"box": torch.as_tensor(target["box"]),
                                           "label": torch.as_tensor(target["label"])}])
    assert all(torch.isfinite(v) for v in losses.values())
    preprocessed = plugin.inference_transforms(config)({"image": case["image"]})["image"]
    boxes, scores, labels = plugin.detect(preprocessed, detector, config)
    assert boxes.shape[1] == 6 and np.all(boxes[:, 2] == 0) and np.all(boxes[:, 5] == 1)
    assert len(scores) == len(labels) and set(labels.tolist()) <= {1}
