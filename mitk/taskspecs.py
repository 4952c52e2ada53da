"""The task table: every registered task (:class:`~mitk.taskspec.TaskSpec`), looked up by name.

mitk's four tasks and any a third-party package adds are registered through the ``mitk_register_tasks`` hook
(:mod:`mitk.hookspecs`) into the process-wide registry (:func:`mitk.plugin_manager.get_registry`); this module
reads them. The CLI verbs, the Python API's task calls, plugin checks and the derived-output suffixes that
folder inputs skip are all made from this table, so adding a task is one package plus one registered row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mitk.enums import task_name
from mitk.errors import UsageError
from mitk.plugin_manager import get_registry
from mitk.taskspec import Option, TaskSpec, VerbPlan, import_part

__all__ = ["TASKS", "Option", "TaskSpec", "VerbPlan", "derived_suffixes", "get_task", "import_part", "iter_tasks",
           "task_names"]


def iter_tasks() -> Iterator[TaskSpec]:
    """The registered tasks, built-ins first, in the order they were registered."""
    return iter(get_registry().tasks.values())


def task_names() -> tuple[str, ...]:
    """The names of the registered tasks (their verbs)."""
    return tuple(get_registry().tasks)


def get_task(task: Any) -> TaskSpec:
    """The spec of ``task`` (a name, or a :class:`~mitk.enums.Task`); a usage error names the known tasks."""
    name = getattr(task, "value", task)
    spec = get_registry().tasks.get(str(name))
    if spec is None:
        raise UsageError(f"unknown task {name!r} (known: {', '.join(task_names())})")
    return spec


def derived_suffixes() -> tuple[str, ...]:
    """Name suffixes of the image files mitk writes (main outputs and image companions)."""
    suffixes: list[str] = []
    for spec in iter_tasks():
        if spec.image_output:
            suffixes.append(spec.suffix)
        suffixes.extend(spec.image_companions)
    return tuple(dict.fromkeys(suffixes))


class _Table(Mapping[str, TaskSpec]):
    """:data:`TASKS`: the live table as a read-only mapping, name → spec (a :class:`~mitk.enums.Task` works as
    a key too)."""

    def __getitem__(self, task: Any) -> TaskSpec:
        spec = get_registry().tasks.get(str(getattr(task, "value", task)))
        if spec is None:
            raise KeyError(task)
        return spec

    def __iter__(self) -> Iterator[str]:
        return iter([task_name(name) for name in task_names()])

    def __len__(self) -> int:
        return len(get_registry().tasks)


TASKS: Mapping[str, TaskSpec] = _Table()
"""Every registered task, by name."""
