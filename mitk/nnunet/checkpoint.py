"""nnU-Net's checkpoint pickles, loaded with ``torch.load(weights_only=True)`` and an allow-list: no code runs.

A ``checkpoint_final.pth`` holds the network's tensors and, beside them, the optimiser state, the training log
(lists of numpy scalars), the trainer's init arguments (plans and dataset JSON, a ``torch.device``), its name and
the mirroring axes it allows at inference. torch's weights-only unpickler builds only tensors, containers and
primitive values; the numpy scalar and dtype classes of the log are added here, for this load only
(``torch.serialization.safe_globals``), never process-wide. Anything else (a class of the trainer, a function
to call) is refused with a one-line error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitk.errors import CheckpointError


@dataclass(frozen=True)
class FoldWeights:
    """What mitk reads from one fold's checkpoint."""

    state_dict: dict[str, Any]
    trainer: str
    configuration: str
    mirror_axes: tuple[int, ...] | None


def numpy_globals() -> list[Any]:
    """The numpy classes nnU-Net's training log pickles: scalars (``multiarray.scalar``), dtypes and their
    per-type dtype classes (numpy 2 pickles ``np.dtypes.Float32DType`` and its kin)."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [scalar, np.dtype, *dtypes]


def load_fold(path: Path) -> FoldWeights:
    """The tensors, trainer, configuration and mirroring axes of one nnU-Net checkpoint, safely."""
    import torch

    try:
        with torch.serialization.safe_globals(numpy_globals()):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        lines = str(error).strip().splitlines()
        reason = next((line.strip() for line in lines if "GLOBAL" in line or "global" in line),
                      lines[0] if lines else type(error).__name__)
        raise CheckpointError(f"refused: not a plain nnU-Net checkpoint (weights-only loading: {reason[:200]})",
                              path) from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("network_weights"), dict):
        raise CheckpointError("is not an nnU-Net checkpoint (no network_weights)", path)
    state = loaded["network_weights"]
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("network_weights holds something other than tensors", path)
    init: dict[str, Any] = loaded["init_args"] if isinstance(loaded.get("init_args"), dict) else {}
    axes = loaded.get("inference_allowed_mirroring_axes")
    return FoldWeights(state_dict={str(k): v for k, v in state.items()},
                       trainer=str(loaded.get("trainer_name") or ""),
                       configuration=str(init.get("configuration") or ""),
                       mirror_axes=tuple(int(a) for a in axes) if axes is not None else None)
