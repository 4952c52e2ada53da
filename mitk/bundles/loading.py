"""A bundle folder as a checkpoint of the plugin registered for its output format."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mitk.bundles.folder import Bundle, load_state_dict, read_bundle
from mitk.checkpoint import Checkpoint
from mitk.errors import CheckpointError
from mitk.plugin_manager import get_registry

PLUGIN_PREFIX = "monai-bundle-"
"""A bundle whose metadata says its output format is ``F`` runs through the plugin named ``monai-bundle-F``."""


def not_runnable(bundle: Bundle) -> str | None:
    """Why mitk does not run ``bundle`` (whatever plugins are installed), or None.

    A detection bundle (``lung_nodule_ct_detection``: boxes out, ``network_data_format.outputs`` of type
    ``object``) builds its backbone and box selector with Python calls (``$monai...resnet50(...)``,
    ``detector_ops``) and runs through its own inferer code (``scripts.detection_inferer``): the safe resolver
    evaluates no call and imports no bundle code, so such a bundle is refused with that reason."""
    inferer = bundle.inference.get("inferer")
    target = str(inferer.get("_target_", "")) if isinstance(inferer, dict) else ""
    if target.startswith("scripts.") or bundle.output.get("type") == "object":
        named = f" ({target})" if target.startswith("scripts.") else ""
        return ("detection bundles are not run yet: this one builds its detector with Python calls and runs "
                f"through the bundle's own inferer code{named}, which mitk's safe loader never evaluates or imports")
    return None


def bundle_plugin(bundle: Bundle) -> str:
    """The name of the installed plugin that runs ``bundle``, or a refusal naming the format."""
    name = PLUGIN_PREFIX + bundle.output_format
    reason = not_runnable(bundle) if name not in get_registry() else None
    if reason is not None:
        raise CheckpointError(reason, bundle.root)
    if name not in get_registry():
        known = sorted(n[len(PLUGIN_PREFIX):] for n in get_registry().names() if n.startswith(PLUGIN_PREFIX))
        raise CheckpointError(f"no installed plugin runs bundles whose output format is {bundle.output_format!r} "
                              f"(network_data_format.outputs in configs/metadata.json; runs: {', '.join(known)})",
                              bundle.root)
    return name


def bundle_task(path: str | Path) -> str:
    """The task of the plugin that runs the bundle at ``path``."""
    return str(get_registry().get(bundle_plugin(read_bundle(path))).task)


def bundle_checkpoint(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Checkpoint:
    """The bundle's tensors and configs, as the checkpoint of its plugin (the configs are its settings)."""
    bundle = read_bundle(path)
    plugin = bundle_plugin(bundle)
    pinned = (overrides or {}).get("torchscript_sha256")
    state = load_state_dict(bundle, pinned if isinstance(pinned, str) else None)
    entry = get_registry().get(plugin)
    return Checkpoint(state_dict=state, task=str(entry.task), plugin=plugin, path=bundle.root,
                      config={"bundle": bundle.inference, "metadata": bundle.metadata})


def describe_bundle(path: str | Path) -> dict[str, Any]:
    """What a bundle declares: name, version, task, plugin, input channels, labels, spacing, licence."""
    from mitk.bundles.resolver import SafeResolver

    bundle = read_bundle(path)
    document: dict[str, Any] = {"bundle": bundle.name, "version": bundle.metadata.get("version"),
                                "description": bundle.metadata.get("description"),
                                "output_format": bundle.output_format}
    try:
        plugin = bundle_plugin(bundle)
        document.update(plugin=plugin, task=str(get_registry().get(plugin).task))
    except CheckpointError as error:
        document.update(plugin=None, task=None, runnable=str(error))
    source = bundle.input
    document.update(modality=source.get("modality"), input_channels=source.get("num_channels"),
                    channel_names=list((source.get("channel_def") or {}).values()),
                    value_range=source.get("value_range"),
                    labels={str(k): v for k, v in (bundle.output.get("channel_def") or {}).items()})
    resolver = SafeResolver(bundle.inference)
    document["spacing"] = None
    if resolver.has("preprocessing#transforms"):
        for step in resolver.raw("preprocessing#transforms"):
            if isinstance(step, Mapping) and str(step.get("_target_", "")).endswith("Spacingd"):
                document["spacing"] = _resolved_pixdim(resolver, step)
    document["licence"] = bundle.licence() or bundle.metadata.get("copyright")
    document["weights"] = "models/model.pt" if (bundle.root / "models/model.pt").exists() else (
        "models/model.ts (TorchScript: needs --set torchscript_sha256=...)"
        if (bundle.root / "models/model.ts").exists() else None)
    return document


def _resolved_pixdim(resolver: Any, step: Mapping[str, Any]) -> Any:
    pixdim = step.get("pixdim")
    if isinstance(pixdim, str) and pixdim.startswith(("@", "$")):
        try:
            return resolver.resolve(pixdim, "pixdim")
        except CheckpointError:
            return pixdim
    return pixdim
