"""CPU kernel rewrites compute what the layers they replace compute, and only where they apply.

Every comparison is rewritten network vs an untouched copy, within float32 rounding; the awkward cases (subclasses,
hooks, weight norm, later weight changes, ``output_size``, state dicts) are the ones where an ``isinstance`` module
swap used to give different outputs, crash or rename keys.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from mitk.runner.cpu_kernels import (
    CHANNELS_LAST,
    MAX_POOL,
    ONEDNN,
    PHASE,
    POINTWISE,
    apply_cpu_kernels,
    rewritten,
)

TRANSPOSED = [nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d]
CLOSE = {"rtol": 1e-5, "atol": 1e-5}


def small() -> nn.Sequential:
    """One layer of each kind: a 8→2 stride-2 transposed convolution, a 2→2 3×3×3 convolution, a 1×1×1 head."""
    torch.manual_seed(0)
    return nn.Sequential(nn.ConvTranspose3d(8, 2, 3, 2, 1, 1), nn.Conv3d(2, 2, 3, padding=1),
                         nn.Conv3d(2, 3, 1)).eval()


def small_input() -> torch.Tensor:
    return torch.randn(2, 8, 5, 6, 7, generator=torch.Generator().manual_seed(1))


def rewrite_copy(network: nn.Module) -> tuple[nn.Module, int]:
    fast = copy.deepcopy(network)
    return fast, apply_cpu_kernels(fast)


def assert_same(fast: nn.Module, reference: nn.Module, *args: object, **kwargs: object) -> None:
    with torch.no_grad():
        expected, got = reference(*args, **kwargs), fast(*args, **kwargs)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, **CLOSE)


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
    fast, count = rewrite_copy(layer)
    assert count == 1 and rewritten(fast)[""].kind == PHASE
    x = torch.randn(2, 5, *size[:dims])
    assert_same(fast, layer, x)
    assert_same(fast, layer, x[0])  # unbatched input, as torch's layers accept


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_transposed_convolution_accepts_output_size(dims):
    torch.manual_seed(dims)
    layer = nn.Sequential(TRANSPOSED[dims - 1](5, 2, 3, 2, 1)).eval()  # output_size picks output_padding 0 or 1
    fast, count = rewrite_copy(layer)
    assert count == 1
    layer, fast = layer[0], fast[0]
    x = torch.randn(2, 5, *(4, 5, 3)[:dims])
    larger = [2 * n for n in x.shape[2:]]  # (n - 1) * 2 - 2 + 3 + 1
    assert_same(fast, layer, x, output_size=larger)
    assert_same(fast, layer, x, output_size=[2, 2, *larger])
    assert_same(fast, layer, x, [2 * n - 1 for n in x.shape[2:]])  # positionally, the default size
    assert_same(fast, layer, x[0], output_size=[2, *larger])  # unbatched, with the channel count
    with pytest.raises(ValueError, match="requested an output size"):
        fast(x, output_size=[n + 9 for n in larger])


def test_channels_last_convolution_matches_and_keeps_the_callers_memory_order():
    torch.manual_seed(0)
    layer = nn.Conv3d(2, 2, 3, padding=1).eval()
    fast, count = rewrite_copy(layer)
    assert count == 1 and rewritten(fast)[""].kind == CHANNELS_LAST
    x = torch.randn(2, 2, 9, 10, 11)
    with torch.no_grad():
        got = fast(x)
    assert got.is_contiguous()
    assert fast.weight.is_contiguous()  # the layer's own weight is not re-laid out
    assert_same(fast, layer, x)
    assert_same(fast, layer, x[0])



@pytest.mark.parametrize(("channels", "kernel", "stride", "padding"), [
    ((2, 2), 3, 1, 1),      # MONAI UNet's last 2→2 convolution
    ((1, 3), 3, 2, 0),      # strided, no padding
    ((4, 1), (3, 1, 2), 1, (1, 0, 1)),  # per-axis kernel and padding
])
@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_few_channel_3d_convolution_runs_onednn_in_channels_last_order(monkeypatch, channels, kernel, stride,
                                                                        padding):
    """torch sends a batch-1 few-channel volume to its naive kernel (ten times slower); the rewrite calls oneDNN
    on channels-last copies, and the caller still gets torch's values in its own order."""
    torch.manual_seed(0)
    layer = nn.Conv3d(*channels, kernel, stride, padding).eval()
    fast, count = rewrite_copy(layer)
    assert count == 1 and rewritten(fast)[""].kind == CHANNELS_LAST
    calls = []
    real = torch.mkldnn_convolution
    monkeypatch.setattr(torch, "mkldnn_convolution", lambda *args: calls.append(args) or real(*args))
    x = torch.randn(2, channels[0], 9, 10, 11)
    for sample in (x, x[:1], x[0], x.transpose(-1, -2), x.contiguous(memory_format=torch.channels_last_3d)):
        assert_same(fast, layer, sample)
    assert len(calls) == 5 and all(args[0].is_contiguous(memory_format=torch.channels_last_3d) for args in calls)
    with torch.no_grad():
        assert fast(x).is_contiguous() and len(calls) == 6
    with torch.backends.mkldnn.flags(enabled=False):  # oneDNN off: torch's channels-last kernel, as before
        assert_same(fast, layer, x)
    with torch.no_grad():  # float64: no oneDNN kernel, torch's runs
        assert torch.equal(copy.deepcopy(fast).double()(x.double()), copy.deepcopy(layer).double()(x.double()))
    assert len(calls) == 6
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts torch's kernel: torch's
        assert fast(x).dtype == layer(x).dtype == torch.bfloat16
    with torch.autograd.forward_ad.dual_level():  # forward-mode AD: oneDNN has none, torch's kernel runs
        dual = torch.autograd.forward_ad.make_dual(x, torch.ones_like(x))
        got, expected = (torch.autograd.forward_ad.unpack_dual(m(dual)).tangent for m in (fast, layer))
        torch.testing.assert_close(got, expected, **CLOSE)
    with pytest.raises(RuntimeError, match="Expected 4D"):  # a wrong rank gets torch's own message
        fast(x[0, 0])
    assert len(calls) == 6

@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_head_matches_torch(dims, bias):
    torch.manual_seed(dims)
    layer = [nn.Conv1d, nn.Conv2d, nn.Conv3d][dims - 1](16, 3, 1, bias=bias).eval()
    fast, count = rewrite_copy(layer)
    assert count == 1 and rewritten(fast)[""].kind == POINTWISE
    x = torch.randn(2, 16, *(7, 6, 5)[:dims])
    assert_same(fast, layer, x)
    assert_same(fast, layer, x[0])
    if dims > 1:  # a non-contiguous input
        assert_same(fast, layer, x.transpose(-1, -2))


def test_the_small_network_gets_one_rewrite_of_each_kind():
    network = small()
    fast, count = rewrite_copy(network)
    assert count == 3
    assert {name: kernel.kind for name, kernel in rewritten(fast).items()} == {
        "0": PHASE, "1": CHANNELS_LAST, "2": POINTWISE}
    assert_same(fast, network, small_input())


class WeightStandardisedConv3d(nn.Conv3d):
    """A third-party convolution: each filter standardised to zero mean, unit variance before use."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        mean = weight.mean(dim=(1, 2, 3, 4), keepdim=True)
        std = weight.std(dim=(1, 2, 3, 4), keepdim=True) + 1e-5
        return self._conv_forward(input, (weight - mean) / std, self.bias)


def test_a_convolution_subclass_is_left_alone():
    torch.manual_seed(0)
    network = nn.Sequential(WeightStandardisedConv3d(2, 2, 3, padding=1), WeightStandardisedConv3d(2, 3, 1)).eval()
    fast, count = rewrite_copy(network)
    assert_same(fast, network, torch.randn(1, 2, 6, 5, 4))
    assert count == 0


def test_a_layer_with_a_forward_hook_is_left_alone():
    network = small()
    network[0].register_forward_hook(lambda module, args, output: output * 2)
    fast, count = rewrite_copy(network)
    assert_same(fast, network, small_input())
    assert count == 2


def test_a_layer_with_a_forward_pre_hook_is_left_alone():
    network = small()
    network[2].register_forward_pre_hook(lambda module, args: (args[0] * 3,))
    fast, count = rewrite_copy(network)
    assert_same(fast, network, small_input())
    assert count == 2


def test_hooks_added_after_the_rewrite_still_run():
    network = small()
    fast = copy.deepcopy(network)
    layers = list(fast)  # references held from before the rewrite, as a caller's hook code would
    assert apply_cpu_kernels(fast) == 3
    for original, kept in zip(network, layers, strict=True):
        for target in (original, kept):  # the same hooks on the untouched layer and on the rewritten one
            target.register_forward_pre_hook(lambda module, args: (args[0] + 0.5,))
            target.register_forward_hook(lambda module, args, output: output * 2)
    assert_same(fast, network, small_input())


@contextmanager
def global_hooks(pre: Callable[..., object], post: Callable[..., object]) -> Iterator[None]:
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("registered", ["before", "after"])
def test_global_module_hooks_see_the_same_layers(registered):
    def pre(module, args):
        return (args[0] * 0.5,) if isinstance(module, nn.ConvTranspose3d) else None

    def post(module, args, output):
        return output + 1 if isinstance(module, nn.modules.conv._ConvNd) else None

    network = small()
    if registered == "before":
        with global_hooks(pre, post):
            fast, count = rewrite_copy(network)
            assert_same(fast, network, small_input())
            assert count == 3  # module hooks run around the layer, which stays in place
    else:
        fast, count = rewrite_copy(network)
        with global_hooks(pre, post):
            assert_same(fast, network, small_input())
        assert count == 3


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
def test_legacy_weight_norm_is_left_alone_and_follows_later_changes():
    def normalised() -> nn.Sequential:  # built twice: torch cannot deepcopy a legacy weight-normed module
        network = small()
        for index in (0, 2):
            network[index] = torch.nn.utils.weight_norm(network[index])
        return network

    network, fast = normalised(), normalised()
    held = [list(network), list(fast)]  # the layers as a caller holds them
    count = apply_cpu_kernels(fast)
    with torch.no_grad():
        for layers in held:
            layers[0].weight_g.mul_(2)
            layers[2].weight_g.mul_(-1.5)
    assert_same(fast, network, small_input())
    assert count == 1  # only the unnormalised 2→2 convolution
    assert list(fast.state_dict()) == list(network.state_dict())


def test_parametrized_weight_norm_is_left_alone_and_follows_later_changes():
    from torch.nn.utils.parametrizations import weight_norm

    network = small()
    for index in (0, 2):
        network[index] = weight_norm(network[index])
    fast = copy.deepcopy(network)
    held = [list(network), list(fast)]  # the layers as a caller holds them
    count = apply_cpu_kernels(fast)
    with torch.no_grad():
        for layers in held:
            layers[0].parametrizations.weight.original0.mul_(2)
            layers[2].parametrizations.weight.original0.mul_(-1.5)
    assert_same(fast, network, small_input())
    assert count == 1
    assert list(fast.state_dict()) == list(network.state_dict())


def test_in_place_weight_changes_after_the_rewrite_apply():
    network = small()
    fast = copy.deepcopy(network)
    held = [list(network), list(fast)]  # the layers as a caller holds them
    count = apply_cpu_kernels(fast)
    with torch.no_grad():
        for layers in held:
            for index, layer in enumerate(layers):
                layer.weight.data.mul_(index - 1.5)
                layer.bias.data.add_(index + 1)
    assert_same(fast, network, small_input())
    assert count == 3


def test_state_dict_keys_stay_and_load_state_dict_applies():
    network = small()
    before = network.state_dict()
    fast, count = rewrite_copy(network)
    assert count == 3
    after = fast.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[key], before[key]) and after[key].is_contiguous() for key in before)
    torch.manual_seed(7)
    other = nn.Sequential(nn.ConvTranspose3d(8, 2, 3, 2, 1, 1), nn.Conv3d(2, 2, 3, padding=1),
                          nn.Conv3d(2, 3, 1)).eval()
    fast.load_state_dict(other.state_dict(), strict=True)
    assert_same(fast, other, small_input())


@pytest.mark.parametrize("padding_mode", ["reflect", "circular", "replicate"])
def test_other_padding_modes_are_left_alone(padding_mode):
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv3d(2, 2, 3, padding=1, padding_mode=padding_mode),
                            nn.Conv3d(2, 2, 1, padding_mode=padding_mode)).eval()
    fast, count = rewrite_copy(network)
    assert count == 0
    assert_same(fast, network, torch.randn(1, 2, 5, 6, 4))


def test_grouped_layers_are_left_alone():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv3d(4, 4, 3, padding=1, groups=2), nn.Conv3d(4, 2, 1, groups=2),
                            nn.ConvTranspose3d(2, 2, 3, 2, 1, 1, groups=2)).eval()
    fast, count = rewrite_copy(network)
    assert count == 0
    assert_same(fast, network, torch.randn(1, 4, 5, 6, 4))


def test_dilated_layers_match_or_are_left_alone():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv3d(4, 2, 3, padding=2, dilation=2), nn.Conv3d(2, 4, 1, dilation=2),
                            nn.ConvTranspose3d(4, 2, 3, 2, 1, 1, dilation=2)).eval()
    fast, count = rewrite_copy(network)
    # the dilated 4→2 convolution runs channels-last (dilation passed through), the 1×1 one is a matrix product
    # (dilation means nothing there), the dilated transposed one is left alone
    assert {name: kernel.kind for name, kernel in rewritten(fast).items()} == {"0": CHANNELS_LAST, "1": POINTWISE}
    assert count == 2
    assert_same(fast, network, torch.randn(1, 4, 5, 6, 4))


def test_settings_changed_after_the_rewrite_fall_back_to_torch():
    network = small()
    fast, _ = rewrite_copy(network)
    for model in (network, fast):
        model[1].padding_mode = "reflect"
        model[0].stride, model[0].output_padding = (2, 1, 2), (1, 0, 1)  # still a phase rewrite, another geometry
    assert_same(fast, network, small_input())
    for model in (network, fast):  # an output padding torch refuses is refused as torch does
        model[0].output_padding = (1, 1, 1)
        with pytest.raises(RuntimeError, match="output padding must be smaller"):
            model(small_input())


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_wide_layers_and_script_modules_are_left_alone():
    network = nn.Sequential(nn.ConvTranspose3d(8, 16, 3, 2, 1, 1), nn.Conv3d(16, 8, 1), nn.Conv3d(16, 2, 1, stride=2))
    assert apply_cpu_kernels(network) == 0
    torch.manual_seed(0)
    scripted = torch.jit.script(small())
    assert apply_cpu_kernels(scripted) == 0
    holder = nn.Sequential(scripted, nn.Identity())
    assert apply_cpu_kernels(holder) == 0
    assert_same(holder, small(), small_input())
    traced = torch.jit.trace(small(), small_input())
    assert apply_cpu_kernels(traced) == 0


def test_a_rewritten_network_can_be_rewritten_again_and_copied():
    network = small()
    fast, count = rewrite_copy(network)
    assert count == 3
    assert apply_cpu_kernels(fast) == 0  # idempotent
    clone = copy.deepcopy(fast)
    assert all(kernel.module is clone.get_submodule(name) for name, kernel in rewritten(clone).items())
    with torch.no_grad():
        clone[0].weight.mul_(3)  # the copy's kernel reads the copy's weight, not the original's
        network[0].weight.mul_(3)
    assert_same(clone, network, small_input())


def test_segresnet_head_rewritten_gives_the_same_logits():
    from monai.networks.nets import SegResNet

    torch.manual_seed(0)
    network = SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8).eval()
    fast = copy.deepcopy(network)
    kinds = [kernel.kind for kernel in rewritten(fast).values()] if apply_cpu_kernels(fast) else []
    assert kinds.count(POINTWISE) == 1 and kinds.count(ONEDNN) == len(kinds) - 1 > 0
    assert list(fast.state_dict()) == list(network.state_dict())
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
    apply_cpu_kernels(fast)
    kinds = [kernel.kind for kernel in rewritten(fast).values()]
    # the top up-sampling layer, the 2→2 convolution after it; every other 3×3×3 convolution through oneDNN
    assert kinds.count(PHASE) == 1 and kinds.count(CHANNELS_LAST) == 1
    assert kinds.count(ONEDNN) == sum(type(m) is nn.Conv3d and m.kernel_size != (1, 1, 1)
                                      and max(m.in_channels, m.out_channels) > 4 for m in network.modules())
    assert list(fast.state_dict()) == list(network.state_dict())
    x = torch.randn(2, 1, 40, 48, 36)
    with torch.inference_mode():
        expected, got = network(x), fast(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert apply_cpu_kernels(fast) == 0  # idempotent: rewritten layers are not rewritten again


def test_environment_switch_turns_the_rewrites_off(monkeypatch):
    monkeypatch.setenv("MITK_CPU_KERNELS", "0")
    network = unet()
    assert apply_cpu_kernels(network) == 0
    assert rewritten(network) == {}


def _checkpointed_unet(tmp_path):
    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    config = plugin.resolve_config({"network": {"channels": [8, 16, 32], "strides": [2, 2]},
                                    "patch_size": [32, 32, 32]})
    assert config["network"]["channels"] == [8, 16, 32]
    network = plugin.network(config)
    path = save_checkpoint(tmp_path / "unet.safetensors", network.state_dict(), task="segment", plugin="unet",
                           plugin_version=None, config=config)
    return plugin, network, path


def test_load_model_uses_the_rewrites_on_cpu_with_a_checkpoint(tmp_path):
    from mitk.runner.model import load_model

    _, network, path = _checkpointed_unet(tmp_path)
    model = load_model("segment", None, path, None, "cpu")
    assert model.network is not None
    assert PHASE in {kernel.kind for kernel in rewritten(model.network).values()}
    assert list(model.network.state_dict()) == list(network.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model.network(x), network.eval()(x), rtol=1e-4, atol=1e-4)


def test_a_plugin_can_opt_out(tmp_path, monkeypatch):
    from mitk.runner.model import load_model

    plugin, _, path = _checkpointed_unet(tmp_path)
    monkeypatch.setattr(type(plugin), "cpu_kernels", False, raising=False)
    model = load_model("segment", None, path, None, "cpu")
    assert model.network is not None and rewritten(model.network) == {}


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation", "groups"), [
    (3, 1, 1, 1, 1),                          # a dense block's 3×3×3
    (3, 2, 1, 1, 1),                          # strided
    (7, 2, 3, 1, 1),                          # DenseNet's stem
    ((3, 1, 3), (1, 2, 1), (1, 0, 2), 1, 1),  # different per axis
    (3, 1, 2, 2, 1),                          # dilated
    (2, 1, 0, 1, 1),                          # even kernel, no padding
])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_convolution_matches_torch(kernel, stride, padding, dilation, groups, bias):
    torch.manual_seed(0)
    layer = nn.Conv3d(16, 24, kernel, stride, padding, dilation, groups=groups, bias=bias).eval()
    fast, count = rewrite_copy(layer)
    assert count == 1 and rewritten(fast)[""].kind == ONEDNN
    x = torch.randn(2, 16, 9, 10, 11)
    assert_same(fast, layer, x)
    assert_same(fast, layer, x[:1])                     # one image: torch's own choice is its naive kernel
    assert_same(fast, layer, x[0])                      # unbatched
    assert_same(fast, layer, x.transpose(-1, -2))       # not contiguous
    assert_same(fast, layer, x.contiguous(memory_format=torch.channels_last_3d))


def test_onednn_convolution_gradients_match_torch():
    """Grad-CAM differentiates through the network: the rewritten layer's gradients are torch's."""
    torch.manual_seed(0)
    layer = nn.Conv3d(8, 12, 3, padding=1)
    fast, _ = rewrite_copy(layer)
    x = torch.randn(1, 8, 6, 7, 5)
    grads = []
    for network in (layer, fast):
        inputs = x.clone().requires_grad_(True)
        network.zero_grad()
        network(inputs).square().sum().backward()
        grads.append((inputs.grad, network.weight.grad, network.bias.grad))
    for expected, got in zip(*grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_onednn_convolution_leaves_what_onednn_does_not_take_to_torch(monkeypatch):
    torch.manual_seed(0)
    layer = nn.Conv3d(8, 12, 3, padding=1).eval()
    fast, _ = rewrite_copy(layer)
    x = torch.randn(1, 8, 6, 7, 5)
    calls = []
    real = torch.mkldnn_convolution
    monkeypatch.setattr(torch, "mkldnn_convolution", lambda *args: calls.append(args) or real(*args))
    assert_same(fast, layer, x)
    assert len(calls) == 1
    with torch.backends.mkldnn.flags(enabled=False):  # the user turned oneDNN off: torch's kernel runs
        assert_same(fast, layer, x)
    double_layer, double_fast = copy.deepcopy(layer).double(), copy.deepcopy(fast).double()
    with torch.no_grad():  # float64: oneDNN has no kernel, torch's runs, bit for bit
        assert torch.equal(double_fast(x.double()), double_layer(x.double()))
    assert len(calls) == 1
    same = nn.Conv3d(8, 12, 3, padding="same")          # padding given by name: left alone
    one = nn.Conv3d(8, 12, 1)                           # 1×1×1: torch's choice is as fast, left alone
    flat = nn.Conv2d(8, 12, 3)                          # 2-D: torch's kernels are as fast, left alone
    grouped = nn.Conv3d(8, 12, 3, groups=4)             # torch already sends grouped ones to oneDNN
    for untouched in (same, one, flat, grouped):
        assert rewrite_copy(untouched)[1] == 0


def densenet() -> nn.Module:
    from monai.networks.nets import DenseNet121

    torch.manual_seed(0)
    return DenseNet121(spatial_dims=3, in_channels=1, out_channels=3).eval()


def test_densenet_rewritten_gives_the_same_logits():
    network = densenet()
    fast, _ = rewrite_copy(network)
    kinds = [kernel.kind for kernel in rewritten(fast).values()]
    assert kinds.count(MAX_POOL) == 1 and kinds.count(ONEDNN) == sum(
        type(m) is nn.Conv3d and m.kernel_size != (1, 1, 1) for m in network.modules())
    assert list(fast.state_dict()) == list(network.state_dict())
    x = torch.randn(1, 1, 48, 40, 32)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), network(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation", "ceil_mode"), [
    (3, 2, 1, 1, False), (2, 2, 0, 1, False), (3, 1, 1, 1, False), (3, 2, 1, 2, False), (3, 2, 1, 1, True),
    ((3, 2, 1), (2, 1, 1), (1, 0, 0), 1, True),
])
def test_channels_last_max_pool_is_bit_for_bit_torchs(kernel, stride, padding, dilation, ceil_mode):
    layer = nn.MaxPool3d(kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    fast, count = rewrite_copy(layer)
    assert count == 1 and rewritten(fast)[""].kind == MAX_POOL
    x = torch.randn(2, 9, 11, 10, 12, generator=torch.Generator().manual_seed(0))
    x[0, 1, 2, 3, 4] = float("nan")
    x[1, 2, :4, :4, :4] = float("-inf")
    x[1, 3, 5, 5, 5] = float("inf")
    for given in (x, x[:1], x[0], x.transpose(-1, -2), x.contiguous(memory_format=torch.channels_last_3d)):
        expected, got = layer(given), fast(given)
        assert got.stride() == expected.stride()
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)


def test_max_pool_with_indices_or_hooks_is_left_alone():
    assert rewrite_copy(nn.MaxPool3d(2, return_indices=True))[1] == 0
    hooked = nn.MaxPool3d(2)
    hooked.register_forward_hook(lambda module, args, out: out)
    assert rewrite_copy(hooked)[1] == 0
    assert rewrite_copy(nn.MaxPool2d(2))[1] == 0
