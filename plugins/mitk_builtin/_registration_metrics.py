"""The similarity metrics of the classical registrations: Mattes mutual information on sampled points, NCC and
MSE (affine stage), and the local correlation of the deformable stage."""

from __future__ import annotations

import torch


def fixed_bins(values: torch.Tensor, bins: int) -> torch.Tensor:
    """The nearest histogram bin of each fixed intensity in [0, 1] (Mattes: a zero-order Parzen window)."""
    return (values * (bins - 1)).round().long().clamp(0, bins - 1)


def cubic_bspline(distance: torch.Tensor) -> torch.Tensor:
    d = distance.abs()
    return torch.where(d < 1, (4 - 6 * d**2 + 3 * d**3) / 6, torch.where(d < 2, (2 - d) ** 3 / 6, 0.0))


def mutual_information(fixed_bin: torch.Tensor, moving: torch.Tensor, valid: torch.Tensor,
                       bins: int) -> torch.Tensor:
    """Mattes mutual information (nats): each moving intensity spread over four bins by a cubic B-spline.

    The joint histogram is built with ``index_add`` (4 entries per point, not ``bins``), so the metric costs
    about as much as the sampling; it is differentiable through the B-spline weights.
    """
    position = moving.clamp(0.0, 1.0) * (bins - 1) + 1.0  # one padding bin on either side
    lowest = position.floor().detach() - 1
    joint = torch.zeros((bins, bins + 2), dtype=moving.dtype, device=moving.device)
    flat = joint.view(-1)
    for offset in range(4):
        column = lowest + offset
        weight = cubic_bspline(position - column) * valid
        index = fixed_bin * (bins + 2) + column.long().clamp(0, bins + 1)
        flat = flat.index_add(0, index, weight)
    joint = flat.view(bins, bins + 2)
    joint = joint / joint.sum().clamp_min(1e-12)
    p_fixed = joint.sum(dim=1, keepdim=True)
    p_moving = joint.sum(dim=0, keepdim=True)
    ratio = joint / (p_fixed @ p_moving).clamp_min(1e-12)
    return (joint * torch.log(ratio.clamp_min(1e-12))).sum()


def similarity(metric: str, fixed: torch.Tensor, fixed_bin: torch.Tensor | None, moving: torch.Tensor,
               valid: torch.Tensor, bins: int) -> torch.Tensor:
    """The similarity to maximise: MI, NCC, or minus the mean squared difference, over valid points."""
    weight = valid.float()
    total = weight.sum().clamp_min(1.0)
    if metric == "mi":
        assert fixed_bin is not None
        return mutual_information(fixed_bin, moving, weight, bins)
    if metric == "ncc":
        mean_f = (fixed * weight).sum() / total
        mean_m = (moving * weight).sum() / total
        df, dm = (fixed - mean_f) * weight, (moving - mean_m) * weight
        return (df * dm).sum() / torch.sqrt((df * df).sum() * (dm * dm).sum()).clamp_min(1e-12)
    return -(((fixed - moving) ** 2) * weight).sum() / total


def box_mean(tensor: torch.Tensor, kernel: int, axis: int) -> torch.Tensor:
    """The mean over ``kernel`` neighbours along one axis (fewer at the edges, as ``avg_pool`` with
    ``count_include_pad=False``, to the bit), as a sum of shifted copies: faster than ``avg_pool3d`` on CPU."""
    import torch.nn.functional as F

    size, radius = tensor.shape[axis], kernel // 2
    pad = [0] * (2 * (tensor.dim() - 2))
    pad[2 * (tensor.dim() - 1 - axis)] = pad[2 * (tensor.dim() - 1 - axis) + 1] = radius
    padded = F.pad(tensor, pad)
    total = padded.narrow(axis, 0, size)
    for shift in range(1, kernel):
        total = total + padded.narrow(axis, shift, size)
    position = torch.arange(size, device=tensor.device)
    count = (position + radius + 1).clamp(max=size) - (position - radius).clamp(min=0)
    return total / count.to(tensor.dtype).view([-1 if d == axis else 1 for d in range(tensor.dim())])


def local_correlation(moving: torch.Tensor, fixed: torch.Tensor, kernel: int) -> torch.Tensor:
    """The squared local correlation of two ``(1, 1, …)`` 2-D or 3-D images in ``kernel``-voxel boxes (ANTs' CC
    with radius ``kernel // 2``), per voxel, in [0, 1]."""
    means = torch.cat([moving, fixed, moving * moving, fixed * fixed, moving * fixed], dim=1)
    for axis in range(2, moving.dim()):  # a separable box filter: one running sum per axis
        means = box_mean(means, kernel, axis)
    mean_m, mean_f, mean_mm, mean_ff, mean_mf = means.unbind(1)
    cross = mean_mf - mean_m * mean_f
    variance = (mean_mm - mean_m**2).clamp_min(0) * (mean_ff - mean_f**2).clamp_min(0)
    return (cross * cross / (variance + 1e-5)).clamp(0.0, 1.0)[:, None]
