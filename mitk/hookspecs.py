"""Every hook a mitk plugin can implement, in one module.

A plugin is a module (or object) with functions decorated by :data:`mitk.hookimpl`, made known through
the ``mitk.plugins`` entry-point group::

    [project.entry-points."mitk.plugins"]
    my_plugin = "my_package.plugin"

Hooks receive a registry object and store *factories* in it, never built models: registering must stay
cheap and must not import torch or monai. Hooks evolve only by adding arguments; an implementation is
called with only the arguments it declares, so it may accept a subset of them.

A plugin whose hook name is unknown (misspelt), which declares an argument a hook does not pass, or whose
code raises or tries to end the process is reported as broken and skipped (:mod:`mitk.plugin_manager`);
mark an implementation of a hook that only newer mitk versions have ``@hookimpl(optionalhook=True)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from mitk.constants import PROJECT_NAME

if TYPE_CHECKING:
    from mitk.registry import ExecutorRegistrar, PluginRegistrar, TaskRegistrar

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
"""Marks a function of this module as a hook specification."""
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a plugin's function as the implementation of a mitk hook (re-exported as ``mitk.hookimpl``)."""


# -------------------------------------------------------------------------------------------------
# Tasks
# -------------------------------------------------------------------------------------------------


@hookspec
def mitk_register_tasks(register: TaskRegistrar) -> None:
    """Register tasks: rows of the task table (a verb such as ``mitk segment``, its API call, its plugins).

    Call ``register(spec)`` once per task with a :class:`mitk.taskspec.TaskSpec`, whose parts are named as
    ``"package.module:attribute"`` strings and imported only when used. mitk's own four tasks are registered
    the same way (:mod:`mitk.tasks.table`). Tasks are registered before plugins, so a plugin may belong to a
    task that its own package adds.

    :param register: the registrar; see :class:`mitk.registry.TaskRegistrar`.

    .. versionadded:: 0.3
    """


# -------------------------------------------------------------------------------------------------
# Task plugins
# -------------------------------------------------------------------------------------------------


@hookspec
def mitk_register_plugins(register: PluginRegistrar) -> None:
    """Register task plugins: segmenters, classifiers, detectors and registration methods.

    Call ``register(name, task=..., factory=..., summary=...)`` once per plugin. ``factory`` is a
    zero-argument callable, or a ``"package.module:attribute"`` string, that returns an instance of the
    task's plugin base class (named in the task table, :func:`mitk.taskspecs.iter_tasks`); it is called only
    when the plugin is used.

    :param register: the registrar; see :class:`mitk.registry.PluginRegistrar`.

    .. versionadded:: 0.1
    """


# -------------------------------------------------------------------------------------------------
# Executors
# -------------------------------------------------------------------------------------------------


@hookspec
def mitk_register_executors(register: ExecutorRegistrar) -> None:
    """Register executors: what runs a batch's cases (``--executor NAME`` on every task verb).

    Call ``register(name, factory=..., summary=...)`` once per executor. ``factory`` is a callable, or a
    ``"package.module:attribute"`` string, that takes an :class:`mitk.executors.ExecutorOptions` and returns
    an :class:`mitk.executors.Executor`; it is called only when the executor is chosen. mitk's own ``local``
    (the default, in-process) and ``dask`` executors are registered the same way.

    :param register: the registrar; see :class:`mitk.registry.ExecutorRegistrar`.

    .. versionadded:: 0.2
    """
