"""CPU kernel rewrites compute what the layers they replace compute, and only where they apply."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mitk.runner.cpu_kernels import ChannelsLastConv, PhaseConvTranspose, PointwiseConv, apply_cpu_kernels

TRANSPOSED = [nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d]


@pytest.mark.parametrize(("kernel", "stride", "padding", "output_padding", "size"), [
    (3, 2, 1, 1, (7, 8, 9)),             # MONAI UNet's up-sampling layer, odd and even sides
    (2, 2, 0, 0, (5, 6, 4)),             # UNETR/SwinUNETR style: a pure pixel shuffle
    (3, 1, 1, 0, (6, 5, 7)),             # stride 1
    (4, 2, 1, 0, (7, 7, 3)),             # kernel wider than two phases
    (1, 2, 0, 1, (5, 4, 3)),             # kernel narrower than the stride: some phases are bias only
    (5, 3, 2, 2, (4, 5, 6)),
    ((3, 2, 1), (2, 1, 2), (1, 0, 0), (1, 0, 1), (4, 5, 6)),  # different per axis
])
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_phase_transposed_convolution_matches_torch(kernel, stride, padding, output_padding, size, dims, bias):
    def per_dim(value):
        return value[:dims] if isinstance(value, tuple) else value

    torch.manual_seed(dims)
    layer = TRANSPOSED[dims - 1](5, 3, per_dim(kernel), per_dim(stride), per_dim(padding),
                                 per_dim(output_padding), bias=bias).eval()
    x = torch.randn(2, 5, *size[:dims])
    with torch.no_grad():
        expected, got = layer(x), PhaseConvTranspose(layer)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # unbatched input, as torch's layers accept
        torch.testing.assert_close(PhaseConvTranspose(layer)(x[0]), expected[0], rtol=1e-5, atol=1e-5)


def test_channels_last_convolution_matches_and_keeps_the_callers_memory_order():
    torch.manual_seed(0)
    layer = nn.Conv3d(2, 2, 3, padding=1).eval()
    reference = copy.deepcopy(layer)
    x = torch.randn(2, 2, 9, 10, 11)
    with torch.no_grad():
        got = ChannelsLastConv(layer)(x)
        expected = reference(x)
    assert got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_head_matches_torch(dims, bias):
    torch.manual_seed(dims)
    layer = [nn.Conv1d, nn.Conv2d, nn.Conv3d][dims - 1](16, 3, 1, bias=bias).eval()
    x = torch.randn(2, 16, *(7, 6, 5)[:dims])
    with torch.no_grad():
        expected, rewritten = layer(x), PointwiseConv(layer)
        torch.testing.assert_close(rewritten(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rewritten(x[0]), expected[0], rtol=1e-5, atol=1e-5)
        if dims > 1:  # a non-contiguous input
            strided = x.transpose(-1, -2)
            torch.testing.assert_close(rewritten(strided), layer(strided), rtol=1e-5, atol=1e-5)


def test_segresnet_head_rewritten_gives_the_same_logits():
    from monai.networks.nets import SegResNet

    torch.manual_seed(0)
    network = SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8).eval()
    fast = copy.deepcopy(network)
    assert apply_cpu_kernels(fast) == 1
    assert any(isinstance(m, PointwiseConv) for m in fast.modules())
    x = torch.randn(1, 1, 32, 40, 24)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), network(x), rtol=1e-4, atol=1e-4)


def unet() -> nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2),
                num_res_units=2, norm="instance").eval()


def test_unet_rewritten_gives_the_same_logits_and_labels():
    network = unet()
    fast = copy.deepcopy(network)
    assert apply_cpu_kernels(fast) == 2  # the top up-sampling layer and the 2→2 convolution after it
    kinds = {type(m) for m in fast.modules()}
    assert {PhaseConvTranspose, ChannelsLastConv} <= kinds
    x = torch.randn(2, 1, 40, 48, 36)
    with torch.inference_mode():
        expected, got = network(x), fast(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert apply_cpu_kernels(fast) == 0  # idempotent: wrapped layers are not wrapped again


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_wide_layers_grouped_layers_and_script_modules_are_left_alone():
    network = nn.Sequential(nn.ConvTranspose3d(8, 16, 3, 2, 1, 1), nn.Conv3d(16, 8, 1), nn.Conv3d(16, 2, 1, stride=2),
                            nn.Conv3d(4, 4, 3, groups=2), nn.ConvTranspose3d(4, 2, 3, 2, 1, 1, dilation=2))
    assert apply_cpu_kernels(network) == 0
    scripted = torch.jit.script(nn.Sequential(nn.ConvTranspose3d(4, 2, 3, 2, 1, 1)))
    assert apply_cpu_kernels(scripted) == 0


def test_environment_switch_turns_the_rewrites_off(monkeypatch):
    monkeypatch.setenv("MITK_CPU_KERNELS", "0")
    network = unet()
    assert apply_cpu_kernels(network) == 0
    assert not any(isinstance(m, (PhaseConvTranspose, ChannelsLastConv)) for m in network.modules())


def test_load_model_uses_the_rewrites_on_cpu_with_a_checkpoint(tmp_path):
    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry
    from mitk.runner.model import load_model

    plugin = get_registry().get("unet", "segment").load()
    config = plugin.resolve_config({"network": {"channels": [8, 16, 32], "strides": [2, 2]},
                                    "patch_size": [32, 32, 32]})
    assert config["network"]["channels"] == [8, 16, 32]
    network = plugin.network(config)
    path = save_checkpoint(tmp_path / "unet.safetensors", network.state_dict(), task="segment", plugin="unet",
                           plugin_version=None, config=config)
    model = load_model("segment", None, path, None, "cpu")
    assert model.network is not None
    assert any(isinstance(m, PhaseConvTranspose) for m in model.network.modules())
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model.network(x), network.eval()(x), rtol=1e-4, atol=1e-4)
