"""The task verbs: ``mitk segment``, ``classify``, ``detect`` and ``register``. One batch contract for all."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from mitk.cli.common import (
    BATCH_EPILOG,
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
    emit_json,
    message_text,
    parse_settings,
    say,
    stderr_console,
)
from mitk.enums import Task
from mitk.errors import UsageError
from mitk.executors import DEFAULT_EXECUTOR
from mitk.taskspecs import get_task, import_part, iter_tasks

if TYPE_CHECKING:
    from mitk.runner.shards import Shard

InputsArgument = Annotated[list[str], typer.Argument(help="Images: NIfTI files, DICOM files/folders/zips, "
                                                          "folders of NIfTI files, or quoted globs.")]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="Output file (one input only).")]
OutputDirOption = Annotated[Path | None, typer.Option("--output-dir", "-d", help="Directory for outputs, "
                                                      "named <input>_<suffix>.")]
LOCAL = ExecutorChoice()


def build_job(task: Task | str, model: Any, policy: Any, *args: Any, **options: Any) -> Any:
    """The task's batch job for ``model`` (its ``make_job`` in the task table): a module-level function, so
    that ``functools.partial(build_job, task, policy=..., ...)`` pickles and can travel to workers."""
    make_job = import_part(get_task(task).job)
    return make_job(model, policy, *args, **options)


def run_task_batch(task: str, inputs: list[str], policy: Any, build: Callable[[Any], Any], *,
                   plugin: str | None, weights: Path | None, settings: list[str] | None, device: str,
                   as_json: bool, manifest: Path | None, shard: str | None = None, shard_by: str = "hash",
                   executor: ExecutorChoice = LOCAL, on_record: Callable[[Any], None] | None = None) -> None:
    """Expand inputs, load the model once (per worker), run every case, report, and exit with the batch status.

    ``build(model) -> job`` must pickle for executors that run cases elsewhere (a partial of
    :func:`build_job`). ``on_record`` sees every record as it is kept. Everything the command line can get
    wrong (output over an input, an unwritable output folder or manifest, an executor that is not installed)
    is refused before the model loads. SIGINT/SIGTERM stop after dropping the cases in progress: the summary
    (and with ``--json`` the document so far) is printed and the exit status is 130/143.
    With ``shard`` (``"I/N"``) only that shard's inputs run (:mod:`mitk.runner.shards`).
    """
    from mitk.io.atomic import check_name_length, refuse_inputs
    from mitk.io.inputs import expand_inputs
    from mitk.runner.batch import Interrupted, keep_records
    from mitk.runner.shards import SPLITS, Shard, ends_mid_line, manifest_header

    if shard_by not in SPLITS:
        raise UsageError(f"--shard-by must be {' or '.join(SPLITS)}, not {shard_by!r}")
    if shard is None and shard_by != "hash":
        raise UsageError("--shard-by chooses how --shard splits the inputs: add --shard I/N")
    part = Shard.parse(shard, shard_by) if shard is not None else None
    cases = expand_inputs(inputs)
    if not cases:
        raise UsageError("no inputs given")
    policy.prepare(cases)  # every input of the cohort: no shard writes over another shard's input
    batch, total = cases, len(cases)
    if part is not None:
        cases = part.select(batch)
    overrides = parse_settings(settings)

    from mitk.executors import ExecutorOptions, JobRecipe
    from mitk.plugin_manager import get_registry

    if executor.name == DEFAULT_EXECUTOR and (executor.scheduler is not None or executor.workers is not None):
        raise UsageError("--scheduler and --workers choose where another executor runs: add --executor dask")
    executor_entry = get_registry().executor(executor.name)
    console = stderr_console()
    options = ExecutorOptions(workers=executor.workers, scheduler=executor.scheduler, debug=STATE.debug,
                              log_error=lambda text: console.print(text, markup=False, emoji=False))  # --debug
    recipe = JobRecipe(task=task, plugin=plugin, weights=weights, device=device, settings=overrides, build=build)

    with contextlib.ExitStack() as stack:
        runner = stack.enter_context(executor_entry.build(options))  # a missing extra fails before any file opens
        handle: IO[str] | None = None
        if manifest is not None:  # a bad manifest path fails before the model is loaded
            refuse_inputs(manifest, policy.inputs)
            check_name_length(manifest)
            try:
                handle = stack.enter_context(manifest.open("a", encoding="utf-8"))
            except OSError as error:
                raise UsageError(f"cannot open the manifest ({error.strerror or error})", manifest) from None
            if ends_mid_line(manifest):  # a killed run's last line, cut short: start a new one
                handle.write("\n")
            if part is not None:  # a shard's manifest starts with what it was assigned
                handle.write(json.dumps(manifest_header(task, part, [str(case.path) for case in cases], batch))
                             + "\n")
        if part is not None and not cases:
            _empty_shard(task, part, total, plugin, as_json)
        model = runner.load(recipe)  # as mitk.load, once in this process or once per worker
        progress = _progress(console, len(cases), task, stack)
        interrupted: Interrupted | None = None

        def keep(record: Any) -> None:
            if on_record is not None:
                on_record(record)
            _on_record(console, record, progress)

        try:
            records = runner.run(cases)
            report = keep_records(cases, records if part is None else part.stamp(records), manifest=handle,
                                  on_record=keep, log_error=options.log_error if STATE.debug else None)
        except Interrupted as stop:
            if stop.report is None:
                raise
            interrupted, report = stop, stop.report
    order = {str(case.path): index for index, case in enumerate(cases)}
    report.records.sort(key=lambda record: order.get(record.input, len(order)))  # as given, whatever ran them
    summary = report.summary()
    exit_code = report.exit_code if interrupted is None else interrupted.exit_code
    document: dict[str, Any] = {
        "task": task, "plugin": model.name, "plugin_version": model.version,
        "weights": str(weights) if weights else None, "device": model.device,
        "summary": summary, "exit_code": exit_code, "cases": [r.to_dict() for r in report.records]}
    if part is not None:
        document.update(shard=part.index, shards=part.count, shard_by=part.by)
    if executor.name != DEFAULT_EXECUTOR:
        document["executor"] = executor.name
    if interrupted is not None:
        document.update(interrupted=report.interrupted, not_done=report.not_done)
        console.print(message_text(f"mitk: interrupted ({report.interrupted}): {len(report.not_done)} of "
                                   f"{len(cases)} inputs not done; run again with --skip-existing to finish"))
    if as_json:
        emit_json(document)
    if not STATE.quiet or interrupted is not None:
        label = task if part is None else f"{task} shard {part}"
        console.print(message_text(f"{label}: {summary['ok']} ok, {summary['skipped']} skipped, "
                                   f"{summary['failed']} failed of {summary['total']}"))
    raise typer.Exit(exit_code)


def _empty_shard(task: str, part: Shard, total: int, plugin: str | None, as_json: bool) -> None:
    """A shard that none of the inputs fall in: nothing to do, and not an error (the model is not loaded)."""
    from mitk.runner.batch import BatchReport

    if as_json:
        emit_json({"task": task, "plugin": plugin, "shard": part.index, "shards": part.count, "shard_by": part.by,
                   "summary": BatchReport().summary(), "exit_code": 0, "cases": []})
    say(f"{task} shard {part}: no inputs fall in this shard ({total} in all); nothing to do")
    raise typer.Exit(0)


def _progress(console: Any, total: int, task: str, stack: contextlib.ExitStack) -> Any:
    if STATE.quiet or not console.is_terminal or total < 2:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
    stack.enter_context(progress)
    progress.add_task(task, total=total)
    return progress


def _on_record(console: Any, record: Any, progress: Any) -> None:
    """One line per finished input, as plain text: file names are never read as markup."""
    if record.status == "failed":
        console.print(message_text(record.error or "failed", label="failed", style="red"))
    elif not STATE.quiet:
        target = f" → {record.output}" if record.output else ""
        console.print(message_text(f"{record.input}{target} ({record.seconds:.1f} s)", label=record.status,
                                   style="green"))
    if progress is not None:
        progress.advance(progress.task_ids[0])


def _policy(output: Path | None, output_dir: Path | None, overwrite: bool, skip_existing: bool,
            also_inputs: tuple[Path, ...] = ()) -> Any:
    from mitk.runner.outputs import OutputPolicy

    return OutputPolicy(output=output, output_dir=output_dir, overwrite=overwrite, skip_existing=skip_existing,
                        also_inputs=also_inputs)


def segment(
    inputs: InputsArgument,
    plugin: PluginOption = None,
    weights: WeightsOption = None,
    output: OutputOption = None,
    output_dir: OutputDirOption = None,
    output_format: Annotated[str, typer.Option("--format", help="nifti (default) or dicom-seg (DICOM input "
                                               "only).")] = "nifti",
    probabilities: Annotated[bool, typer.Option("--probabilities", help="Also write per-label probability "
                                                "maps (<out>_prob.nii.gz).")] = False,
    stats: Annotated[bool, typer.Option("--stats", help="Also write per-label statistics (<out>_stats.csv).")]
    = False,
    preview: Annotated[bool, typer.Option("--preview", help="Also write an overlay preview "
                                          "(<out>_preview.png).")] = False,
    series: SeriesOption = None,
    allow_resample: AllowResampleOption = False,
    deidentify: Annotated[bool, typer.Option("--deidentify", help="Apply the DICOM PS3.15 basic profile to "
                                             "DICOM outputs.")] = False,
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
    """Segment images into integer label maps on each input's exact grid (default <input>_seg.nii.gz)."""
    if output_format not in ("nifti", "dicom-seg"):
        raise UsageError(f"--format must be nifti or dicom-seg, not {output_format!r}")
    from mitk.extras import require_segment_extras  # before the model loads: a missing extra is a usage error
    require_segment_extras(preview=preview, dicom_seg=output_format == "dicom-seg")
    policy = _policy(output, output_dir, overwrite, skip_existing)
    build = partial(build_job, Task.SEGMENT, policy=policy, probabilities=probabilities, stats=stats,
                    preview=preview, output_format=output_format, series=series, allow_resample=allow_resample,
                    deidentify=deidentify)
    run_task_batch("segment", inputs, policy, build, plugin=plugin, weights=weights, settings=settings,
                   device=device, as_json=as_json, manifest=manifest, shard=shard, shard_by=shard_by,
                   executor=ExecutorChoice(executor, scheduler, workers))


def register(
    fixed: Annotated[Path, typer.Argument(help="Fixed image: the grid the output lives on.")],
    moving: Annotated[list[str], typer.Argument(help="Moving image(s) to align to the fixed one.")],
    plugin: PluginOption = None,
    weights: WeightsOption = None,
    output: OutputOption = None,
    output_dir: OutputDirOption = None,
    transform: Annotated[Path | None, typer.Option("--transform", help="Write the transform: .tfm/.txt (ITK, "
                                                   "LPS), .json (RAS and LPS matrices), or .nii.gz (ITK "
                                                   "displacement field on the fixed grid).")] = None,
    series: SeriesOption = None,
    fixed_series: Annotated[str | None, typer.Option("--fixed-series", help="DICOM series of the fixed image "
                                                     "(default: --series, applied to each image).")] = None,
    allow_resample: AllowResampleOption = False,
    fixed_mask: Annotated[Path | None, typer.Option("--fixed-mask", help="Label image (non-zero inside): the "
                                                    "metric is sampled only there (affine, deformable).")] = None,
    moving_mask: Annotated[Path | None, typer.Option("--moving-mask", help="Label image on the moving image: "
                                                     "only samples mapped inside it count (one moving image)."
                                                     )] = None,
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
    """Register moving images to a fixed image; write each moving image resampled on the fixed grid."""
    masks = tuple(path for path in (fixed_mask, moving_mask) if path is not None)
    policy = _policy(output, output_dir, overwrite, skip_existing, also_inputs=(fixed, *masks))
    if transform is not None and len(moving) > 1:
        raise UsageError("--transform names one file; give one moving image")
    if moving_mask is not None and len(moving) > 1:
        raise UsageError("--moving-mask belongs to one moving image; give one moving image")

    build = partial(build_job, Task.REGISTER, policy=policy, fixed_path=fixed, transform=transform, series=series,
                    fixed_series=fixed_series, allow_resample=allow_resample, fixed_mask=fixed_mask,
                    moving_mask=moving_mask)
    run_task_batch("register", moving, policy, build, plugin=plugin, weights=weights, settings=settings,
                   device=device, as_json=as_json, manifest=manifest, shard=shard, shard_by=shard_by,
                   executor=ExecutorChoice(executor, scheduler, workers))


def detect(
    inputs: InputsArgument,
    plugin: PluginOption = None,
    weights: WeightsOption = None,
    output: OutputOption = None,
    output_dir: OutputDirOption = None,
    output_format: Annotated[str, typer.Option("--format", help="json (default) or dicom-sr: a TID 1500 "
                                               "Comprehensive 3D SR (DICOM input only), with the JSON beside it."
                                               )] = "json",
    csv: Annotated[bool, typer.Option("--csv", help="Also write the boxes as CSV (<out>_boxes.csv).")] = False,
    preview: Annotated[bool, typer.Option("--preview", help="Also write the slices through each box centre "
                                          "(<out>_boxes_preview.png).")] = False,
    coordinates: Annotated[str, typer.Option("--coordinates", help="World convention of the mm columns: RAS "
                                             "(NIfTI, default) or LPS (DICOM, ITK).")] = "RAS",
    series: SeriesOption = None,
    allow_resample: AllowResampleOption = False,
    deidentify: Annotated[bool, typer.Option("--deidentify", help="Apply the DICOM PS3.15 basic profile to "
                                             "DICOM outputs.")] = False,
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
    """Detect objects: boxes in voxel indices and world mm with scores (<input>_boxes.json with -o/-d or any
    file output)."""
    if output_format not in ("json", "dicom-sr"):
        raise UsageError(f"--format must be json or dicom-sr, not {output_format!r}")
    system = coordinates.upper()
    if system not in ("RAS", "LPS"):
        raise UsageError(f"--coordinates must be RAS or LPS, not {coordinates!r}")
    from mitk.extras import require_module

    if preview:
        require_module("matplotlib", "--preview")
    if output_format == "dicom-sr":
        require_module("highdicom", "--format dicom-sr")
    policy = _policy(output, output_dir, overwrite, skip_existing)
    build = partial(build_job, Task.DETECT, policy=policy, series=series, allow_resample=allow_resample, csv=csv,
                    preview=preview, output_format=output_format, coordinate_system=system, deidentify=deidentify)
    run_task_batch("detect", inputs, policy, build, plugin=plugin, weights=weights, settings=settings,
                   device=device, as_json=as_json, manifest=manifest, shard=shard, shard_by=shard_by,
                   executor=ExecutorChoice(executor, scheduler, workers))


from mitk.cli.classify import classify  # noqa: E402  (it uses run_task_batch, defined above)

TASK_VERBS: dict[Task, Callable[..., None]] = {Task.SEGMENT: segment, Task.CLASSIFY: classify,
                                                 Task.DETECT: detect, Task.REGISTER: register}
"""The verb of each task in the task table (a task row without one is a start-up error, caught by the tests)."""


def add_task_commands(app: typer.Typer) -> None:
    """One verb per task of the task table."""
    for spec in iter_tasks():
        command = TASK_VERBS[spec.task]
        app.command(spec.name, epilog=BATCH_EPILOG, rich_help_panel="Tasks")(command)
