"""The similarity metrics of the classical registrations: Mattes mutual information on sampled points, NCC and
MSE (affine stage), and the masked dense loss of the deformable stage."""

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


def masked_loss(loss_name: str, loss: torch.nn.Module, warped: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
    """The dissimilarity of ``warped`` and ``target``, averaged over ``mask`` when given (the whole grid else)."""
    if mask is None:
        return loss(warped, target)
    if loss_name == "mi":  # a global metric: the joint histogram of the voxels inside the mask
        return loss(warped[mask].view(1, 1, -1), target[mask].view(1, 1, -1))
    weight = mask.float()
    if loss_name == "lncc":
        # Both images are cut to the mask first, so that no window sees past it (the cut is made after
        # warping, on the fixed grid: it does not move with the field). MONAI's pointwise LNCC is minus a
        # squared correlation whose smoothing terms can exceed 1 in a flat window; clamp it to its true range.
        pointwise = loss(warped * weight, target * weight).clamp(min=-1.0)
    else:
        pointwise = (warped - target) ** 2
    return (pointwise * weight).sum() / weight.sum().clamp_min(1.0)
