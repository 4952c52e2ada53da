"""``mitk train --init CHECKPOINT``: start a run from trained weights.

The weights are read with the safe loaders only (:func:`mitk.checkpoint.load_checkpoint`: safetensors or a
tensor-only ``torch.load(weights_only=True)``; a MONAI bundle folder through
:func:`mitk.bundles.loading.bundle_checkpoint`). Layers are matched by name and shape. A layer of the network
that the checkpoint lacks or holds with another shape (say, a head for a different number of classes) is
listed in one message and refused, or, with ``skip_mismatched``, left at its fresh initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitk.errors import CheckpointError

if TYPE_CHECKING:
    import torch

SHOWN = 8
"""Mismatched layers named in the message (the rest are counted)."""


@dataclass
class InitialWeights:
    """The tensors to load into a fresh network, and what was left out."""

    path: Path
    state: dict[str, torch.Tensor]
    skipped: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """What the run's config records about its starting weights."""
        return {"checkpoint": str(self.path), "loaded": len(self.state), "reinitialised": self.skipped,
                "unused": len(self.unused)}


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a mitk checkpoint, a plain safetensors/tensor-only ``.pt`` file or a bundle folder."""
    path = Path(path)
    if path.is_dir():
        from mitk.bundles.loading import bundle_checkpoint

        return dict(bundle_checkpoint(path).state_dict)
    from mitk.checkpoint import load_checkpoint

    return dict(load_checkpoint(path).state_dict)


def _strip_prefix(state: dict[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
    """Drop a common wrapper prefix (``module.``, ``model.``, ``network.``) when that makes names match."""
    for prefix in ("module.", "model.", "network.", "net."):
        if all(name.startswith(prefix) for name in state):
            stripped = {name[len(prefix):]: tensor for name, tensor in state.items()}
            if len(wanted & set(stripped)) > len(wanted & set(state)):
                return stripped
    return state


def _shape(tensor: Any) -> str:
    return "×".join(str(int(side)) for side in tensor.shape) or "scalar"


def match_weights(path: str | Path, network_state: dict[str, torch.Tensor], skip_mismatched: bool = False
                  ) -> InitialWeights:
    """The checkpoint's tensors that fit ``network_state`` by name and shape; refuses mismatched layers
    unless ``skip_mismatched``, and a checkpoint of which no layer fits in any case."""
    path = Path(path)
    source = _strip_prefix(read_weights(path), set(network_state))
    matched: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    skipped: list[str] = []
    for name, tensor in network_state.items():
        if name not in source:
            problems.append(f"{name} (not in the checkpoint)")
            skipped.append(name)
        elif tuple(source[name].shape) != tuple(tensor.shape):
            problems.append(f"{name} (checkpoint {_shape(source[name])}, network {_shape(tensor)})")
            skipped.append(name)
        else:
            matched[name] = source[name].to(dtype=tensor.dtype)
    if not matched:
        raise CheckpointError("no layer of the checkpoint matches the network by name and shape (another "
                              "architecture or network settings?)", path)
    if problems and not skip_mismatched:
        shown = "; ".join(problems[:SHOWN]) + (f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN
                                                 else "")
        raise CheckpointError(f"{len(problems)} of {len(network_state)} layers do not match the network: {shown}. "
                              "Add --init-skip-mismatched to start them afresh", path)
    unused = sorted(set(source) - set(network_state))
    return InitialWeights(path=path, state=matched, skipped=skipped, unused=unused)
