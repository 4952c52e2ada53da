"""The task verbs, one per row of the task table (``mitk segment``, ``classify``, ``detect``, ``register`` and any
a plugin adds), generated from the shared batch options and the options each task declares. One batch contract
for all: inputs expanded once, outputs checked before the model loads, a record per case, an exit status."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable
from functools import cache, partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import typer

from mitk import options as shared
from mitk.cli.common import (
    BATCH_EPILOG,
    STATE,
    ExecutorChoice,
    emit_json,
    message_text,
    parse_settings,
    say,
    stderr_console,
)
from mitk.cli.params import command
from mitk.errors import UsageError
from mitk.taskspec import Option, TaskSpec, VerbPlan
from mitk.taskspecs import derived_suffixes, import_part, iter_tasks

if TYPE_CHECKING:
    from mitk.runner.shards import Shard

DEFAULT_EXECUTOR = shared.EXECUTOR.default
LOCAL = ExecutorChoice()


def run_task_batch(task: str, inputs: list[str], policy: Any, build: Callable[[Any], Any], *,
                   plugin: str | None, weights: Path | None, settings: list[str] | None, device: str,
                   as_json: bool, manifest: Path | None, shard: str | None = None, shard_by: str = "hash",
                   executor: ExecutorChoice = LOCAL, on_record: Callable[[Any], None] | None = None) -> None:
    """Expand inputs, load the model once (per worker), run every case, report, and exit with the batch status.

    ``build(model) -> job`` must pickle for executors that run cases elsewhere (a partial of
    :func:`mitk.executors.build_job`). ``on_record`` sees every record as it is kept. Everything the command line
    can get wrong (output over an input, an unwritable output folder or manifest, an executor that is not
    installed) is refused before the model loads. SIGINT/SIGTERM stop after dropping the cases in progress: the summary
    (and with ``--json`` the document so far) is printed and the exit status is 130/143.
    With ``shard`` (``"I/N"``) only that shard's inputs run (:mod:`mitk.runner.shards`).
    """
    from mitk.io.atomic import check_name_length, refuse_inputs
    from mitk.io.inputs import expand_inputs
    from mitk.io.limits import check_limits
    from mitk.runner.batch import Interrupted, keep_records
    from mitk.runner.shards import SPLITS, Shard, ends_mid_line, manifest_header

    if shard_by not in SPLITS:
        raise UsageError(f"--shard-by must be {' or '.join(SPLITS)}, not {shard_by!r}")
    if shard is None and shard_by != "hash":
        raise UsageError("--shard-by chooses how --shard splits the inputs: add --shard I/N")
    part = Shard.parse(shard, shard_by) if shard is not None else None
    check_limits()  # a malformed MITK_MAX_IMAGE_BYTES is a usage error, not a failure of every case
    cases = expand_inputs(inputs, derived_suffixes())
    if not cases:
        raise UsageError("no inputs given")
    policy.prepare(cases)  # every input of the cohort: no shard writes over another shard's input
    batch, total = cases, len(cases)
    if part is not None:
        cases = part.select(batch)
    overrides = parse_settings(settings)

    from mitk.executors import ExecutorOptions, JobRecipe, build_executor
    from mitk.plugin_manager import get_registry

    if executor.name == DEFAULT_EXECUTOR and (executor.scheduler is not None or executor.workers is not None):
        raise UsageError("--scheduler and --workers choose where another executor runs: add --executor dask")
    executor_entry = get_registry().executor(executor.name)
    console = cache(stderr_console)  # made when something is printed: a quiet call that prints nothing skips rich
    options = ExecutorOptions(workers=executor.workers, scheduler=executor.scheduler, debug=STATE.debug,
                              log_error=lambda text: console().print(text, markup=False, emoji=False))  # --debug
    request = {"plugin": plugin, "weights_path": str(weights.absolute()) if weights else None, "device": device,
               "overrides": overrides}  # kept in each record's provenance, for mitk replay
    plain_build: Any = build
    build = partial(plain_build, provenance_request=request)
    recipe = JobRecipe(task=task, plugin=plugin, weights=weights, device=device, settings=overrides, build=build)

    with contextlib.ExitStack() as stack:
        # a missing extra fails before any file opens
        runner = stack.enter_context(build_executor(executor_entry, options))
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
        console().print(message_text(f"mitk: interrupted ({report.interrupted}): {len(report.not_done)} of "
                                   f"{len(cases)} inputs not done; run again with --skip-existing to finish"))
    if as_json:
        emit_json(document)
    if not STATE.quiet or interrupted is not None:
        label = task if part is None else f"{task} shard {part}"
        console().print(message_text(f"{label}: {summary['ok']} ok, {summary['skipped']} skipped, "
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


def _progress(console: Callable[[], Any], total: int, task: str, stack: contextlib.ExitStack) -> Any:
    if STATE.quiet or not console().is_terminal or total < 2:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console(), transient=True)
    stack.enter_context(progress)
    progress.add_task(task, total=total)
    return progress


def _on_record(console: Callable[[], Any], record: Any, progress: Any) -> None:
    """One line per finished input, as plain text: file names are never read as markup."""
    if record.status == "failed":
        console().print(message_text(record.error or "failed", label="failed", style="red"))
    elif not STATE.quiet:
        target = f" → {record.output}" if record.output else ""
        console().print(message_text(f"{record.input}{target} ({record.seconds:.1f} s)", label=record.status,
                                   style="green"))
    if progress is not None:
        progress.advance(progress.task_ids[0])


def run_verb(spec: TaskSpec, values: dict[str, Any]) -> None:
    """A task verb: the task checks its options and says what to run (``spec.verb``); the batch runs here."""
    from mitk.executors import build_job
    from mitk.io.atomic import model_files
    from mitk.runner.imports import lean_monai_import
    from mitk.runner.outputs import OutputPolicy

    lean_monai_import()  # a process that runs a model: MONAI, if imported, without what inference never uses
    plan: VerbPlan = import_part(spec.verb)(values)
    policy = OutputPolicy(output=values["output"], output_dir=values["output_dir"], overwrite=values["overwrite"],
                          skip_existing=values["skip_existing"], also_inputs=plan.also_inputs,
                          model=model_files(values["weights"]))  # the model is an input too
    build = partial(build_job, spec.name, policy=policy, series=values["series"],
                    allow_resample=values["allow_resample"], **plan.job_options)
    try:
        run_task_batch(spec.name, plan.inputs, policy, build, plugin=values["plugin"], weights=values["weights"],
                       settings=values["settings"], device=values["device"], as_json=values["as_json"],
                       manifest=values["manifest"], shard=values["shard"], shard_by=values["shard_by"],
                       executor=ExecutorChoice(values["executor"], values["scheduler"], values["workers"]),
                       on_record=plan.on_record)
    except typer.Exit:
        if plan.finish is not None:
            plan.finish()
        raise


def verb_options(spec: TaskSpec) -> list[Option]:
    """The verb's parameters: its arguments, the model options, its own options, then the batch options. A task's
    option named like a shared one replaces it in place (classify's wording of ``--output``)."""
    own = {option.name: option for option in spec.options}

    def shared_or_own(group: Iterable[Option]) -> list[Option]:
        return [own.pop(option.name, option) for option in group]

    head = shared_or_own(spec.arguments if spec.arguments is not None else (shared.INPUTS,))
    head += shared_or_own(shared.MODEL_OPTIONS)
    tail = shared_or_own(shared.BATCH_OPTIONS)
    return [*head, *own.values(), *tail]


def task_names() -> list[str]:
    """The task verbs of the task table in use."""
    return [spec.name for spec in iter_tasks()]


def add_task_commands(app: typer.Typer, only: str | None = None) -> None:
    """One verb per task of the task table (with ``only``, that task's verb alone)."""
    for spec in iter_tasks():
        if only is not None and spec.name != only:
            continue
        body = partial(run_verb, spec)
        verb = command(spec.name, verb_options(spec), body, spec.verb_help or spec.summary)
        app.command(spec.name, epilog=BATCH_EPILOG, rich_help_panel="Tasks")(verb)
