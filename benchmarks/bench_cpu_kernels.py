"""One UNet forward pass with and without mitk's CPU kernel rewrites, and each rewritten layer on its own
(the UNet's and SegResNet's).

Same 4.8 M-parameter MONAI UNet as bench_segment.py, a batch of two 96³ windows (what `sw_batch_size="auto"`
runs on 2 threads). The reference is the untouched network, i.e. PyTorch's default oneDNN kernels.
"""

from __future__ import annotations

import argparse
import copy
import time
from functools import partial

import torch
from _harness import compare, save, table
from monai.networks.nets import SegResNet, UNet

from mitk.runner.cpu_kernels import _geometry, apply_cpu_kernels, rewritten


def layer_rows(network: torch.nn.Module, fast: torch.nn.Module, x: torch.Tensor, label: str,
               repeats: int) -> list[dict[str, object]]:
    """Each rewritten layer against the original, on the input it sees inside the network."""
    layer_inputs: dict[torch.nn.Module, torch.Tensor] = {}
    kernels = rewritten(fast)
    hooks = [kernel.module.register_forward_pre_hook(lambda m, a: layer_inputs.setdefault(m, a[0]))
             for kernel in kernels.values()]
    fast(x)
    for hook in hooks:
        hook.remove()
    rows: list[dict[str, object]] = []
    for name, kernel in kernels.items():
        original, data = network.get_submodule(name), layer_inputs[kernel.module]
        timings = compare(partial(original, data), partial(kernel.module, data), repeats)
        rows.append({"what": f"{label} {kernel.kind}: {original}", **timings})
    return rows


def phase_weight_microseconds(network: torch.nn.Module) -> dict[str, float]:
    """What deriving the phase weight on every call costs, per transposed layer rewritten (µs, best of 200)."""
    costs: dict[str, float] = {}
    for name, kernel in rewritten(network).items():
        if kernel.kind != "phase-transposed":
            continue
        module = kernel.module
        geometry = _geometry(tuple(module.kernel_size), tuple(module.stride), tuple(module.padding))
        times = []
        for _ in range(200):
            start = time.perf_counter()
            geometry.weight(module.weight)
            times.append((time.perf_counter() - start) * 1e6)
        costs[name] = round(min(times), 1)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    network = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256),
                   strides=(2, 2, 2, 2), num_res_units=2, norm="instance").eval()
    segresnet = SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=16).eval()
    x = torch.randn(2, 1, 96, 96, 96)
    with torch.inference_mode():
        fast = copy.deepcopy(network)
        apply_cpu_kernels(fast)
        reference = network(x)
        difference = float((fast(x) - reference).abs().max())
        same_labels = bool(torch.equal(fast(x).argmax(1), reference.argmax(1)))
        rows = layer_rows(network, fast, x, "UNet", args.repeats)
        timings = compare(partial(network, x), partial(fast, x), args.repeats)
        rows.append({"what": "UNet whole forward pass, 2×1×96³", **timings})
        fast_segresnet = copy.deepcopy(segresnet)
        apply_cpu_kernels(fast_segresnet)
        rows += layer_rows(segresnet, fast_segresnet, x, "SegResNet", args.repeats)
        phase_weight = phase_weight_microseconds(fast)
    print(table(rows, ["what", "default_min_ms", "mitk_min_ms", "default_median_ms", "mitk_median_ms", "ratio"]))
    print(f"UNet: max |logit difference| {difference:.1e}; identical argmax: {same_labels}")
    print(f"phase weight derived per call, µs: {phase_weight}")
    save("cpu_kernels", {"network": "MONAI UNet (16,32,64,128,256), 2 res units, 4.8 M parameters; "
                                    "MONAI SegResNet (init_filters 16)",
                         "threads": torch.get_num_threads(), "max_logit_difference": difference,
                         "identical_argmax": same_labels, "phase_weight_us_per_call": phase_weight,
                         "rows": rows})


if __name__ == "__main__":
    main()
