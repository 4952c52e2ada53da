"""Classical registration by instance optimisation in torch: ``affine`` and ``deformable``.

Both work in world millimetres (RAS), so flipped, permuted and oblique grids need no special case. The affine
plugin follows ITK's recipe: a Gaussian pyramid, a metric evaluated on a random sample of fixed-image points
(not the dense volume), and a centred transform started from the best (by the metric) of the identity, the grid
centres and the centres of mass; it reports the metric at identity, start and end and warns when the result is
worse than either or implausibly scaled. The deformable
plugin starts from that affine and optimises a dense displacement field on a coarse grid with MONAI's ``Warp``,
its local NCC (or MSE / mutual information) and a bending-energy or diffusion penalty.

This module holds the two plugin classes; the pyramid, metrics, transform model and optimisation loops live in
:mod:`._registration_pyramid`, :mod:`._registration_metrics`, :mod:`._registration_transform` and
:mod:`._registration_optimiser` (whose entry points it re-exports).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mitk.image import Image
from mitk.tasks import RegistrationPlugin
from mitk_builtin._registration_optimiser import affine_register, check_not_collapsed, deformable_register

__all__ = ["AffineRegistration", "DeformableRegistration", "affine_register", "check_not_collapsed",
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
        return {"transform": "affine", "metric": "mi", "init": "auto", "rigid_first": False, "levels": [4, 2, 1],
                "iterations": [100, 50, 25], "samples": 20000, "bins": 32, "step_voxels": 0.5, "seed": 0,
                "strict": False, "device": "auto"}

    def settings_help(self) -> dict[str, str]:
        return {
            "transform": "rigid (6 dof), similarity (7 dof) or affine (12 dof)",
            "metric": "mi (mutual information: any modality pair), ncc (correlation) or mse (same intensities)",
            "init": "auto (best of identity, geometry, com by the metric), com, moments, geometry or identity",
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
    """Affine, then a dense displacement field optimised with MONAI's Warp, LNCC and bending energy."""

    needs_weights = False
    trainable = False

    def default_config(self) -> dict[str, Any]:
        return {"affine": AffineRegistration().default_config(), "loss": "lncc", "lncc_kernel": 5,
                "regulariser": "bending", "regularisation": 1.0, "levels": [4, 2], "iterations": [100, 50],
                "step_voxels": 0.1, "diffeomorphic": True, "integration_steps": 7, "strict": False,
                "device": "auto"}

    def settings_help(self) -> dict[str, str]:
        described = {f"affine.{key}": f"initial affine: {text}" for key, text in
                     AffineRegistration().settings_help().items()}
        return {
            **described,
            "loss": "lncc (local normalised cross-correlation), mse, or mi (global mutual information)",
            "lncc_kernel": "LNCC window, in voxels of each level",
            "regulariser": "bending (bending energy: smooth fields) or diffusion (first derivatives)",
            "regularisation": "weight of the regulariser against the similarity",
            "levels": "field grid spacing at each level, as multiples of the fixed image's finest spacing",
            "iterations": "Adam iterations at each level",
            "step_voxels": "Adam step, in voxels of each level",
            "diffeomorphic": "optimise a stationary velocity field, integrated by scaling and squaring",
            "integration_steps": "scaling-and-squaring steps (MONAI DVF2DDF)",
            "strict": "refuse an affine stage worse than identity or start, or scaled outside 0.7-1.4",
            "device": "auto (CUDA when available) or cpu",
        }

    def register(self, fixed: Image, moving: Image, model: Any, config: dict[str, Any], *,
                 fixed_mask: Image | None = None, moving_mask: Image | None = None
                 ) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
        device = device_of(config, model)
        return deformable_register(fixed, moving, config, device, fixed_mask, moving_mask)
