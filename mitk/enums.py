"""Enumerations shared by the whole package (kept free of heavy imports)."""

from __future__ import annotations

from enum import Enum


class Task(str, Enum):
    """The names of mitk's own four tasks (a plugin may add more: a task is any name in the task table, and a
    member equals its name, ``Task.SEGMENT == "segment"``)."""

    SEGMENT = "segment"
    CLASSIFY = "classify"
    DETECT = "detect"
    REGISTER = "register"

    def __str__(self) -> str:
        return self.value

    def __format__(self, format_spec: str) -> str:
        return self.value.__format__(format_spec)


def task_name(task: Task | str) -> Task | str:
    """``task`` as a :class:`Task` member when it names one of mitk's own tasks, else as the plain name."""
    name = str(getattr(task, "value", task))
    try:
        return Task(name)
    except ValueError:
        return name
