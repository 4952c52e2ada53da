"""``mitk plan DATA``: fingerprint a segmentation, classification or detection data set and write the training
plan `mitk train` uses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mitk.cli.common import JsonOption, OverwriteOption, emit_json, say

EPILOG = ("Writes DATA/mitk-plan.json (or --output FILE): the plugin's spacing, patch or input size, network "
          "widths, intensity normalisation, augmentation, class weights (classify) or anchors (detect), the batch "
          "size, and the fingerprint they came from. `mitk train` uses "
          "DATA/mitk-plan.json when it exists (or --plan FILE; --no-plan ignores it); --set, --patch-size, "
          "--batch-size and --config still win. Edit the file to change the plan.")


def plan(
    data: Annotated[Path, typer.Argument(help="The training data as `mitk train` takes it: a segmentation "
                                         "datalist or imagesTr/labelsTr folder, a classification CSV/JSON/"
                                         "folder, a box datalist.")],
    plugin: Annotated[str, typer.Option("--plugin", "-p", help="The plugin to plan for: unet or segresnet "
                                        "(segment), densenet121 or resnet (classify), retinanet (detect).")]
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
    from mitk.training.planning import default_plan_path, planned_task

    task = planned_task(plugin)  # an unplanned plugin is refused before the data is read
    if (memory_gb is not None and memory_gb <= 0) or (gflop is not None and gflop <= 0):
        raise UsageError("--memory-gb and --gflop must be positive")
    target = output or default_plan_path(data)
    if target.exists() and not overwrite:  # refused before the data is read
        raise OutputExistsError("a plan exists already (use --overwrite to replace it)", target)

    from mitk.training.plan_data import plan_data
    from mitk.training.planning import device_budget, write_plan

    budget = device_budget(device, memory_gb, gflop)
    document = plan_data(data, plugin, budget)
    path = write_plan(document, target, overwrite=overwrite)
    summary = {"plan": str(path), "task": task, "plugin": plugin, **document["settings"], **document["training"],
               "budget": document["budget"], "estimate": document["estimate"], "modality": document["modality"],
               "cases": document["fingerprint"]["cases"]}
    if as_json:
        emit_json(summary)
        return
    settings = document["settings"]
    if task != "segment":
        say(_summary_line(task, plugin, document, budget.device, path))
        return
    spacing = "×".join(f"{v:g}" for v in settings["spacing"])
    patch = "×".join(str(v) for v in settings["patch_size"])
    say(f"plan for {plugin} on {summary['cases']} cases ({', '.join(document['modality'])}): spacing {spacing} mm, "
        f"patch {patch}, network {settings['network']}, batch {document['training']['batch_size']}, "
        f"intensity {settings['intensity']['mode']} ({budget.device}: ~{document['estimate']['gflop_per_step']} "
        f"GFLOP, {document['estimate']['memory_gb']} GB a step) → {path}")


def _summary_line(task: str, plugin: str, document: dict[str, Any], device: str, path: Path) -> str:
    """One line saying what a classification or detection plan chose."""
    settings, estimate = document["settings"], document["estimate"]
    cost = f"({device}: ~{estimate['gflop_per_step']} GFLOP, {estimate['memory_gb']} GB a step) → {path}"
    head = f"plan for {plugin} on {document['fingerprint']['cases']} cases ({', '.join(document['modality'])}"
    batch = document["training"]["batch_size"]
    if task == "classify":
        size = "×".join(str(v) for v in settings["image_size"])
        weights = ", ".join(f"{n} {w:g}" for n, w in zip(settings["class_names"], settings["class_weights"] or [],
                                                          strict=False))
        flips = settings["augmentation"]["flip_axes"]
        return (f"{head}, {settings['spatial_dims']}-D): input {size}, network {settings['network']}, batch {batch}, "
                f"intensity {settings['intensity']['mode']}, class weights {weights}, flip axes {flips} {cost}")
    spacing = "×".join(f"{v:g}" for v in settings["spacing"][: settings["spatial_dims"]])
    patch = "×".join(str(v) for v in settings["sampling"]["patch_size"][: settings["spatial_dims"]])
    anchors = " ".join("×".join(f"{v:g}" for v in s[: settings["spatial_dims"]])
                       for s in settings["anchors"]["base_shapes"])
    levels, width = len(settings["backbone"]["returned_layers"]) + 1, settings["backbone"]["block_inplanes"][0]
    return (f"{head}, {settings['spatial_dims']}-D, {document['fingerprint']['boxes']['count']} boxes): spacing "
            f"{spacing} mm, patch {patch}, anchors {anchors} voxels × {levels} levels, width {width}, batch {batch}, "
            f"flips {'on' if settings['augment_flip'] else 'off'} {cost}")
