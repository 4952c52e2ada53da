"""mitk's own rows of the task table, registered through the task hook exactly as a third party's are.

A fifth built-in task is one more folder beside these (its ``task.py`` holding the row) and one more line here.
"""

from __future__ import annotations

from mitk.hookspecs import hookimpl
from mitk.registry import TaskRegistrar
from mitk.tasks.classify.task import TASK as CLASSIFY
from mitk.tasks.detect.task import TASK as DETECT
from mitk.tasks.register.task import TASK as REGISTER
from mitk.tasks.segment.task import TASK as SEGMENT

BUILTIN_TASKS = (SEGMENT, CLASSIFY, DETECT, REGISTER)


@hookimpl
def mitk_register_tasks(register: TaskRegistrar) -> None:
    for spec in BUILTIN_TASKS:
        register(spec)
