"""The registration plugin base: what a registration plugin hands the runner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mitk.enums import Task
from mitk.plugin import TaskPlugin

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mitk.image import Image


class RegistrationPlugin(TaskPlugin):
    """Aligns a moving image to a fixed one.

    A classical plugin overrides :meth:`register`. A learned plugin instead supplies a network (and its
    ``inference_transforms``): the runner resamples the moving image onto the fixed grid, passes both through
    the transforms (so they share the network grid), asks :meth:`predict_displacement` for a dense displacement
    in network-grid voxels, and brings it back onto the fixed grid in millimetres.
    """

    __module__ = "mitk.tasks"  # its public home (re-exported there)

    task = Task.REGISTER
    required_methods = ("register",)

    def requirements(self) -> tuple[str, ...]:
        """A learned plugin (no ``register`` of its own) needs a network and its transforms instead."""
        return ("network", "inference_transforms") if self.is_learned() else self.required_methods

    def register(self, fixed: Image, moving: Image, model: torch.nn.Module | None, config: dict[str, Any]
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Return ``(matrix, displacement)``: a 4×4 fixed-world → moving-world matrix (RAS mm) and/or a
        displacement field ``(I, J, K, 3)`` in mm on the fixed grid, either may be ``None`` (a third item, a
        report dict, is optional).

        Masks are an optional extension: a plugin whose ``register`` also declares the keywords
        ``fixed_mask=None, moving_mask=None`` (or ``**kwargs``) receives the user's masks there, as ``uint8`` 0/1
        :class:`~mitk.image.Image` s on the fixed / moving image's own grid (the runner resamples them onto it
        and refuses empty ones), and only when the user gives them. A plugin without these keywords keeps
        working; asking it for masks is a one-line error."""
        raise NotImplementedError

    def predict_displacement(self, network: torch.nn.Module, fixed: torch.Tensor, moving: torch.Tensor,
                             config: dict[str, Any]) -> torch.Tensor:
        """A learned plugin's dense displacement field ``(B, 3, *spatial)`` in voxels of the network grid, for
        preprocessed ``fixed`` and ``moving`` batches ``(B, C, *spatial)`` on that grid, such that
        ``warped(p) = moving(p + ddf(p))`` (MONAI ``Warp``'s convention). Default: the network on the
        channels ``[moving, fixed]``, as MONAI's VoxelMorph and LocalNet take them."""
        import torch

        displacement: torch.Tensor = network(torch.cat([moving, fixed], dim=1))
        return displacement

    @classmethod
    def is_learned(cls) -> bool:
        """True when the plugin leaves :meth:`register` to the runner's learned path."""
        return cls.register is RegistrationPlugin.register
