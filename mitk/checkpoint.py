"""The one checkpoint format for every task: a safetensors file that describes itself.

Tensors are the network's ``state_dict``; the safetensors metadata holds JSON strings:

``mitk_format``   format version (``"1"``)
``task``          ``segment`` | ``classify`` | ``detect`` | ``register``
``plugin``        the plugin that built the network, and ``plugin_version``
``config``        the plugin's resolved configuration: network hyperparameters, labels, preprocessing
``metrics``       validation metrics at save time (optional)
``expects``       what the model was trained on: modality, colour, channels, dims, spacing and intensity ranges
                  (optional; :mod:`mitk.runner.fit` checks inputs against it)

Loading never unpickles: safetensors holds no code, and plain ``torch.save`` state dicts are read with
``torch.load(weights_only=True)``, which refuses pickled objects.
"""

from __future__ import annotations

import datetime as _dt
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitk.constants import __version__
from mitk.errors import CheckpointError
from mitk.io.atomic import atomic_path

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = "1"


@dataclass
class Checkpoint:
    """Weights plus what is needed to rebuild and use them."""

    state_dict: dict[str, torch.Tensor]
    task: str | None = None
    plugin: str | None = None
    plugin_version: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    expects: dict[str, Any] = field(default_factory=dict)
    """What the training images were (empty for a checkpoint from before mitk recorded it)."""

    @property
    def self_describing(self) -> bool:
        return self.task is not None and self.plugin is not None


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], *, task: str, plugin: str,
                    plugin_version: str | None, config: dict[str, Any],
                    metrics: dict[str, Any] | None = None, overwrite: bool = True,
                    expects: dict[str, Any] | None = None) -> Path:
    """Write a self-describing checkpoint atomically."""
    from safetensors.torch import save_file

    metadata = {
        "mitk_format": FORMAT_VERSION,
        "mitk_version": __version__,
        "task": task,
        "plugin": plugin,
        "plugin_version": plugin_version or "",
        "config": json.dumps(config, sort_keys=True),
        "metrics": json.dumps(metrics or {}, sort_keys=True),
        **({"expects": json.dumps(expects, sort_keys=True)} if expects else {}),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    with atomic_path(path, overwrite=overwrite) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return Path(path)


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 0 < length < path.stat().st_size and head[8:9] == b"{"


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint safely: a mitk safetensors file, plain safetensors, or a tensor-only ``.pt``."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError("is a directory; give the checkpoint file (*.safetensors)", path)
    if not path.is_file():
        raise CheckpointError("no such checkpoint file", path)
    if path.stat().st_size == 0:
        raise CheckpointError("empty checkpoint file", path)
    if _is_safetensors(path):
        return _load_safetensors(path)
    return _load_torch(path)


def _load_safetensors(path: Path) -> Checkpoint:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as error:
        raise CheckpointError(f"corrupt safetensors checkpoint ({error})", path) from None
    if "mitk_format" not in metadata:
        return Checkpoint(state_dict=state, path=path)
    if metadata["mitk_format"] != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {metadata['mitk_format']} is not supported by mitk "
                              f"{__version__} (supports {FORMAT_VERSION})", path)
    try:
        config = json.loads(metadata.get("config", "{}"))
        metrics = json.loads(metadata.get("metrics", "{}"))
        expects = json.loads(metadata.get("expects", "{}"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"checkpoint metadata is not valid JSON ({error})", path) from None
    except RecursionError:
        raise CheckpointError("checkpoint metadata is nested too deeply to read", path) from None
    return Checkpoint(state_dict=state, task=metadata.get("task"), plugin=metadata.get("plugin"),
                      plugin_version=metadata.get("plugin_version") or None, config=config,
                      metrics=metrics, path=path, expects=expects if isinstance(expects, dict) else {})


def _load_torch(path: Path) -> Checkpoint:
    import pickle

    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).splitlines()[0] if str(error) else "disallowed object"
        raise CheckpointError(
            "refused: the file holds pickled Python objects that could run code when loaded "
            f"({reason[:160]}); mitk loads safetensors or plain tensor state dicts only", path) from None
    except Exception as error:
        raise CheckpointError(f"not a readable checkpoint ({type(error).__name__}: {error})", path) from None
    if isinstance(payload, dict):
        for key in ("state_dict", "model", "network", "model_state_dict"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not all(hasattr(v, "shape") for v in payload.values()):
        raise CheckpointError("does not hold a state dict of tensors", path)
    return Checkpoint(state_dict=dict(payload), path=path)


def training_state_save(path: str | Path, state: dict[str, Any]) -> Path:
    """Save optimiser/scheduler state for ``--resume`` (plain containers of tensors and numbers)."""
    import torch

    with atomic_path(path, overwrite=True) as temporary:
        torch.save(state, temporary)
    return Path(path)


def training_state_load(path: str | Path) -> dict[str, Any]:
    import torch

    try:
        state: dict[str, Any] = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot resume from this training state ({type(error).__name__}: {error})",
                              path) from None
    return state
