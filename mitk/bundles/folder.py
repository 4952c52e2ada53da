"""A bundle folder on disk: its two config files and its weights, read without leaving the folder."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitk.errors import CheckpointError
from mitk.io.model_folder import folder_file, read_json_object

METADATA = "configs/metadata.json"
INFERENCE = "configs/inference.json"
WEIGHTS = "models/model.pt"
TORCHSCRIPT = "models/model.ts"
LICENCE_FILES = ("LICENSE", "LICENSE.txt", "LICENCE")
MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    """The parsed configs of a MONAI bundle; nothing in them has been built or run."""

    root: Path
    metadata: dict[str, Any]
    inference: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.root.resolve().name)

    @property
    def output(self) -> dict[str, Any]:
        """``network_data_format.outputs.pred`` (or the first output) of the metadata."""
        outputs = (self.metadata.get("network_data_format") or {}).get("outputs") or {}
        return dict(outputs.get("pred") or next(iter(outputs.values()), {}))

    @property
    def input(self) -> dict[str, Any]:
        inputs = (self.metadata.get("network_data_format") or {}).get("inputs") or {}
        return dict(inputs.get("image") or next(iter(inputs.values()), {}))

    @property
    def output_format(self) -> str:
        """What the network's output is, in the metadata's words: ``segmentation``, ``classes`` …"""
        return str(self.output.get("format") or "unknown")

    def file(self, relative: str) -> Path:
        """``relative`` inside the bundle; a link or name that leads outside it is refused."""
        return inside(self.root, relative)

    def licence(self) -> str | None:
        """The first line of the bundle's licence file, if it has one."""
        for name in LICENCE_FILES:
            path = self.root / name
            if path.is_file() and not path.is_symlink():
                with path.open(encoding="utf-8", errors="replace") as handle:
                    for line in handle:
                        if line.strip():
                            return line.strip()
        return None


def is_bundle(path: str | Path) -> bool:
    """True for a folder that has ``configs/inference.json`` (the rest is checked by :func:`read_bundle`)."""
    path = Path(path)
    return path.is_dir() and (path / INFERENCE).is_file()



def read_bundle(path: str | Path) -> Bundle:
    """Read ``configs/metadata.json`` and ``configs/inference.json`` (JSON only; YAML bundles are refused)."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError("no such bundle folder", root)
    if not (root / INFERENCE).is_file():
        yaml = (root / "configs" / "inference.yaml").is_file()
        raise CheckpointError("configs/inference.yaml: only JSON bundle configs are read" if yaml else
                              "is a folder but not a MONAI bundle (no configs/inference.json)", root)
    metadata = read_json(root, METADATA) if (root / METADATA).exists() else {}
    return Bundle(root=root, metadata=metadata, inference=read_json(root, INFERENCE))




def load_state_dict(bundle: Bundle, torchscript_sha256: str | None = None) -> dict[str, Any]:
    """The network's tensors: ``models/model.pt`` with ``torch.load(weights_only=True)``; ``models/model.ts``
    only when its sha256 is pinned (TorchScript holds code), and then only its tensors are kept."""
    import torch

    weights = bundle.root / WEIGHTS
    if weights.exists():
        path = bundle.file(WEIGHTS)
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{WEIGHTS} is not a plain tensor file (refused by weights_only loading: "
                                  f"{reason[:200]})", bundle.root) from None
        return _tensors(loaded, bundle.root)
    script = bundle.root / TORCHSCRIPT
    if not script.exists():
        raise CheckpointError(f"the bundle has no {WEIGHTS}", bundle.root)
    path = bundle.file(TORCHSCRIPT)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not torchscript_sha256:
        raise CheckpointError(f"{TORCHSCRIPT} is TorchScript, which holds code: refused unless you pin it with "
                              f"--set torchscript_sha256={digest} (after checking where it comes from)", bundle.root)
    if torchscript_sha256.lower() != digest:
        raise CheckpointError(f"{TORCHSCRIPT} has sha256 {digest}, not the pinned {torchscript_sha256}", bundle.root)
    module = torch.jit.load(str(path), map_location="cpu")
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _tensors(loaded: Any, root: Path) -> dict[str, Any]:
    import torch

    if isinstance(loaded, dict) and set(loaded) == {"model"} and isinstance(loaded["model"], dict):
        loaded = loaded["model"]  # CheckpointLoader's {"model": state_dict}
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{WEIGHTS} is not a state dict of tensors", root)
    return dict(loaded)


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refused when the name or a link on the way leads out of the bundle folder."""
    return folder_file(root, relative, "bundle folder")


def read_json(root: Path, relative: str) -> dict[str, Any]:
    """A JSON object of the bundle folder, at most MAX_CONFIG_BYTES bytes."""
    return read_json_object(root, relative, MAX_CONFIG_BYTES, "bundle folder")
