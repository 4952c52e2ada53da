"""An nnU-Net v2 model folder on disk: its JSON files, its folds, and its checkpoints loaded without code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitk.errors import CheckpointError
from mitk.io.model_folder import folder_file, read_json_object

DATASET = "dataset.json"
PLANS = "plans.json"
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
MAX_JSON_BYTES = 8 * 1024 * 1024
FOLD = re.compile(r"^fold_(\d+|all)$")


@dataclass(frozen=True)
class ModelFolder:
    """A training output folder ``TRAINER__PLANS__CONFIGURATION`` with its JSON files read; no tensor loaded."""

    root: Path
    dataset: dict[str, Any]
    plans: dict[str, Any]

    @property
    def trainer(self) -> str:
        return self.root.name.split("__")[0]

    @property
    def configuration(self) -> str:
        """The configuration the folder's name ends with (``3d_fullres`` …); the checkpoints say it too."""
        parts = self.root.name.split("__")
        return parts[-1] if len(parts) == 3 else ""

    @property
    def dataset_name(self) -> str:
        return str(self.plans.get("dataset_name") or self.root.parent.name)

    def folds(self) -> list[str]:
        """The folds that have a checkpoint, numbered ones first in order, ``all`` last."""
        found = [m.group(1) for p in self.root.iterdir() if p.is_dir() and (m := FOLD.match(p.name))
                 and any((p / name).is_file() for name in CHECKPOINTS)]
        return sorted((f for f in found if f != "all"), key=int) + (["all"] if "all" in found else [])

    def checkpoint_file(self, fold: str, which: str = "auto") -> Path:
        """``fold_F/checkpoint_final.pth`` (``which="final"``), ``checkpoint_best.pth`` (``"best"``), or with
        ``"auto"`` the final one where it exists, else the best."""
        names = {"final": CHECKPOINTS[:1], "best": CHECKPOINTS[1:], "auto": CHECKPOINTS}.get(which)
        if names is None:
            raise CheckpointError(f"checkpoint must be final, best or auto, not {which!r}", self.root)
        for name in names:
            path = self.root / f"fold_{fold}" / name
            if path.is_file():
                return inside(self.root, f"fold_{fold}/{name}")
        raise CheckpointError(f"fold_{fold} has no {' or '.join(names)} (folds with a checkpoint: "
                              f"{', '.join(self.folds()) or 'none'})", self.root)


def _is_training_folder(path: Path) -> bool:
    return (path / DATASET).is_file() and (path / PLANS).is_file() and any(
        p.is_dir() and FOLD.match(p.name) for p in path.iterdir())


def is_model_folder(path: str | Path) -> bool:
    """True for an nnU-Net training output folder, or a dataset folder that holds one or more of them."""
    path = Path(path)
    if not path.is_dir():
        return False
    return _is_training_folder(path) or any(p.is_dir() and _is_training_folder(p) for p in path.iterdir())


def find_training_folder(path: Path) -> Path:
    """``path`` itself, or the one training folder inside a dataset folder; several: a one-line refusal."""
    if _is_training_folder(path):
        return path
    inner = sorted(p for p in path.iterdir() if p.is_dir() and _is_training_folder(p))
    if len(inner) == 1:
        return inner[0]
    if not inner:
        raise CheckpointError("is not an nnU-Net model folder (no dataset.json, plans.json and fold_*)", path)
    raise CheckpointError(f"holds {len(inner)} nnU-Net configurations, name one: "
                          f"{', '.join(p.name for p in inner)}", path)


def read_model_folder(path: str | Path) -> ModelFolder:
    """Read ``dataset.json`` and ``plans.json`` of the model folder at (or inside) ``path``."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError("no such nnU-Net model folder", root)
    root = find_training_folder(root)
    return ModelFolder(root=root, dataset=read_json(root, DATASET), plans=read_json(root, PLANS))


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refused when the name or a link on the way leads out of the model folder."""
    return folder_file(root, relative, "model folder")


def read_json(root: Path, relative: str) -> dict[str, Any]:
    """A JSON object of the model folder, at most MAX_JSON_BYTES bytes."""
    return read_json_object(root, relative, MAX_JSON_BYTES, "model folder")
