"""``mitk evaluate <task>``: one command per task of the task table that names an evaluation, generated from
the options the task declares (:attr:`mitk.taskspec.TaskSpec.evaluation_options`)."""

from __future__ import annotations

from functools import partial
from typing import Any

import typer

from mitk.cli.params import command
from mitk.taskspec import TaskSpec
from mitk.taskspecs import import_part, iter_tasks


def run_evaluation(spec: TaskSpec, values: dict[str, Any]) -> None:
    """Run the task's evaluation body and exit with the status it returns."""
    assert spec.evaluation is not None
    raise typer.Exit(import_part(spec.evaluation)(**values) or 0)


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
    return app
