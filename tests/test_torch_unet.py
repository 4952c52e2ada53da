"""The MONAI-free inference path of the built-in ``unet`` (and ``segresnet``) gives MONAI's answer, bit for bit.

:mod:`mitk.runner.unet_torch` and :mod:`mitk.runner.segresnet_torch` (the networks),
:mod:`mitk.runner.sliding_window` (the inferer) and :mod:`mitk_builtin._segment_torch` (orientation and
intensity) are each compared with MONAI's own piece on the same weights and input — UNet configurations of
channels, strides, residual units 0/1/2, instance/batch/group norm, kernels 3/5, 2-D and 3-D; sliding windows over
odd sizes, images smaller than the window, overlaps, batch sizes, gaussian and constant blending; real MR and CT
volumes in LAS/LPS — and end to end through ``load_model`` and the runner against ``MITK_TORCH_INFERENCE=0``
(MONAI's pieces). ``mitk segment --plugin unet`` must then run without importing MONAI; settings the lean path
does not reproduce fall back to MONAI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mitk.runner.cpu_kernels import apply_cpu_kernels, rewritten
from mitk.runner.sliding_window import SlidingWindow
from mitk.runner.unet_torch import TorchUNet, torch_unet

pytestmark = pytest.mark.usefixtures("single_threaded_torch")

UNETS = [  # spatial_dims, channels, strides, num_res_units, norm, kernel
    (3, (4, 8, 16), (2, 2), 2, "instance", 3),
    (3, (3, 6, 12, 12), (2, 2, 1), 0, "batch", 3),
    (3, (4, 8), (2,), 1, ("group", {"num_groups": 2}), 3),
    (2, (4, 8, 16), (2, 2), 2, "INSTANCE", 5),
    (2, (2, 4, 8), (2, 1), 0, ("instance", {"affine": True}), 3),
]


def monai_and_torch(dims: int, channels: tuple[int, ...], strides: tuple[int, ...], units: int, norm: Any,
                    kernel: int, out_channels: int = 4) -> tuple[torch.nn.Module, torch.nn.Module]:
    """MONAI's UNet with random weights (and batch-norm statistics), and the torch one loaded from its state."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    reference = UNet(dims, 2, out_channels, channels, strides, kernel_size=kernel, up_kernel_size=kernel,
                     num_res_units=units, norm=norm, dropout=0.1)
    with torch.no_grad():
        for name, value in reference.state_dict().items():
            if value.is_floating_point():  # non-trivial affine norms and running statistics too
                value.copy_(torch.rand_like(value) + 0.5 if "running_var" in name or "N.weight" in name
                            else torch.randn_like(value) * 0.3)
    lean = torch_unet(dims, 2, out_channels, channels, strides, kernel_size=kernel, up_kernel_size=kernel,
                      num_res_units=units, norm=norm, dropout=0.1)
    assert isinstance(lean, TorchUNet)
    lean.load_state_dict(reference.state_dict(), strict=True)
    return reference.eval(), lean.eval()


def structure(network: torch.nn.Module) -> list[tuple[str, str]]:
    """Every module's name and, for leaf layers (all torch's own), its repr (settings included)."""
    return [(name, "" if list(module.children()) else repr(module)) for name, module in network.named_modules()]


@pytest.mark.parametrize("case", UNETS, ids=lambda c: f"{c[0]}d-{len(c[1])}levels-res{c[3]}-{c[4]}")
def test_torch_unet_is_monai_unet_bit_for_bit(case: tuple[Any, ...]) -> None:
    reference, lean = monai_and_torch(*case)
    assert list(lean.state_dict()) == list(reference.state_dict())
    assert structure(lean) == structure(reference)
    side = 2 * int(np.prod(case[2]))
    x = torch.randn(2, 2, *([side] * case[0]))
    with torch.inference_mode():
        expected = reference(x)
        assert torch.equal(lean(x), expected)
        apply_cpu_kernels(reference)
        apply_cpu_kernels(lean)
        assert {n: k.kind for n, k in rewritten(lean).items()} == {n: k.kind for n, k in rewritten(reference).items()}
        assert torch.equal(lean(x), reference(x))


@pytest.mark.parametrize("case", [(3, 8, (1, 2), (1,), None), (3, 16, (1, 2, 2), (1, 2), 0.2),
                                  (2, 8, (1, 1, 1), (2, 1), None)], ids=lambda c: f"{c[0]}d-{c[1]}-{c[2]}")
def test_torch_segresnet_is_monai_segresnet_bit_for_bit(case: tuple[Any, ...]) -> None:
    from monai.networks.nets import SegResNet

    from mitk.runner.segresnet_torch import TorchSegResNet

    dims, filters, down, up, dropout = case
    torch.manual_seed(0)
    reference = SegResNet(spatial_dims=dims, init_filters=filters, in_channels=2, out_channels=3, blocks_down=down,
                          blocks_up=up, dropout_prob=dropout).eval()
    with torch.no_grad():
        for value in reference.state_dict().values():
            value.copy_(torch.randn_like(value) * 0.3)
    lean = TorchSegResNet(dims, filters, 2, 3, dropout, 8, down, up).eval()
    lean.load_state_dict(reference.state_dict(), strict=True)
    assert structure(lean) == structure(reference)
    x = torch.randn(1, 2, *([8 * 2 ** (len(down) - 1)] * dims))
    with torch.inference_mode():
        assert torch.equal(lean(x), reference(x))
        apply_cpu_kernels(reference)
        apply_cpu_kernels(lean)
        assert sorted(rewritten(lean)) == sorted(rewritten(reference))
        assert torch.equal(lean(x), reference(x))


def test_settings_it_does_not_reproduce_build_none() -> None:
    base = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": (4, 8), "strides": (2,)}
    assert torch_unet(**base) is not None
    for other in ({"act": "relu"}, {"adn_ordering": "ADN"}, {"norm": "layer"}, {"norm": ("group", {})},
                  {"kernel_size": 4}, {"kernel_size": (3, 3)}, {"strides": (2, 2)}, {"dropout": (0.1, 0.2)}):
        assert torch_unet(**{**base, **other}) is None, other


WINDOWS = [  # image shape, roi, sw_batch_size, overlap, mode
    ((1, 2, 37, 29, 19), (16, 16, 8), 2, 0.25, "gaussian"),
    ((2, 2, 21, 9, 33), (16, 16, 16), 3, 0.5, "constant"),
    ((1, 2, 12, 40, 16), (16, 16, 16), 1, 0.0, "gaussian"),
    ((1, 2, 45, 31), (16, 16), 4, 0.25, "gaussian"),
    ((1, 2, 7, 50), (16, 16), 2, 0.7, "constant"),
]


@pytest.mark.parametrize("case", WINDOWS, ids=lambda c: f"{c[0][2:]}-{c[1]}-b{c[2]}-o{c[3]}-{c[4]}")
def test_sliding_window_is_monai_bit_for_bit(case: tuple[Any, ...]) -> None:
    from monai.inferers import SlidingWindowInferer

    shape, roi, batch, overlap, mode = case
    _, network = monai_and_torch(len(roi), (4, 8), (2,), 1, "instance", 3)
    x = torch.randn(*shape)
    with torch.inference_mode():
        expected = SlidingWindowInferer(list(roi), batch, overlap, mode=mode)(x, network)
        got = SlidingWindow(roi, batch, overlap, mode)(x, network)
    assert type(got) is torch.Tensor and got.shape == expected.shape == (shape[0], 4, *shape[2:])
    assert torch.equal(got, expected)


def test_sliding_window_hands_metatensors_and_odd_outputs_to_monai() -> None:
    from monai.data import MetaTensor

    inferer = SlidingWindow((8, 8), 2, 0.25, "gaussian")
    meta = MetaTensor(torch.randn(1, 1, 20, 12), affine=torch.diag(torch.tensor([2.0, 3.0, 1.0])))
    with torch.inference_mode():
        out = inferer(meta, lambda window: window * 2)
        assert isinstance(out, MetaTensor) and torch.equal(out.affine, meta.affine)  # MONAI's, with its metadata
        halved = inferer(torch.randn(1, 1, 20, 12), lambda window: window[:, :, ::2, ::2])  # MONAI zooms it
    assert halved.shape == (1, 1, 10, 6)


def lean_and_monai_preprocessing(config: dict[str, Any]) -> tuple[Any, Any]:
    from monai.transforms import Compose

    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    resolved = plugin.resolve_config(config)
    lean = plugin.inference_transforms(resolved)
    assert getattr(lean, "takes_affine_tensor", False)
    return lean, Compose(plugin._preprocessing(resolved, ("image",)))


@pytest.mark.parametrize("intensity", [{"mode": "mr"}, {"mode": "ct", "a_min": -200, "a_max": 300},
                                       {"mode": "ct", "a_min": -1000, "a_max": 1000, "b_min": -1.5, "b_max": 2.0},
                                       {"mode": "none"}], ids=lambda i: str(i["mode"]))
@pytest.mark.parametrize("orientation", ["RAS", "LPS", "SPL", "keep"])
def test_preprocessing_is_monai_bit_for_bit(brain_mr: Path, lung_ct: Path, intensity: dict[str, Any],
                                            orientation: str) -> None:
    from mitk.io.reader import load_image
    from mitk.runner.tensors import to_affine_tensor, to_meta_tensor

    lean, monai = lean_and_monai_preprocessing({"spacing": "keep", "orientation": orientation,
                                                "intensity": intensity})
    for path in (brain_mr, lung_ct):
        image = load_image(path)
        got = lean({"image": to_affine_tensor(image)})["image"]
        expected = monai({"image": to_meta_tensor(image)})["image"]
        assert got.tensor.shape == expected.shape and got.tensor.stride() == expected.stride()
        assert torch.equal(got.tensor, expected.as_tensor())
        np.testing.assert_allclose(got.affine, expected.affine.numpy(), atol=1e-9)
        again = lean({"image": to_meta_tensor(image)})["image"]  # a MetaTensor: MONAI's transforms run
        assert torch.equal(again.as_tensor(), expected.as_tensor()) and hasattr(again, "meta")


def test_spacing_or_unknown_codes_keep_monai_transforms() -> None:
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    for settings in ({"spacing": [2, 2, 2]}, {"spacing": "keep", "orientation": "RA"},
                     {"spacing": "keep", "orientation": "RAX"}, {"spacing": "keep", "orientation": "SIL"}):
        transforms = plugin.inference_transforms(plugin.resolve_config(settings))
        assert not getattr(transforms, "takes_affine_tensor", False), settings


SMALL = {"spacing": "keep", "orientation": "RAS", "patch_size": [32, 32, 16], "overlap": 0.25, "mode": "gaussian",
         "network": {"channels": [4, 8, 16], "strides": [2, 2]}}


@pytest.fixture(scope="module")
def small_unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small saved ``unet`` checkpoint (random weights, a non-zero PReLU/bias everywhere)."""
    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    config = plugin.resolve_config(SMALL)
    torch.manual_seed(1)
    network = plugin.network(config)
    path = tmp_path_factory.mktemp("unet") / "unet.safetensors"
    return save_checkpoint(path, network.state_dict(), task="segment", plugin="unet", plugin_version=None,
                           config=config)


@pytest.mark.parametrize("settings", [{"intensity.mode": "mr"}, {"intensity.mode": "ct", "mode": "constant",
                                                                 "overlap": 0.25}], ids=["mr-gaussian", "ct-constant"])
def test_runner_matches_monai_pieces_end_to_end(small_unet: Path, brain_mr: Path, lung_ct: Path,
                                                monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any]) -> None:
    from monai.networks.nets import UNet

    from mitk.io.reader import load_image
    from mitk.runner.model import load_model, nested_settings
    from mitk.tasks.segment.runner import SegmentationRunner

    path = brain_mr if settings["intensity.mode"] == "mr" else lung_ct
    image = load_image(path)
    results = {}
    for lean in (True, False):
        monkeypatch.setenv("MITK_TORCH_INFERENCE", "1" if lean else "0")
        model = load_model("segment", "unet", small_unet, nested_settings(settings), "cpu")
        assert isinstance(model.network, TorchUNet if lean else UNet)
        assert rewritten(model.network)  # the CPU kernel rewrites apply to both
        runner = SegmentationRunner(model, probabilities=True)
        assert getattr(runner.preprocess, "takes_affine_tensor", False) is lean
        assert isinstance(runner.inferer, SlidingWindow) is lean
        results[lean] = runner(image)
    assert np.array_equal(results[True].label_map, results[False].label_map)
    assert results[True].label_map.any() and not results[True].label_map.all()
    assert results[True].probabilities is not None and results[False].probabilities is not None
    assert np.array_equal(results[True].probabilities, results[False].probabilities)


PROBE = """
import json, sys
from mitk.cli import main
code = 0
try:
    main(sys.argv[2:])
except SystemExit as done:
    code = done.code
with open(sys.argv[1], "w") as report:
    json.dump({"code": code, "monai": sorted(m for m in sys.modules if m.split(".")[0] == "monai"),
               "torch": "torch" in sys.modules}, report)
"""


def segment_in_a_fresh_process(tmp_path: Path, *args: str) -> dict[str, Any]:
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-c", PROBE, str(report), "segment", *args], capture_output=True,
                            text=True, timeout=300)
    assert report.exists(), result.stderr
    document: dict[str, Any] = json.loads(report.read_text())
    assert document["code"] in (0, None), result.stderr
    return document


def test_mitk_segment_with_unet_does_not_import_monai(tmp_path: Path, small_unet: Path, anatomical_t1: Path) -> None:
    output = tmp_path / "seg.nii.gz"
    document = segment_in_a_fresh_process(tmp_path, str(anatomical_t1), "--plugin", "unet", "--weights",
                                          str(small_unet), "--device", "cpu", "-o", str(output))
    assert document["torch"] and document["monai"] == []
    assert output.is_file()
    # a spacing change is not on the lean path: MONAI's transforms run, so the probe does see MONAI
    document = segment_in_a_fresh_process(tmp_path, str(anatomical_t1), "--plugin", "unet", "--weights",
                                          str(small_unet), "--device", "cpu", "--set", "spacing=[3,3,3]", "-o",
                                          str(tmp_path / "spaced.nii.gz"))
    assert "monai" in document["monai"]
