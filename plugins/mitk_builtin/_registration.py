"""Classical registration by instance optimisation in torch: ``affine``, ``deformable`` and ``syn``.

Both work in world millimetres (RAS), so flipped, permuted and oblique grids need no special case. The affine
plugin follows ITK's recipe: a Gaussian pyramid, a metric evaluated on a random sample of fixed-image points
(not the dense volume), and a centred transform started from the best (by the metric) of the identity, the grid
centres and the centres of mass; it reports the metric at identity, start and end and warns when the result is
worse than either or implausibly scaled. The deformable
plugin starts from that affine and optimises a stationary velocity field greedily, as ANTs' SyN does (Gaussian-
smoothed similarity gradients, one step scale for the whole field, a symmetric cost), in pure torch;
``syn`` is the same with a rigid stage first (ANTs' ``antsRegistrationSyN`` schedule).

This module holds the plugin classes; the pyramid, metrics, transform model, optimisation loops, dense stage and
fields live in :mod:`._registration_pyramid`, :mod:`._registration_metrics`, :mod:`._registration_transform`,
:mod:`._registration_optimiser`, :mod:`._registration_dense` and :mod:`._registration_field`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mitk.image import Image
from mitk.tasks import RegistrationPlugin
from mitk_builtin._registration_optimiser import affine_register, check_not_collapsed, deformable_register

__all__ = ["AffineRegistration", "DeformableRegistration", "SyNRegistration", "affine_register", "check_not_collapsed",
           "deformable_register", "device_of"]


def device_of(config: dict[str, Any], model: Any) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for parameter in model.parameters():
            return parameter.device
    return torch.device("cuda" if torch.cuda.is_available() and config.get("device") != "cpu" else "cpu")


class AffineRegistration(RegistrationPlugin):
    """Rigid, similarity or affine registration: sampled MI/NCC/MSE, a Gaussian pyramid, Adam in torch."""

    needs_weights = False
    trainable = False

    def default_config(self) -> dict[str, Any]:
        return {"transform": "affine", "metric": "mi", "init": "auto", "foreground": True, "rigid_first": False,
                "levels": [4, 2, 1], "iterations": [100, 50, 25], "samples": 20000, "bins": 32, "step_voxels": 0.5,
                "seed": 0, "strict": False, "device": "auto"}

    def settings_help(self) -> dict[str, str]:
        return {
            "transform": "rigid (6 dof), similarity (7 dof) or affine (12 dof)",
            "metric": "mi (mutual information: any modality pair), ncc (correlation) or mse (same intensities)",
            "init": "auto (best of identity, geometry, com by the metric), com, moments, geometry or identity",
            "foreground": "no moving mask: count only points on the moving image's signal (> 2 % of its window)",
            "rigid_first": "for similarity/affine: a rigid stage through the pyramid first, then the full transform",
            "levels": "pyramid levels as multiples of the fixed image's finest spacing, coarse to fine",
            "iterations": "optimiser iterations at each pyramid level",
            "samples": "fixed-image points sampled per level for the metric (ITK-style sampling)",
            "bins": "histogram bins of the mutual information",
            "step_voxels": "initial optimiser step, in voxels of each level (decays over the level)",
            "seed": "random seed of the point sampling",
            "strict": "refuse a result worse than identity or start, or scaled outside 0.7-1.4 (else warn)",
            "device": "auto (CUDA when available) or cpu",
        }

    def register(self, fixed: Image, moving: Image, model: Any, config: dict[str, Any], *,
                 fixed_mask: Image | None = None, moving_mask: Image | None = None
                 ) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
        matrix, report = affine_register(fixed, moving, config, device_of(config, model), fixed_mask, moving_mask)
        return matrix, None, report


class DeformableRegistration(RegistrationPlugin):
    """Affine, then a greedy, SyN-like diffeomorphic field: Gaussian-smoothed local-correlation forces on a velocity
    field."""

    needs_weights = False
    trainable = False

    def default_config(self) -> dict[str, Any]:
        return {"affine": AffineRegistration().default_config(), "loss": "lncc", "bins": 32, "lncc_kernel": 5,
                "levels": [2, 1], "iterations": [20, 0], "step_voxels": 0.25, "update_sigma": 1.7,
                "total_sigma": 0.0, "symmetric": True, "foreground_mm": 0.0, "integration_steps": 7,
                "inverse": False, "strict": False, "device": "auto"}

    def settings_help(self) -> dict[str, str]:
        described = {f"affine.{key}": f"initial affine: {text}" for key, text in
                     AffineRegistration().settings_help().items()}
        return {
            **described,
            "loss": "lncc (local correlation in lncc_kernel boxes, ANTs' CC), mi (Mattes MI) or mse",
            "bins": "histogram bins of the mutual information",
            "lncc_kernel": "LNCC window, in voxels of each level",
            "levels": "shrink factors of the pyramid, as multiples of the fixed image's finest spacing",
            "iterations": "gradient steps at each level (0: the field is carried to the finer grid only)",
            "step_voxels": "largest update per step, in voxels of each level (ANTs' gradient step), cosine-decayed",
            "update_sigma": "Gaussian σ (level voxels) smoothing each update (ANTs' update-field regularisation)",
            "total_sigma": "Gaussian σ (level voxels) smoothing the whole velocity after each step (0: none)",
            "symmetric": "also match the fixed image through the inverse field to the moving one (SyN's symmetry)",
            "foreground_mm": "without masks, compare only where both images have signal, widened by this many mm "
                             "(< 0: all)",
            "integration_steps": "scaling-and-squaring steps integrating the velocity (MONAI DVF2DDF)",
            "inverse": "also return the inverse displacement (report key inverse_displacement, an array)",
            "strict": "refuse an affine stage worse than identity or start, or scaled outside 0.7-1.4",
            "device": "auto (CUDA when available) or cpu",
        }

    def register(self, fixed: Image, moving: Image, model: Any, config: dict[str, Any], *,
                 fixed_mask: Image | None = None, moving_mask: Image | None = None
                 ) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
        device = device_of(config, model)
        return deformable_register(fixed, moving, config, device, fixed_mask, moving_mask)


class SyNRegistration(DeformableRegistration):
    """ANTs' ``antsRegistrationSyN`` schedule: rigid, then affine from where it ended, then the symmetric
    diffeomorphic stage, all with the defaults of ``deformable``."""

    def default_config(self) -> dict[str, Any]:
        config = super().default_config()
        config["affine"]["rigid_first"] = True
        return config
