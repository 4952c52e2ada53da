"""``affine``, ``deformable``, ``syn`` and ``voxelmorph``: registration plugins.

Registration only: the plugin classes (and torch/monai) load from :mod:`mitk_builtin._registration` and
:mod:`mitk_builtin._registration_learned` when a plugin is first used.
"""

from __future__ import annotations

from mitk import hookimpl
from mitk.registry import PluginRegistrar

_CLASSICAL = "mitk_builtin._registration"


@hookimpl
def mitk_register_plugins(register: PluginRegistrar) -> None:
    register("affine", task="register", factory=f"{_CLASSICAL}:AffineRegistration",
             summary="rigid/similarity/affine: sampled mutual information (or NCC, MSE), 3-level pyramid, torch")
    register("deformable", task="register", factory=f"{_CLASSICAL}:DeformableRegistration",
             summary="affine, then a symmetric diffeomorphic field (greedy SyN-like: smoothed MI updates)")
    register("syn", task="register", factory=f"{_CLASSICAL}:SyNRegistration",
             summary="ANTs-style staged preset: rigid, then affine, then the deformable stage")
    register("voxelmorph", task="register", factory="mitk_builtin._registration_learned:VoxelMorphRegistration",
             summary="MONAI VoxelMorph (learned, diffeomorphic); train with `mitk train register`")
