"""``mitk plan DATA``: fingerprint a segmentation data set and write the training plan `mitk train` uses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitk.cli.common import JsonOption, OverwriteOption, emit_json, say

EPILOG = ("Writes DATA/mitk-plan.json (or --output FILE): the plugin's spacing, patch size, network widths and "
          "intensity normalisation, the batch size, and the fingerprint they came from. `mitk train` uses "
          "DATA/mitk-plan.json when it exists (or --plan FILE; --no-plan ignores it); --set, --patch-size, "
          "--batch-size and --config still win. Edit the file to change the plan.")


def plan(
    data: Annotated[Path, typer.Argument(help="A segmentation datalist JSON or an imagesTr/labelsTr folder.")],
    plugin: Annotated[str, typer.Option("--plugin", "-p", help="The plugin to plan for: unet or segresnet.")]
    = "unet",
    device: Annotated[str, typer.Option("--device", help="Plan for auto (CUDA when available), cpu or "
                                        "cuda[:N].")] = "auto",
    memory_gb: Annotated[float | None, typer.Option("--memory-gb", help="Memory budget of one training step "
                                                    "(default: min(8, 0.8 × GPU memory) on CUDA, a quarter "
                                                    "of the RAM up to 8 on the CPU).")] = None,
    gflop: Annotated[float | None, typer.Option("--gflop", help="Compute budget of one training step in GFLOP "
                                                "(default on the CPU: 25 per torch thread; none on CUDA).")]
    = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="The plan file (default "
                                                "DATA/mitk-plan.json).")] = None,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Fingerprint a data set as nnU-Net does and derive the training settings from it."""
    from mitk.errors import OutputExistsError, UsageError
    from mitk.training.planning import PLANNED_PLUGINS, default_plan_path

    if plugin not in PLANNED_PLUGINS:  # refused before the data is read
        raise UsageError(f"mitk plan configures the plugins {', '.join(PLANNED_PLUGINS)}, not {plugin!r}")
    if (memory_gb is not None and memory_gb <= 0) or (gflop is not None and gflop <= 0):
        raise UsageError("--memory-gb and --gflop must be positive")
    target = output or default_plan_path(data)
    if target.exists() and not overwrite:  # refused before the data is read
        raise OutputExistsError("a plan exists already (use --overwrite to replace it)", target)

    from mitk.training.fingerprint import fingerprint_datalist
    from mitk.training.planning import device_budget, make_plan, write_plan

    budget = device_budget(device, memory_gb, gflop)
    document = make_plan(fingerprint_datalist(data), plugin, budget)
    path = write_plan(document, target, overwrite=overwrite)
    summary = {"plan": str(path), "plugin": plugin, **document["settings"], **document["training"],
               "budget": document["budget"], "estimate": document["estimate"], "modality": document["modality"],
               "cases": document["fingerprint"]["cases"]}
    if as_json:
        emit_json(summary)
        return
    settings = document["settings"]
    spacing = "×".join(f"{v:g}" for v in settings["spacing"])
    patch = "×".join(str(v) for v in settings["patch_size"])
    say(f"plan for {plugin} on {summary['cases']} cases ({', '.join(document['modality'])}): spacing {spacing} mm, "
        f"patch {patch}, network {settings['network']}, batch {document['training']['batch_size']}, "
        f"intensity {settings['intensity']['mode']} ({budget.device}: ~{document['estimate']['gflop_per_step']} "
        f"GFLOP, {document['estimate']['memory_gb']} GB a step) → {path}")
