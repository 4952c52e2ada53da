"""An nnU-Net model folder as the checkpoint of the ``nnunet`` plugin, and what ``mitk info`` shows of it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mitk.checkpoint import Checkpoint
from mitk.errors import CheckpointError, UsageError
from mitk.nnunet.checkpoint import load_fold
from mitk.nnunet.folder import ModelFolder, read_model_folder
from mitk.plugin_manager import get_registry

PLUGIN = "nnunet"


def parse_folds(value: Any) -> list[str]:
    """``0`` / ``"0,1"`` / ``"0 1"`` / ``[0, 1]`` / ``"all"`` (nnU-Net's ``fold_all``) → ``["0", "1"]`` …"""
    if isinstance(value, bool) or value is None:
        raise UsageError(f"folds must name folds (0, 0,1 or all), got {value!r}")
    items = value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
    folds = [str(item).strip() for item in items]
    if not folds or not all(f == "all" or f.isdigit() for f in folds):
        raise UsageError(f"folds must name folds (0, 0,1 or all), got {value!r}")
    return list(dict.fromkeys(str(int(f)) if f.isdigit() else f for f in folds))


def chosen_folds(folder: ModelFolder, value: Any) -> list[str]:
    """The folds to run: those asked for, or by default every numbered fold with a checkpoint (as nnU-Net's
    ``-f`` left out), or ``all`` when it is the only one."""
    present = folder.folds()
    if value in (None, "", "auto"):
        numbered = [f for f in present if f != "all"]
        if not (numbered or present):
            raise CheckpointError("has no fold_*/checkpoint_final.pth or checkpoint_best.pth", folder.root)
        return numbered or present
    folds = parse_folds(value)
    missing = [f for f in folds if f not in present]
    if missing:
        raise CheckpointError(f"has no checkpoint for fold {', '.join(missing)} (present: "
                              f"{', '.join(present) or 'none'})", folder.root)
    return folds


def label_names(dataset: Mapping[str, Any], root: Path | None = None) -> dict[int, str]:
    """``dataset.json`` labels as value → name; region-based models (a label that is a list) are refused."""
    labels = dataset.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise CheckpointError("dataset.json has no labels", root)
    if any(not isinstance(v, int) for v in labels.values()):
        raise CheckpointError("dataset.json: region-based labels (lists of labels, sigmoid outputs) are not run "
                              "by mitk", root)
    named = {int(v): str(k) for k, v in labels.items() if str(k) != "ignore"}
    if sorted(named) != list(range(len(named))):
        raise CheckpointError(f"dataset.json: labels must be 0..N-1, got {sorted(named)}", root)
    return dict(sorted(named.items()))


def channel_names(dataset: Mapping[str, Any]) -> list[str]:
    """The input channels (``channel_names``, or the older ``modality``), in order."""
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    return [str(channels[k]) for k in sorted(channels, key=lambda k: int(k))] if isinstance(channels, Mapping) \
        else []


def nnunet_checkpoint(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Checkpoint:
    """The chosen folds' tensors (``fold_F.`` before each name) and the folder's JSON, as the ``nnunet``
    plugin's checkpoint; ``overrides`` may choose ``folds`` and ``checkpoint`` (final, best, auto)."""
    folder = read_model_folder(path)
    overrides = overrides or {}
    folds = chosen_folds(folder, overrides.get("folds"))
    which = str(overrides.get("checkpoint") or "auto")
    state: dict[str, Any] = {}
    trainer = configuration = ""
    axes: tuple[int, ...] | None = None
    for n, fold in enumerate(folds):
        weights = load_fold(folder.checkpoint_file(fold, which))
        if n == 0:
            trainer, configuration, axes = weights.trainer, weights.configuration, weights.mirror_axes
        elif weights.configuration != configuration:
            raise CheckpointError(f"fold_{fold} was trained for {weights.configuration}, fold_{folds[0]} for "
                                  f"{configuration}", folder.root)
        state.update({f"fold_{fold}.{key}": tensor for key, tensor in weights.state_dict.items()})
    configuration = configuration or folder.configuration
    if configuration not in (folder.plans.get("configurations") or {}):
        raise CheckpointError(f"plans.json has no configuration {configuration!r}", folder.root)
    config = {"plans": folder.plans, "dataset": folder.dataset, "configuration": configuration,
              "trainer": trainer or folder.trainer, "folds": folds,
              "mirror_axes": list(axes) if axes is not None else None}
    task = str(get_registry().get(PLUGIN).task)
    return Checkpoint(state_dict=state, task=task, plugin=PLUGIN, path=folder.root, config=config)


def nnunet_task(path: str | Path) -> str:
    read_model_folder(path)
    return str(get_registry().get(PLUGIN).task)


def describe_model_folder(path: str | Path) -> dict[str, Any]:
    """Dataset, labels, channels, configuration, target spacing, patch size, folds and trainer of a folder."""
    folder = read_model_folder(path)
    configuration = (folder.plans.get("configurations") or {}).get(folder.configuration) or {}
    return {"nnunet_model": str(folder.root), "dataset": folder.dataset_name, "task": "segment",
            "plugin": PLUGIN, "trainer": folder.trainer, "plans": str(folder.plans.get("plans_name")),
            "configuration": folder.configuration, "channels": channel_names(folder.dataset),
            "labels": {str(k): v for k, v in label_names(folder.dataset, folder.root).items()},
            "target_spacing": _image_order(configuration.get("spacing"), folder.plans),
            "patch_size": configuration.get("patch_size"),
            "normalization": configuration.get("normalization_schemes"), "folds": folder.folds(),
            "checkpoints": sorted({p.name for f in folder.folds() for p in (folder.root / f"fold_{f}").glob("*.pth")}),
            "licence": folder.dataset.get("licence") or folder.dataset.get("license")}


def _image_order(spacing: Any, plans: Mapping[str, Any]) -> Any:
    """nnU-Net's spacing (its array axes: SimpleITK's z, y, x after ``transpose_forward``) in x, y, z order."""
    if not isinstance(spacing, list) or len(spacing) != 3:
        return spacing
    backward = plans.get("transpose_backward") or [0, 1, 2]
    return [spacing[i] for i in backward][::-1]
