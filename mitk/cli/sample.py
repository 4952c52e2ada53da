"""``mitk sample``: write small real-anatomy training sets, made offline from packaged templates."""

from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import Annotated

import typer

from mitk.cli.common import JsonOption, OverwriteOption, emit_json, say

app = typer.Typer(
    rich_markup_mode=None,
    help="Make small sample data sets from real anatomy (no download).", no_args_is_help=True)


class SampleTask(str, enum.Enum):
    brain = "brain"
    tissue = "tissue"


@app.command("segment")
def segment(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-d", help="Folder for imagesTr/, labelsTr/, "
                                             "imagesTs/, labelsTs/ and dataset.json.")],
    cases: Annotated[int, typer.Option("--cases", help="Number of cases (about 1/6 each held out for "
                                       "validation and test).")] = 12,
    size: Annotated[int, typer.Option("--size", help="Voxels per side of each case's grid.")] = 48,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives identical files.")] = 0,
    task: Annotated[SampleTask, typer.Option("--task", help="brain: brain vs background; tissue: grey and "
                                             "white matter.")] = SampleTask.brain,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """A segmentation training set in Medical Segmentation Decathlon form, from the MNI152 T1 template
    under random affines, bias fields, contrast changes and noise."""
    import json

    from mitk.extras import require_module
    from mitk.sample import make_segmentation_sample

    require_module("nilearn", "mitk sample")  # before any check of the output folder
    started = time.perf_counter()
    dataset = make_segmentation_sample(output_dir, cases=cases, size=size, seed=seed, task=task.value,
                                       overwrite=overwrite)
    document = json.loads(dataset.read_text(encoding="utf-8"))
    summary = {"dataset": str(dataset), "task": task.value, "labels": document["labels"],
               "training": len(document["training"]), "validation": len(document["validation"]),
               "test": len(document["test"]), "size": size, "seed": seed,
               "seconds": round(time.perf_counter() - started, 3)}
    if as_json:
        emit_json(summary)
    else:
        say(f"sample {task.value}: {summary['training']} training, {summary['validation']} validation, "
            f"{summary['test']} test cases → {dataset}")


@app.command("classify")
def classify(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-d", help="Folder for images/, train.csv "
                                             "(image,label,split) and test.csv (image,label).")],
    cases: Annotated[int, typer.Option("--cases", help="Number of cases (about 1/6 each held out for "
                                       "validation and test).")] = 60,
    size: Annotated[int, typer.Option("--size", help="Pixels (voxels) per side.")] = 64,
    dims: Annotated[int, typer.Option("--dims", help="2: axial slices labelled cerebellum, ventricles or "
                                      "vertex by level; 3: volumes labelled normal or lesion.")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives identical files.")] = 0,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """A labelled classification set from the MNI152 T1 template: 2-D slices by anatomical level, or 3-D
    volumes with and without a planted lesion, under random geometry, contrast, bias fields and noise."""
    from mitk.sample import make_classification_sample

    started = time.perf_counter()
    summary = make_classification_sample(output_dir, cases=cases, size=size, seed=seed, dims=dims,
                                         overwrite=overwrite)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    if as_json:
        emit_json(summary)
    else:
        say(f"sample classify ({dims}-D; {', '.join(summary['classes'])}): {summary['training']} training, "
            f"{summary['validation']} validation, {summary['test']} test cases → {summary['train_csv']}, "
            f"{summary['test_csv']}")


@app.command("detect")
def detect(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-d", help="Folder for imagesTr/, imagesTs/, "
                                             "boxesTr/, boxesTs/ and dataset.json.")],
    cases: Annotated[int, typer.Option("--cases", help="Number of cases (about 1/6 each held out for "
                                       "validation and test).")] = 12,
    size: Annotated[int, typer.Option("--size", help="Voxels per side of each case's grid.")] = 48,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives identical files.")] = 0,
    real: Annotated[Path | None, typer.Option("--real", help="Also add the real lesions of a folder of "
                                              "<case>_image.nii.gz / <case>_label.nii.gz pairs (boxes from the "
                                              "labels' connected components).")] = None,
    dims: Annotated[int, typer.Option("--dims", help="3: volumes (boxes in world mm); 2: axial slices with "
                                      "discs (2-D NIfTI, boxes in pixel indices); --real is for 3 only.")] = 3,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """A detection training set: bright and dark spheres of known centre and radius planted in the MNI152 T1
    under random affines (or discs in its axial slices, --dims 2); boxes in world mm (RAS, MONAI box mode
    xyzxyz) or pixel indices (2-D) in dataset.json, and per case."""
    import json

    from mitk.extras import require_module
    from mitk.sample import make_detection_sample

    require_module("nilearn", "mitk sample")
    started = time.perf_counter()
    if real is not None and not real.is_dir():
        from mitk.errors import UsageError

        raise UsageError("--real: not a folder", real)
    dataset = make_detection_sample(output_dir, cases=cases, size=size, seed=seed, overwrite=overwrite, real=real,
                                    dims=dims)
    document = json.loads(dataset.read_text(encoding="utf-8"))
    boxes = sum(len(entry["box"]) for split in ("training", "validation", "test") for entry in document[split])
    summary = {"dataset": str(dataset), "task": "detect", "labels": document["labels"], "boxes": boxes,
               "training": len(document["training"]), "validation": len(document["validation"]),
               "test": len(document["test"]), "size": size, "seed": seed,
               "seconds": round(time.perf_counter() - started, 3)}
    if as_json:
        emit_json(summary)
    else:
        say(f"sample detect: {summary['training']} training, {summary['validation']} validation, "
            f"{summary['test']} test cases, {boxes} lesions → {dataset}")
