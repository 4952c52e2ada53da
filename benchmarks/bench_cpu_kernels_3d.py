"""3-D convolutions of one image and 3-D max pooling, with and without mitk's CPU kernel rewrites.

torch sends a convolution of a single 3-D image whose ``N·C·D·H`` is at most 20480 to its naive ``vol2col``
kernel rather than oneDNN; mitk runs every 3-D convolution with a kernel larger than 1×1×1 through oneDNN, and
3-D max pooling in channels-last order (a few-channel one on channels-last copies). Measured here: single layers
on both sides of torch's threshold and few-channel layers, then
whole networks — a 3-D DenseNet121 on one 64³ image (classification), MONAI's UNet on one and on two 96³
windows (segmentation's sliding window), SegResNet on one 96³ window. One torch thread unless ``--threads``;
default and rewritten calls interleaved, best and median milliseconds.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from _harness import compare, save, table
from monai.networks.nets import DenseNet121, SegResNet, UNet

from mitk.runner.cpu_kernels import apply_cpu_kernels


def network_row(label: str, network: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[str, object]:
    network = network.eval()
    fast = copy.deepcopy(network)
    swapped = apply_cpu_kernels(fast)
    with torch.inference_mode():
        difference = float((fast(x) - network(x)).abs().max())
        row = compare(lambda: network(x), lambda: fast(x), repeats, digits=2)
    return {"case": label, "rewritten_layers": swapped, "max_abs_difference": difference, **row}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows: list[dict[str, object]] = []
    for channels_in, channels_out, size in ((16, 32, 32), (64, 128, 16), (256, 32, 8), (64, 128, 32)):
        layer = torch.nn.Conv3d(channels_in, channels_out, 3, padding=1).eval()
        x = torch.randn(1, channels_in, size, size, size)
        rows.append(network_row(f"Conv3d {channels_in}→{channels_out} 3×3×3 at {size}³ (N·C·D·H "
                                f"{channels_in * size * size})", layer, x, args.repeats))
    for channels_in, channels_out, size in ((2, 2, 64), (2, 2, 96)):  # a segmentation net's last convolution
        layer = torch.nn.Conv3d(channels_in, channels_out, 3, padding=1).eval()
        x = torch.randn(1, channels_in, size, size, size)
        rows.append(network_row(f"Conv3d {channels_in}→{channels_out} 3×3×3 at {size}³, one window (oneDNN in "
                                "channels-last order)", layer, x, args.repeats))
    pool = torch.nn.MaxPool3d(3, 2, 1)
    x = torch.randn(1, 64, 32, 32, 32)
    rows.append(network_row("MaxPool3d 3/2 of 64×32³ (DenseNet's stem)", pool, x, args.repeats))
    with torch.inference_mode():
        assert torch.equal(F.max_pool3d(x, 3, 2, 1),
                           F.max_pool3d(x.contiguous(memory_format=torch.channels_last_3d), 3, 2, 1))
    torch.manual_seed(0)
    rows.append(network_row("DenseNet121 3-D, 1×1×64³", DenseNet121(spatial_dims=3, in_channels=1, out_channels=2),
                            torch.randn(1, 1, 64, 64, 64), args.repeats))
    unet = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256),
                strides=(2, 2, 2, 2), num_res_units=2, norm="instance")
    rows.append(network_row("UNet (bench_segment's), 1×1×96³", unet, torch.randn(1, 1, 96, 96, 96), args.repeats))
    rows.append(network_row("UNet (bench_segment's), 2×1×96³", unet, torch.randn(2, 1, 96, 96, 96), args.repeats))
    small = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32, 64), strides=(2, 2, 2),
                 num_res_units=1)
    rows.append(network_row("UNet (bench_scaleout's, channels 8–64), 1×1×64³", small, torch.randn(1, 1, 64, 64, 64),
                            args.repeats))
    rows.append(network_row("SegResNet (init 8), 1×1×96³", SegResNet(3, 8, 1, 2), torch.randn(1, 1, 96, 96, 96),
                            args.repeats))
    print(table(rows, ["case", "rewritten_layers", "default_min_ms", "default_median_ms", "mitk_min_ms",
                       "mitk_median_ms", "ratio", "max_abs_difference"]))
    save("cpu_kernels_3d", {"threads": args.threads, "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
