"""The dense stage of ``deformable``: a greedy, SyN-like optimisation of a stationary velocity field.

ANTs' recipe (``SyN[gradientStep, updateFieldVariance, totalFieldVariance]``), in torch: at each level of a
shrink-and-smooth pyramid, the gradient of the similarity (local correlation in 5-voxel boxes, ANTs' ``CC`` of
radius 2, by default; Mattes mutual information or MSE) with respect to the displacements is smoothed by a
Gaussian (the update field), scaled so that its largest vector moves ``step_voxels`` voxels at every step, and
added to the velocity, which may itself be smoothed (the total field). The gradient is not carried back through
the integration (ANTs' and log-demons' force): a fraction of the cost, the same direction for small steps.
The velocity is integrated by scaling and squaring (MONAI's ``DVF2DDF``), so the map is diffeomorphic and its
inverse is the negated velocity integrated. Unlike Adam, whose per-parameter step moves the weakly-driven
background (a template's empty surround against a subject's scalp) as far as the brain's edge, the step is one
scale for the whole field: regions without evidence barely move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mitk.errors import PluginError
from mitk_builtin._registration_field import integrate, regrid, warp
from mitk_builtin._registration_metrics import fixed_bins, local_correlation, mutual_information
from mitk_builtin._registration_pyramid import Volume, gaussian_smooth, normalise, shrink, shrink_factors, shrink_mask
from mitk_builtin._registration_transform import in_plane

LOSSES = ("mi", "lncc", "mse")
SCALES = (1.0, 0.5, 0.0)
"""The shares of the optimised velocity compared at the finest level."""


@dataclass
class DenseResult:
    """The velocity (level voxels, ``(1, 3, I, J, K)``, or ``(1, 2, A, B)`` in a 2-D image's plane) on the last
    level's grid, that level's shrink factors, and a report."""

    velocity: torch.Tensor
    factors: tuple[int, int, int]
    report: dict[str, Any]


def smooth_field(field: torch.Tensor, sigma: float, flat: int | None) -> torch.Tensor:
    """Gaussian smoothing (σ in voxels of the level) of an in-plane or volume field ``(1, C, …)``."""
    if sigma <= 0:
        return field
    if flat is None:
        return gaussian_smooth(field, np.full(3, sigma))
    sigmas = np.full(3, sigma)
    sigmas[flat] = 0.0
    return gaussian_smooth(field.unsqueeze(2 + flat), sigmas).squeeze(2 + flat)


class Dissimilarity:
    """The loss of one image against a reference: minus Mattes MI over the (masked) grid, or the masked mean of
    minus the squared local correlation, or of the squared difference."""

    def __init__(self, name: str, reference: torch.Tensor, mask: torch.Tensor | None, bins: int,
                 kernel: int, blank: bool = False) -> None:
        self.name, self.reference, self.bins, self.kernel = name, reference, bins, kernel
        self.weight = torch.ones_like(reference) if mask is None else mask.float().view_as(reference)
        self.blank = blank and mask is not None
        self.reference_bin = fixed_bins(reference.flatten(), bins) if name == "mi" else None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.reference_bin is not None:
            return -mutual_information(self.reference_bin, image.flatten(), self.weight.flatten(), self.bins)
        if self.name == "lncc" and self.blank:  # a user's masks: no window sees what they leave out (a scalp)
            pointwise = -local_correlation(image * self.weight, self.reference * self.weight, self.kernel)
        elif self.name == "lncc":
            pointwise = -local_correlation(image, self.reference, self.kernel)
        else:
            pointwise = (image - self.reference) ** 2
        return (pointwise * self.weight).sum() / self.weight.sum().clamp_min(1.0)


class Energy:
    """The loss of a velocity on one level: the moving image through its flow against the fixed one and, when
    ``symmetric``, the fixed image through the inverse flow against the moving one (SyN's symmetry).

    ``carry`` (the velocity's level factors, this level's, the fixed shape and the flat axis) evaluates a velocity
    left on a coarser grid: it is integrated there and its displacements resized to this level, which costs a
    fraction of integrating it on this level's grid (what ANTs does with a level of no iterations)."""

    def __init__(self, config: dict[str, Any], target: torch.Tensor, source: torch.Tensor,
                 mask: torch.Tensor | None, carry: tuple[Any, ...] | None = None, blank: bool = False) -> None:
        name, bins, kernel = config["loss"], int(config["bins"]), int(config["lncc_kernel"])
        self.target, self.source, self.steps, self.carry = target, source, int(config["integration_steps"]), carry
        self.forward = Dissimilarity(name, target, mask, bins, kernel, blank)
        self.backward = Dissimilarity(name, source, mask, bins, kernel, blank) if config["symmetric"] else None

    def displacements(self, velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        forward = integrate(velocity, self.steps)
        backward = integrate(-velocity, self.steps) if self.backward is not None else None
        if self.carry is not None:
            source_factors, level_factors, shape, flat = self.carry
            forward = regrid(forward, flat, source_factors, level_factors, shape)
            if backward is not None:
                backward = regrid(backward, flat, source_factors, level_factors, shape)
        return forward, backward

    def of_displacements(self, forward: torch.Tensor, backward: torch.Tensor | None) -> torch.Tensor:
        value = self.forward(warp(self.source, forward))
        if self.backward is not None and backward is not None:
            value = 0.5 * (value + self.backward(warp(self.target, backward)))
        return value

    def __call__(self, velocity: torch.Tensor) -> torch.Tensor:
        return self.of_displacements(*self.displacements(velocity))

    def gradient(self, velocity: torch.Tensor) -> torch.Tensor:
        """The loss's gradient with respect to the displacements (not through the integration), taken as the
        velocity's: ANTs' and log-demons' force, a fraction of the cost of differentiating the squarings."""
        with torch.no_grad():
            forward, backward = self.displacements(velocity)
        forward.requires_grad_(True)
        if backward is None:
            (gradient,) = torch.autograd.grad(self.of_displacements(forward, None), forward)
            return gradient
        backward.requires_grad_(True)
        forward_gradient, backward_gradient = torch.autograd.grad(self.of_displacements(forward, backward),
                                                                  (forward, backward))
        return forward_gradient - backward_gradient


def check_settings(config: dict[str, Any]) -> tuple[list[float], list[int]]:
    if config["loss"] not in LOSSES:
        raise PluginError(f"setting loss must be one of {', '.join(LOSSES)}, not {config['loss']!r}")
    levels = [float(f) for f in config["levels"]]
    iterations = [int(n) for n in config["iterations"]]
    if not levels or len(levels) != len(iterations) or any(f < 1 for f in levels) or any(n < 0 for n in iterations):
        raise PluginError("settings 'levels' (each ≥ 1) and 'iterations' (each ≥ 0) must be lists of the same "
                          "length")
    if int(config["lncc_kernel"]) < 3 or int(config["lncc_kernel"]) % 2 == 0:
        raise PluginError(f"setting lncc_kernel must be an odd number ≥ 3, not {config['lncc_kernel']!r}")
    for key in ("step_voxels", "update_sigma", "total_sigma"):
        if not float(config[key]) >= 0:
            raise PluginError(f"setting {key} must be ≥ 0, not {config[key]!r}")
    return levels, iterations


def dense_register(fixed: Volume, moved: Volume, fixed_inside: torch.Tensor | None, flat: int | None,
                   windows: tuple[tuple[float, float], tuple[float, float]], config: dict[str, Any],
                   blank: bool = False) -> DenseResult:
    """Greedy velocity-field optimisation of ``moved`` (the moving image already on the fixed grid through the
    affine) against ``fixed``, coarse to fine; the similarity counts only inside ``fixed_inside`` when given, and
    with ``blank`` (masks from the user) the local correlation sees both images as zero outside it."""
    levels, iterations = check_settings(config)
    step, update_sigma, total_sigma = (float(config[key]) for key in ("step_voxels", "update_sigma", "total_sigma"))
    in_plane_spacing = fixed.spacing[[n > 1 for n in fixed.shape]]
    report: dict[str, Any] = {"loss": config["loss"], "iterations": [], "similarity_start": [], "similarity": []}
    velocity: torch.Tensor | None = None
    previous = (1, 1, 1)
    for factor, count in zip(levels, iterations, strict=True):
        factors = shrink_factors(fixed.spacing, factor * float(np.min(in_plane_spacing)), fixed.shape)
        fixed_level, moving_level = shrink(fixed, factors), shrink(moved, factors)
        mask = None if fixed_inside is None else in_plane(shrink_mask(fixed_inside, factors), flat)
        target = in_plane(normalise(fixed_level.tensor, windows[0]), flat)
        source = in_plane(normalise(moving_level.tensor, windows[1]), flat)
        if velocity is None:
            current, carry = torch.zeros(1, 2 if flat is not None else 3, *target.shape[2:], device=target.device), None
        elif count > 0:
            current, carry = regrid(velocity, flat, previous, factors, fixed.shape), None
        else:  # no steps here: the velocity stays on its grid, its displacements are resized
            current, carry = velocity, (previous, factors, fixed.shape, flat)
        energy = Energy(config, target, source, mask, carry, blank)
        with torch.no_grad():
            first = -float(energy(current))
        first_largest = 0.0
        for number in range(count):
            gradient = energy.gradient(current)
            with torch.no_grad():
                update = -smooth_field(gradient, update_sigma, flat)
                # Each update moves at most ``step`` voxels (ANTs), less as the force falls below its first
                # size (converging where ANTs would stop), cosine-decayed over the level.
                largest = float(update.norm(dim=1).max())
                first_largest = first_largest or largest
                decay = 0.5 * (1.0 + math.cos(math.pi * number / count))
                current = current + update * (step * decay / max(largest, first_largest) if largest > 0 else 0.0)
                current = smooth_field(current, total_sigma, flat)
        with torch.no_grad():
            last = -float(energy(current)) if count else first
        velocity, previous = current, factors if carry is None else previous
        report["iterations"].append(count)
        report["similarity_start"].append(round(first, 6))
        report["similarity"].append(round(last, 6))
    assert velocity is not None
    # The coarse levels' optimum need not be the finest level's: scale the field back where that scores better
    # there, so that the stage never ends below its affine start by its own measure.
    with torch.no_grad():  # the whole field's score is the last level's
        scored = {scale: last if scale == 1.0 else -float(energy(scale * velocity)) for scale in SCALES}
    best = max(SCALES, key=lambda scale: (scored[scale], scale))
    report.update({"similarity_affine": round(scored[0.0], 6), "similarity_final": round(scored[best], 6),
                   "field_scale": best})
    return DenseResult(best * velocity, previous, report)
