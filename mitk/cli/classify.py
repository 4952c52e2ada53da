"""``mitk classify``: the classify verb, with a results table, ``--csv``, ``--multi-label`` and ``--explain``."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from mitk.cli.common import (
    STATE,
    AllowResampleOption,
    DeviceOption,
    ExecutorChoice,
    ExecutorOption,
    JsonOption,
    ManifestOption,
    OverwriteOption,
    PluginOption,
    SchedulerOption,
    SeriesOption,
    SetOption,
    ShardByOption,
    ShardOption,
    SkipExistingOption,
    WeightsOption,
    WorkersOption,
)
from mitk.enums import Task
from mitk.errors import UsageError
from mitk.executors import DEFAULT_EXECUTOR

PROBABILITY_PREFIX = "prob_"


def classify(
    inputs: Annotated[list[str], typer.Argument(help="Images: NIfTI files, DICOM files/folders/zips, PNG or JPEG "
                                                "pictures, folders of NIfTI files, or quoted globs.")],
    plugin: PluginOption = None,
    weights: WeightsOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the record of the one input "
                                                "here (JSON).")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-d", help="Write <input>_class.json "
                                                    "records (and --explain maps) here.")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Write one row per input: input, predicted, "
                                             "prob_<class> (the --pred of `mitk evaluate classify`).")] = None,
    multi_label: Annotated[bool | None, typer.Option("--multi-label/--single-label", help="Sigmoid per class "
                                                     "and every class at or above --threshold (default: as "
                                                     "trained).")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Probability at or above which a class "
                                                    "is predicted with --multi-label (default: as trained, "
                                                    "0.5).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Also write a Grad-CAM overlay <input>_gradcam.png "
                                          "(and, for volumes, the map as <input>_gradcam.nii.gz) beside the "
                                          "output or the input.")] = False,
    series: SeriesOption = None,
    allow_resample: AllowResampleOption = False,
    settings: SetOption = None,
    device: DeviceOption = "auto",
    overwrite: OverwriteOption = False,
    skip_existing: SkipExistingOption = False,
    manifest: ManifestOption = None,
    shard: ShardOption = None,
    shard_by: ShardByOption = "hash",
    executor: ExecutorOption = DEFAULT_EXECUTOR,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    as_json: JsonOption = False,
) -> None:
    """Classify images: print the predicted class and the probability of each class per input."""
    from mitk.cli.tasks import _policy, build_job, run_task_batch
    from mitk.io.atomic import check_output
    from mitk.io.inputs import expand_inputs

    if threshold is not None and not 0.0 < threshold < 1.0:
        raise UsageError("--threshold must lie between 0 and 1")
    policy = _policy(output, output_dir, overwrite, skip_existing)
    if csv is not None:
        if shard is not None:  # each shard would write (or replace) the one file with its own rows only
            raise UsageError("--csv writes one file for the whole batch and cannot be split over --shard; "
                             "use --manifest per shard (each record holds the probabilities) and "
                             "mitk manifest merge")
        check_output(csv, overwrite, inputs=tuple(case.path for case in expand_inputs(inputs)))
    rows: list[dict[str, Any]] = []

    def collect(record: Any) -> None:  # from the records, wherever the executor ran the cases
        if record.status == "ok":
            rows.append({"input": record.input, "predicted": record.details["predicted"],
                         **{PROBABILITY_PREFIX + name: p for name, p in record.details["probabilities"].items()}})

    build = partial(build_job, Task.CLASSIFY, policy=policy, series=series, allow_resample=allow_resample,
                    multi_label=multi_label, threshold=threshold, explain=explain)
    try:
        run_task_batch("classify", inputs, policy, build, plugin=plugin, weights=weights, settings=settings,
                       device=device, as_json=as_json, manifest=manifest, shard=shard, shard_by=shard_by,
                       executor=ExecutorChoice(executor, scheduler, workers), on_record=collect)
    except typer.Exit:
        if csv is not None and rows:
            _write_csv(rows, csv, overwrite)
        if rows and not as_json and not STATE.quiet:
            _print_table(rows)
        raise


def _relative(path: Path, csv: Path) -> str:
    """The input as the CSV names it: relative to the CSV's folder (so the CSV can move with the images),
    absolute when it lies on another drive."""
    import os

    try:
        return os.path.relpath(path.resolve(), csv.resolve().parent)
    except ValueError:
        return str(path.resolve())


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    names = list(dict.fromkeys(key for row in rows for key in row if key.startswith(PROBABILITY_PREFIX)))
    return ["input", "predicted", *names]


def _write_csv(rows: list[dict[str, Any]], path: Path, overwrite: bool) -> None:
    from mitk.io.atomic import atomic_path
    from mitk.runner.outputs import write_csv

    with atomic_path(path, overwrite=overwrite) as temporary:
        write_csv([{**row, "input": _relative(Path(row["input"]), path)} for row in rows], temporary,
                  _columns(rows))


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    columns = _columns(rows)
    table = Table(box=None, pad_edge=False)
    table.add_column("input", overflow="fold")
    table.add_column("predicted")
    for column in columns[2:]:
        table.add_column(column[len(PROBABILITY_PREFIX):], justify="right")
    for row in rows:
        table.add_row(row["input"], row["predicted"], *(f"{row[c]:.4f}" if c in row else "" for c in columns[2:]))
    Console(highlight=False).print(table)
