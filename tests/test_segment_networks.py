"""The ``unet``, ``segresnet`` and ``swinunetr`` plugins: registration, configuration, MONAI pieces."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from mitk.checkpoint import save_checkpoint
from mitk.errors import CheckpointError, PluginError
from mitk.plugin_manager import get_registry
from mitk.runner.model import load_model
from mitk.types import orientation_code, voxel_spacing

NETWORKS = ("unet", "segresnet", "swinunetr")
TINY_UNET = {"patch_size": [32, 32, 32], "network": {"channels": [4, 8, 16], "strides": [2, 2],
                                                      "num_res_units": 1}}


def plugin(name: str):
    return get_registry().get(name, "segment").load()


def brain_tensor(brain_mr) -> MetaTensor:
    """The real brain MR (LAS, 0.78×0.78×6.5 mm) as the runner hands it to the plugin."""
    from mitk.io.reader import load_image
    from mitk.runner.tensors import to_meta_tensor

    return to_meta_tensor(load_image(brain_mr))


def test_registration_is_cheap_and_complete():
    code = ("import sys, mitk_builtin.segment_networks; print('torch' in sys.modules, 'monai' in sys.modules); "
            "from mitk.plugin_manager import get_registry; r = get_registry(); "
            "print([r.get(n).task.value for n in ('unet', 'segresnet', 'swinunetr')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    heavy, tasks = done.stdout.splitlines()
    assert tasks == "['segment', 'segment', 'segment']"
    assert heavy == "False False"


@pytest.mark.parametrize("name", NETWORKS)
def test_default_config_is_json_and_complete(name):
    config = plugin(name).resolve_config()
    assert json.loads(json.dumps(config)) == config
    for key in ("labels", "orientation", "spacing", "intensity", "patch_size", "network", "sw_batch_size",
                "overlap", "mode", "largest_component", "in_channels"):
        assert key in config
    assert config["overlap"] == 0.25
    assert plugin(name).labels(config) == {0: "background", 1: "foreground"}


def test_labels_replace_defaults_and_are_validated():
    unet = plugin("unet")
    config = unet.resolve_config({"labels": {0: "background", 1: "grey", 2: "white"}})
    assert config["labels"] == {"0": "background", "1": "grey", "2": "white"}
    # a checkpoint's JSON (string keys) followed by user names (a list) gives the user's names, no union
    config = unet.resolve_config(config, {"labels": ["bg", "brain"]})
    assert unet.labels(config) == {0: "bg", 1: "brain"}
    with pytest.raises(PluginError, match=r"numbered 0\.\.N-1"):
        unet.resolve_config({"labels": {0: "background", 2: "tumour"}})


@pytest.mark.parametrize(("name", "patch"), [("unet", [48, 48, 40]), ("segresnet", [36, 36, 36]),
                                             ("swinunetr", [32, 32, 32])])
def test_patch_size_must_fit_the_network(name, patch):
    instance = plugin(name)
    with pytest.raises(PluginError, match="patch_size"):
        instance.network(instance.resolve_config({"patch_size": patch}))


def test_inference_transforms_reorient_and_resample_without_cropping(brain_mr):
    unet = plugin("unet")
    image = brain_tensor(brain_mr)
    config = unet.resolve_config({"spacing": [2.0, 2.0, 2.0]})
    out = unet.inference_transforms(config)({"image": image})["image"]
    affine = np.asarray(out.affine, dtype=float)
    assert out.shape[0] == 1
    assert orientation_code(affine) == "RAS"
    assert np.allclose(voxel_spacing(affine), 2.0)
    # no crop: the span between the outer voxel centres is kept, to within one voxel of the new grid
    extent_in = (np.array(image.shape[1:]) - 1) * np.array(voxel_spacing(np.asarray(image.affine)))
    extent_out = (np.array(out.shape[1:]) - 1) * 2.0
    assert np.all(np.abs(np.sort(extent_in) - np.sort(extent_out)) <= 2.0 + 1e-6)
    # MR z-score over non-zero voxels
    values = out[out != 0]
    assert abs(float(values.mean())) < 0.05 and abs(float(values.std()) - 1) < 0.05


def test_ct_window_scales_to_unit_range(lung_ct):
    unet = plugin("unet")
    config = unet.resolve_config({"spacing": None, "orientation": "keep",
                                  "intensity": {"mode": "ct", "a_min": -1000, "a_max": 400}})
    out = unet.inference_transforms(config)({"image": brain_tensor(lung_ct)})["image"]
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    with pytest.raises(PluginError, match=r"intensity\.mode"):
        unet.inference_transforms(unet.resolve_config({"intensity": {"mode": "pet"}}))


def test_mr_zscore_matches_monai_normalize_intensity(brain_mr, mni_t1_2mm):
    """Same numbers as NormalizeIntensityd(nonzero=True, channel_wise=True) on real MR, in the source's order."""
    from monai.transforms import NormalizeIntensityd

    from mitk.io.reader import load_image
    from mitk.runner.tensors import to_meta_tensor

    for path in (brain_mr, mni_t1_2mm):
        tensor = to_meta_tensor(load_image(path))
        two = MetaTensor(torch.cat([tensor, tensor * 3 + 7 * (tensor != 0)]), affine=tensor.affine)
        expected = NormalizeIntensityd("image", nonzero=True, channel_wise=True)({"image": two.clone()})["image"]
        config = plugin("unet").resolve_config({"spacing": None, "orientation": "keep", "intensity": {"mode": "mr"}})
        got = plugin("unet").inference_transforms(config)({"image": two.clone()})["image"]
        assert isinstance(got, MetaTensor) and got.dtype == torch.float32
        torch.testing.assert_close(got.affine, two.affine)
        assert torch.equal(got == 0, expected == 0)  # background stays exactly zero
        torch.testing.assert_close(got.as_tensor(), expected.as_tensor(), rtol=1e-4, atol=1e-4)
        nonzero = got[0][got[0] != 0]
        assert abs(float(nonzero.mean())) < 1e-4 and abs(float(nonzero.std(unbiased=False)) - 1) < 1e-4


def test_mr_zscore_edge_cases():
    from mitk_builtin._intensity import ZScoreNonzerod

    image = torch.zeros(3, 4, 5, 6)
    image[1] = 5.0  # constant: deviation 0 divides by 1, so it centres to 0
    image[2, 1:3, 1:3, 1:3] = torch.arange(8.0).reshape(2, 2, 2) + 1
    out = ZScoreNonzerod("image")({"image": image.to(torch.int16)})["image"]
    assert out.dtype == torch.float32
    assert torch.count_nonzero(out[0]) == 0 and torch.count_nonzero(out[1]) == 0
    values = out[2, 1:3, 1:3, 1:3].flatten()
    expected = (torch.arange(8.0) + 1 - 4.5) / torch.arange(8.0).std(unbiased=False)
    torch.testing.assert_close(values, expected)
    assert torch.count_nonzero(out[2]) == 8


def test_training_transforms_give_patches_on_the_label_grid(brain_mr, brain_mr_label):
    unet = plugin("unet")
    config = unet.resolve_config(TINY_UNET, {"spacing": [2.0, 2.0, 2.0], "samples_per_case": 3,
                                             "positive": 1.0, "negative": 0.0})
    transform = unet.training_transforms(config)
    transform.set_random_state(seed=0)
    samples = transform({"image": brain_tensor(brain_mr), "label": brain_tensor(brain_mr_label)})
    assert len(samples) == 3
    for sample in samples:
        assert tuple(sample["image"].shape) == (1, 32, 32, 32) == tuple(sample["label"].shape)
        assert set(np.unique(sample["label"].numpy())) <= {0.0, 1.0}
        assert float(sample["label"].sum()) > 0  # positive-only sampling centres patches on the tumour


@pytest.mark.parametrize(("name", "overrides", "side"), [
    ("unet", TINY_UNET, 32),
    ("segresnet", {"patch_size": [32, 32, 32], "network": {"init_filters": 8}}, 32),
    ("swinunetr", {"patch_size": [64, 64, 64], "network": {"feature_size": 12, "depths": [1, 1, 1, 1]}}, 64),
])
def test_networks_build_and_run(name, overrides, side):
    instance = plugin(name)
    config = instance.resolve_config(overrides, {"labels": ["background", "a", "b"]})
    network = instance.network(config).eval()
    with torch.no_grad():
        logits = network(torch.randn(1, 1, side, side, side, generator=torch.Generator().manual_seed(0)))
    assert tuple(logits.shape) == (1, 3, side, side, side)
    assert torch.isfinite(logits).all()


def test_sliding_window_handles_a_volume_smaller_than_the_patch():
    unet = plugin("unet")
    config = unet.resolve_config(TINY_UNET, {"sw_batch_size": 2})
    network = unet.network(config).eval()
    with torch.no_grad():
        logits = unet.inferer(config)(torch.randn(1, 1, 20, 40, 33), network)
    assert tuple(logits.shape) == (1, 2, 20, 40, 33)


def test_largest_component_keeps_one_blob_per_label():
    unet = plugin("unet")
    assert unet.postprocess(unet.resolve_config()) is None
    config = unet.resolve_config({"labels": ["background", "a", "b"], "largest_component": [1]})
    label_map = torch.zeros(1, 10, 10, 10, dtype=torch.long)
    label_map[0, 1:4, 1:4, 1:4] = 1
    label_map[0, 7:9, 7:9, 7:9] = 1  # smaller blob of 1: removed
    label_map[0, 5, 5, 5] = 2  # label 2 not listed: kept
    label_map[0, 8, 1, 1] = 2
    cleaned = unet.postprocess(config)(label_map)
    assert int((cleaned == 1).sum()) == 27 and int((cleaned == 2).sum()) == 2
    with pytest.raises(PluginError, match="not foreground labels"):
        unet.postprocess(unet.resolve_config({"largest_component": [3]}))


def test_loss_and_metrics_are_monai():
    from monai.losses import DiceCELoss
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric

    unet = plugin("unet")
    config = unet.resolve_config({"labels": ["background", "a", "b"], "surface_tolerance_mm": 1.5})
    assert isinstance(unet.loss(config), DiceCELoss)
    metrics = unet.metrics(config)
    assert isinstance(metrics["dice"], DiceMetric) and not metrics["dice"].include_background
    assert isinstance(metrics["hd95"], HausdorffDistanceMetric) and metrics["hd95"].percentile == 95
    assert isinstance(metrics["surface_dice"], SurfaceDiceMetric)
    assert metrics["surface_dice"].class_thresholds == [1.5, 1.5]


def test_checkpoint_for_another_plugin_or_task_is_refused(tmp_path):
    unet = plugin("unet")
    config = unet.resolve_config(TINY_UNET)
    path = save_checkpoint(tmp_path / "unet.safetensors", unet.network(config).state_dict(), task="segment",
                           plugin="unet", plugin_version="0.1.0", config=config)
    model = load_model("segment", None, path, device="cpu")
    assert model.name == "unet" and model.config["network"]["channels"] == [4, 8, 16]
    with pytest.raises(CheckpointError, match="trained with plugin 'unet', not 'segresnet'"):
        load_model("segment", "segresnet", path, device="cpu")
    with pytest.raises(CheckpointError, match="for the segment task, not classify"):
        load_model("classify", None, path, device="cpu")
    wider = unet.resolve_config(TINY_UNET, {"network": {"channels": [8, 16, 32]}})
    other = save_checkpoint(tmp_path / "wider.safetensors", unet.network(wider).state_dict(), task="segment",
                            plugin="unet", plugin_version="0.1.0", config=wider)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model("segment", None, other, overrides={"network": {"channels": [4, 8, 16]}}, device="cpu")
