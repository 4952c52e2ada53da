"""``mitk evaluate <task>``: one command per task of the task table that names an evaluation, generated from
the options the task declares (:attr:`mitk.taskspec.TaskSpec.evaluation_options`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import typer

from mitk.cli.params import command
from mitk.options import JSON, OVERWRITE
from mitk.taskspec import Option, TaskSpec
from mitk.taskspecs import import_part, iter_tasks


def run_evaluation(spec: TaskSpec, values: dict[str, Any]) -> None:
    """Run the task's evaluation body and exit with the status it returns."""
    assert spec.evaluation is not None
    raise typer.Exit(import_part(spec.evaluation)(**values) or 0)


CROSSVAL_OPTIONS = (
    Option("run_dir", type=Path, argument=True, required=True,
           help="A folds run folder (mitk train ... --folds K): folds.json and fold_0/ ... fold_<K-1>/."),
    Option("monitor", ("--monitor",), str | None, None,
           "Pick each fold's best epoch from its log by this validation metric (e.g. mean_dice) instead of the "
           "metrics saved with its best checkpoint."),
    Option("csv_path", ("--csv",), Path | None, None, "Also write one row per fold and metric, then mean and sd."),
    Option("predict", ("--predict",), bool, False, "Also predict every case with the fold that validated it (its "
           "best checkpoint) and score the pooled out-of-fold predictions as `mitk evaluate <task>` does "
           "(classify: AUC, accuracy, ECE, uncertainty vs error; detect: mAP, FROC)."),
    Option("tta", ("--tta",), bool, False, "With --predict: test-time augmentation in every prediction."),
    JSON,
    OVERWRITE,
)


def run_crossval(values: dict[str, Any]) -> None:
    from mitk.errors import UsageError
    from mitk.evaluation.crossval import evaluate_crossval

    predict, tta = values.pop("predict"), values.pop("tta")
    if tta and not predict:
        raise UsageError("--tta needs --predict (the fold scores saved by training had no TTA)")
    pooled = None
    if predict:
        from mitk.training.out_of_fold import out_of_fold

        pooled = partial(out_of_fold, values["run_dir"], tta=tta)
    raise typer.Exit(evaluate_crossval(**values, out_of_fold=pooled) or 0)


def build_app() -> typer.Typer:
    """The ``evaluate`` command group: one command per task with an evaluation."""
    app = typer.Typer(rich_markup_mode=None, no_args_is_help=True,
                      help="Evaluate predictions against references: label maps, classes, boxes, registrations.")
    for spec in iter_tasks():
        if spec.evaluation is None:
            continue
        body = partial(run_evaluation, spec)
        doc = spec.evaluation_help or f"Evaluate {spec.name} results."
        verb = command(spec.name, spec.evaluation_options, body, doc)
        app.command(spec.name, epilog=spec.evaluation_epilog or None)(verb)
    doc = "Cross-validated metrics of a folds run: each fold's best validation metrics, their mean ± sd."
    app.command("crossval", epilog="Exit status: 0 scored; 1 failure; 2 usage error.")(
        command("crossval", CROSSVAL_OPTIONS, run_crossval, doc))
    return app
