"""The task table: every row's parts exist and fit, and the CLI's verbs come from it."""

from __future__ import annotations

import inspect

import pytest
import typer.main

from mitk.cli import app
from mitk.enums import Task
from mitk.errors import UsageError
from mitk.tasks import TaskPlugin
from mitk.taskspecs import TASKS, derived_suffixes, get_task, import_part
from mitk.training.recipe import TrainingRecipe


@pytest.mark.parametrize("task", list(Task))
def test_every_task_has_a_row_whose_parts_fit(task: Task) -> None:
    spec = get_task(task.value)
    base = spec.base_class()
    assert issubclass(base, TaskPlugin) and base.task == task
    runner = import_part(spec.runner)  # a class, or a factory whose return annotation names the classes
    assert inspect.isclass(runner) or (inspect.isfunction(runner) and "Runner" in str(
        inspect.signature(runner).return_annotation)), runner
    assert callable(import_part(spec.job))
    assert inspect.isclass(import_part(spec.result))
    assert spec.suffix.startswith("_") and spec.extension.startswith(".")
    if spec.recipe is not None:
        recipe = spec.load_recipe()
        assert isinstance(recipe, TrainingRecipe) and recipe.task == task
    else:
        with pytest.raises(UsageError, match="no training recipe"):
            spec.load_recipe()


def _commands(group: str | None = None) -> set[str]:
    command = typer.main.get_command(app)
    if group is not None:
        command = command.commands[group]  # type: ignore[attr-defined]
    return set(command.commands)  # type: ignore[attr-defined]


def test_cli_verbs_train_and_evaluate_commands_come_from_the_table() -> None:
    assert {spec.name for spec in TASKS.values()} <= _commands()
    assert _commands("train") == {spec.name for spec in TASKS.values() if spec.trainable}
    task_free = {"crossval"}  # scores a folds run of any task (mitk/evaluation/crossval.py)
    assert _commands("evaluate") == {spec.name for spec in TASKS.values() if spec.evaluation} | task_free


def test_derived_suffixes_are_the_image_outputs() -> None:
    # previews are PNGs
    assert set(derived_suffixes()) == {"_seg", "_prob", "_entropy", "_preview", "_warped", "_gradcam"}


def test_unknown_task_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown task 'segmentation'"):
        get_task("segmentation")
