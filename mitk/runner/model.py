"""Resolve plugin + checkpoint + user overrides into a ready model, once per command."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitk.bundles.loading import bundle_checkpoint, bundle_task
from mitk.checkpoint import Checkpoint, load_checkpoint
from mitk.enums import Task, task_name
from mitk.errors import CheckpointError, PluginError, UsageError
from mitk.nnunet.folder import is_model_folder
from mitk.nnunet.loading import nnunet_checkpoint, nnunet_task
from mitk.plugin import TaskPlugin
from mitk.plugin_manager import get_registry
from mitk.runner.ensemble import check_members_agree, is_fold_run, member_weights
from mitk.runner.fit import model_expectations
from mitk.settings import check_overrides, check_saved_config, settings_errors
from mitk.taskspecs import get_task

if TYPE_CHECKING:
    import torch

INFERENCE_PIECES = ("inference_transforms", "labels", "class_names", "inferer", "postprocess")
"""The plugin methods that turn the config into the pieces a task runner uses (those a plugin has)."""


@dataclass
class LoadedModel:
    """A plugin with its resolved configuration and (if it has one) its network in eval mode."""

    name: str
    task: Task | str
    plugin: TaskPlugin
    config: dict[str, Any]
    network: torch.nn.Module | None
    device: torch.device | str
    """A ``torch.device``; the string ``"cpu"`` for a classical plugin that runs without torch."""
    version: str | None = None
    checkpoint: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    expects: dict[str, Any] | None = None
    """What inputs the model was trained on or declares (:mod:`mitk.runner.fit`); None: not known, not checked."""
    members: tuple[Any, ...] = ()
    """An ensemble's networks (:mod:`mitk.runner.ensemble`), the first being :attr:`network`; empty for one model."""
    member_checkpoints: tuple[Path, ...] = ()
    """The checkpoint of each member of an ensemble."""
    member_configs: tuple[dict[str, Any], ...] = ()
    """The settings of each member of an ensemble: equal but for :data:`~mitk.runner.ensemble.PER_MEMBER` ones
    (a detector's anchors), which a runner that fuses the members' outputs gives each member."""

    @property
    def networks(self) -> tuple[Any, ...]:
        """Every network the model averages: the members of an ensemble, else the one network."""
        return self.members or ((self.network,) if self.network is not None else ())

    @property
    def classical(self) -> bool:
        """Loaded without torch: a plugin with ``needs_torch = False`` and no network (its array method runs)."""
        return self.network is None and not self.plugin.needs_torch


RUNNABLE_DEVICES = ("cpu", "cuda", "mps", "xpu")
"""Device types a model runs on; others (``meta`` holds no data, ``ipu``, ``hpu`` …) are refused by name."""


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (default) picks CUDA when available, else CPU; a device that cannot run a model (``meta``,
    an unavailable backend, a CUDA index beyond the GPUs present) is a :class:`UsageError`."""
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(str(device))
    except (RuntimeError, TypeError) as error:
        raise UsageError(f"invalid device {device!r}: {error}") from None
    if resolved.type not in RUNNABLE_DEVICES:
        raise UsageError(f"device {device!r} cannot run a model (use auto, cpu or cuda)")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} requested but CUDA is not available")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise UsageError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif resolved.type != "cpu":
        backend = getattr(torch.backends, resolved.type, None) if resolved.type == "mps" else getattr(
            torch, resolved.type, None)
        if backend is None or not backend.is_available():
            raise UsageError(f"device {device!r} requested but it is not available")
    return resolved


def load_model(task: Any, plugin: str | None, weights: str | Path | Sequence[str | Path] | None,
               overrides: dict[str, Any] | None = None, device: str | None = None,
               caller: str = "cli") -> LoadedModel:
    """Load the plugin named by ``plugin`` or by the checkpoint, apply the weights, and return it.

    ``weights`` may name an ensemble: a fold run folder (``folds.json``), a list of checkpoints, or their names
    comma-separated (:mod:`mitk.runner.ensemble`). ``caller`` (``"cli"`` or ``"api"``) words the errors for who
    asked: ``--weights FILE`` or ``weights=``.
    """
    api = caller == "api"
    members = member_weights(weights)
    if len(members) > 1 or is_fold_run(weights):
        return _load_ensemble(task, plugin, weights, members, overrides, device, caller)
    weights = members[0] if members else None
    task = task_name(get_task(task).name)
    checkpoint: Checkpoint | None = None
    if weights and is_model_folder(weights):
        checkpoint = nnunet_checkpoint(weights, overrides)  # an nnU-Net v2 model folder, weights-only loading
    elif weights and Path(weights).is_dir():
        checkpoint = bundle_checkpoint(weights, overrides)  # a MONAI bundle folder, read by the safe loader
    elif weights:
        checkpoint = load_checkpoint(weights)
    if checkpoint is not None and checkpoint.self_describing:
        if checkpoint.task != task:
            raise CheckpointError(f"checkpoint is for the {checkpoint.task} task, not {task}", weights)
        if plugin and plugin != checkpoint.plugin:
            raise CheckpointError(f"checkpoint was trained with plugin {checkpoint.plugin!r}, not {plugin!r} "
                                  f"({'name no plugin' if api else 'omit --plugin'} to use it)", weights)
        plugin = checkpoint.plugin
    if not plugin:
        raise UsageError("name a plugin (or give weights= with a mitk checkpoint)" if api else
                         "--plugin is required (or give --weights with a mitk checkpoint)")
    entry = get_registry().get(plugin, task)
    instance: TaskPlugin = entry.load()
    source = "settings=" if api else "--set"
    check_overrides(instance, overrides, source=source, name=plugin)
    saved = check_saved_config(instance, checkpoint.config, source=str(weights), name=plugin) if checkpoint else None
    if not instance.needs_torch and checkpoint is None and device in (None, "", "auto", "cpu"):
        return _classical(instance, plugin, task, entry.version, saved, overrides, source)
    resolved = resolve_device(device)
    network = None
    if checkpoint is None and instance.needs_weights:
        given = "weights=PATH" if api else "--weights FILE"
        raise PluginError(f"plugin {plugin!r} needs trained weights: give {given} "
                          f"(train one with `mitk train {task} --plugin {plugin}`)")
    with settings_errors(plugin, overrides, source=source, checkpoint=weights if checkpoint else None):
        config = instance.resolve_config(saved, overrides)
        try:  # a plugin's inference_network (e.g. a MONAI-free equal of its network), else its network
            network = getattr(instance, "inference_network", instance.network)(config)
        except NotImplementedError:
            network = None
        _build_inference_pieces(instance, config)
    if checkpoint is not None:
        if network is None:
            raise CheckpointError(f"plugin {plugin!r} has no network to load weights into", weights)
        missing, unexpected = _compatible(network, checkpoint.state_dict)
        _refuse_label_count(instance, config, network, checkpoint.state_dict, weights)
        if missing or unexpected:
            raise CheckpointError(
                f"weights do not fit plugin {plugin!r}'s network ({len(missing)} missing, "
                f"{len(unexpected)} unexpected tensors, e.g. {(missing + unexpected)[0]})", weights)
        network.load_state_dict(checkpoint.state_dict, strict=True)
    if network is not None:
        network = network.to(resolved).eval()
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        if resolved.type == "cpu" and getattr(instance, "cpu_kernels", True):
            from mitk.runner.cpu_kernels import apply_cpu_kernels

            apply_cpu_kernels(network)
    return LoadedModel(name=plugin, task=task, plugin=instance, config=config, network=network,
                       device=resolved, version=entry.version,
                       checkpoint=Path(weights) if weights else None,
                       metrics=checkpoint.metrics if checkpoint else {},
                       expects=model_expectations(config, checkpoint.expects if checkpoint else None, instance))


def _load_ensemble(task: Any, plugin: str | None, weights: Any, members: list[Path],
                   overrides: dict[str, Any] | None, device: str | None, caller: str) -> LoadedModel:
    """Each member loaded as one model, checked to agree (:func:`check_members_agree`), returned as the first
    with every member's network in :attr:`LoadedModel.members`."""
    loaded = [load_model(task, plugin, member, overrides, device, caller) for member in members]
    if any(model.network is None for model in loaded):
        raise CheckpointError("an ensemble needs networks: a member loaded without one", members[0])
    check_members_agree([model.config for model in loaded], [model.name for model in loaded], members)
    first = loaded[0]
    first.members = tuple(model.network for model in loaded)
    first.member_checkpoints = tuple(members)
    first.member_configs = tuple(model.config for model in loaded)
    if is_fold_run(weights):
        first.checkpoint = Path(weights)  # the run folder: its files are the model's (provenance, never overwritten)
    first.metrics = {"members": [model.metrics for model in loaded]}
    return first


def _classical(instance: TaskPlugin, plugin: str, task: str, version: str | None, saved: dict[str, Any] | None,
               overrides: dict[str, Any] | None, source: str) -> LoadedModel:
    """A plugin that runs without torch (``needs_torch = False``) on the CPU: its settings, no network. (Asked
    for another device, it takes the network path like any plugin.)"""
    with settings_errors(plugin, overrides, source=source, checkpoint=None):
        config = instance.resolve_config(saved, overrides)
        label_count(instance, config)  # a labels/class_names setting that does not fit fails here
    return LoadedModel(name=plugin, task=task, plugin=instance, config=config, network=None, device="cpu",
                       version=version, expects=model_expectations(config, None, instance))


def _build_inference_pieces(instance: TaskPlugin, config: dict[str, Any]) -> None:
    """Build what the task runner will build from ``config``, so that a setting that does not fit fails here."""
    for piece in INFERENCE_PIECES:
        build = getattr(instance, piece, None)
        if build is None:
            continue
        with contextlib.suppress(NotImplementedError):
            build(config)


def label_count(instance: TaskPlugin, config: dict[str, Any]) -> int | None:
    """How many outputs the plugin's settings name (its ``labels`` or ``class_names``), or None."""
    for piece in ("labels", "class_names"):
        build = getattr(instance, piece, None)
        if build is None:
            continue
        try:
            return len(build(config))
        except NotImplementedError:
            continue
    return None


def _refuse_label_count(instance: TaskPlugin, config: dict[str, Any], network: torch.nn.Module,
                        state: dict[str, torch.Tensor], weights: str | Path | None) -> None:
    """Refuse a checkpoint whose settings name another number of labels (or classes) than the output channels
    its weights have: the network built from those settings has ``n`` outputs where the saved one has ``m``,
    so loading would fail on an unexplained shape, or map channels to the wrong names."""
    count = label_count(instance, config)
    if count is None:
        return
    own = network.state_dict()
    for name, tensor in state.items():
        if name in own and tensor.ndim >= 1 and own[name].ndim == tensor.ndim and own[name].shape[0] == count \
                and tensor.shape[0] != count and tuple(own[name].shape[1:]) == tuple(tensor.shape[1:]):
            raise CheckpointError(f"the checkpoint's settings name {count} labels/classes but its weights have "
                                  f"{tensor.shape[0]} output channels ({name}): the labels do not belong to "
                                  "these weights", weights)


def _compatible(network: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    unexpected += [k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape)]
    return missing, unexpected


def resolve_task(plugin: str | None, weights: str | Path | Sequence[str | Path] | None, task: Any = None) -> str:
    """The task to load for: as given, else the plugin's, else the one the checkpoint names."""
    if task is not None:
        return get_task(task).name
    if plugin:
        return get_registry().get(plugin).task
    if weights:
        members = member_weights(weights)
        described = checkpoint_task(members[0]) if members else None
        if described is None:
            raise UsageError("the checkpoint does not say which plugin made it: give the plugin name "
                             "(mitk.load(\"unet\", weights=...))", members[0] if members else None)
        return get_task(described).name
    raise UsageError("give a plugin name or weights= (a mitk checkpoint names its plugin)")


def checkpoint_task(path: Path) -> str | None:
    """The task a mitk checkpoint was trained for, read from its metadata only (the tensors load later); for
    a MONAI bundle folder or an nnU-Net model folder, the task of the plugin that runs it."""
    if is_model_folder(path):
        return nnunet_task(path)
    if Path(path).is_dir():
        return bundle_task(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("task"):
            return str(metadata["task"])
    except Exception:  # not readable this way: load_checkpoint gives the one-line reason
        pass
    return load_checkpoint(path).task


def nested_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"a.b": 1}`` → ``{"a": {"b": 1}}``; nested mappings are kept as they are."""
    nested: dict[str, Any] = {}
    for key, value in (settings or {}).items():
        if not isinstance(key, str) or not all(part.strip() for part in key.split(".")):
            raise UsageError(f"setting {key!r}: keys are names, with dots to reach nested keys (a.b)")
        *parents, last = key.split(".")
        target = nested
        for depth, part in enumerate(parents):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise UsageError(f"setting {key!r}: {'.'.join(parents[: depth + 1])} was set to a value already")
        target[last] = dict(value) if isinstance(value, Mapping) else value
    return nested
