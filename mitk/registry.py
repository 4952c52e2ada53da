"""The registry: the task table, and names → factories of task plugins and of executors, with where each came
from. Filled by the registration hooks (:mod:`mitk.plugin_manager`); read by everything above.

Plugin code (an entry point's import, a registration hook, a factory) runs inside :func:`contained`, so a
plugin that calls ``sys.exit()`` fails like any other broken plugin instead of ending mitk.
"""

from __future__ import annotations

import importlib
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from mitk.enums import Task, task_name
from mitk.errors import PluginError
from mitk.plugin import TaskPlugin
from mitk.taskspec import TaskSpec, import_part

Factory = Callable[[], Any] | str
ExecutorFactory = Callable[[Any], Any] | str


class PluginExit(Exception):
    """Plugin code tried to end the process: ``sys.exit()``, ``SystemExit``, or a ``KeyboardInterrupt`` of its own."""


@contextmanager
def contained() -> Iterator[None]:
    """Run plugin code so that it cannot end mitk: ``SystemExit`` becomes :class:`PluginExit`.

    A ``KeyboardInterrupt`` becomes :class:`PluginExit` too when the plugin raised it itself; one caused by a
    real SIGINT (the user's Ctrl-C) while the code ran still interrupts. A SIGINT handler, installed for the
    duration, tells the two apart; off the main thread (where no handler can be installed) every
    ``KeyboardInterrupt`` is taken to be the user's.
    """
    interrupted = False
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    watching = previous is not None
    if watching:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except SystemExit as error:
        raise PluginExit(f"SystemExit({error.code!r}): a plugin must not end the process") from None
    except KeyboardInterrupt:
        if interrupted or not watching:
            raise
        raise PluginExit("KeyboardInterrupt raised by the plugin itself (not by Ctrl-C)") from None
    finally:
        if watching:
            signal.signal(signal.SIGINT, previous)


def describe(error: BaseException) -> str:
    """``Type: message`` on one line, for broken-plugin reasons and :class:`PluginError` messages."""
    message = " ".join(str(error).split())
    if isinstance(error, PluginExit):
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def missing_methods(plugin: TaskPlugin) -> list[str]:
    """The methods the plugin's task requires (``plugin.requirements()``) that it does not override.

    ``network`` is not required of a plugin that runs without weights (``needs_weights = False``). A method
    counts as overridden when a class below the task's base defines it; a task's base class is the one that
    declares ``required_methods``.
    """
    missing = []
    for name in plugin.requirements():
        if name == "network" and not plugin.needs_weights:
            continue
        if name in vars(plugin):
            continue
        owner = next((klass for klass in type(plugin).__mro__ if name in vars(klass)), None)
        if owner is None or _is_task_base(owner):
            missing.append(name)
    return missing


def _is_task_base(klass: type) -> bool:
    return klass is TaskPlugin or "required_methods" in vars(klass)


TaskLookup = Callable[[str], TaskSpec | None]
_task_lookup: list[TaskLookup] = []


def set_task_lookup(lookup: TaskLookup) -> None:
    """How an entry made outside a registration finds its task's spec (set by :mod:`mitk.plugin_manager`: the
    table of the registry in use)."""
    _task_lookup[:] = [lookup]


@dataclass
class PluginEntry:
    """One registered task plugin. ``factory`` builds it on first use."""

    name: str
    task: Task | str
    """The task's name (a :class:`~mitk.enums.Task` member for mitk's own tasks)."""
    factory: Factory
    summary: str = ""
    source: str = ""
    """The entry point or module that registered it."""
    distribution: str | None = None
    version: str | None = None
    base: str | None = None
    """The task's plugin base class (``"module:Class"``), set when the registry checks the entry's task."""
    _instance: TaskPlugin | None = field(default=None, repr=False)

    def load(self) -> TaskPlugin:
        """Build (once) and return the plugin object, checking it is an instance of its task's base class."""
        if self._instance is None:
            factory = self.factory
            try:
                with contained():
                    instance = resolve_factory(factory)()
            except ImportError as error:
                raise PluginError(f"plugin {self.name!r} could not be loaded: {describe(error)}") from error
            except Exception as error:
                raise PluginError(f"plugin {self.name!r} failed to build: {describe(error)}") from error
            base = self.base_class()
            if not isinstance(instance, base):
                raise PluginError(f"plugin {self.name!r} is registered for the {self.task} task but its factory "
                                  f"returned {type(instance).__qualname__}, not a {base.__module__}.{base.__name__}")
            self._instance = instance
        return self._instance


    def base_class(self) -> type[TaskPlugin]:
        """The plugin base class of this entry's task."""
        base = self.base
        if base is None and _task_lookup:
            spec = _task_lookup[0](str(self.task))
            base = spec.plugin_base if spec is not None else None
        found: type[TaskPlugin] = import_part(base) if base else TaskPlugin
        return found


@dataclass
class BrokenPlugin:
    """A plugin source that failed to import or to register, and why."""

    source: str
    reason: str
    distribution: str | None = None
    version: str | None = None


def resolve_factory(factory: Any) -> Any:
    """A registered factory: the callable itself, or the attribute a ``"package.module:attribute"`` names."""
    if isinstance(factory, str):
        module_name, _, attribute = factory.partition(":")
        return getattr(importlib.import_module(module_name), attribute)
    return factory


class _Registrar:
    """What every ``register`` object knows: the registry, and the plugin source (and its distribution)."""

    kind = "plugin"

    def __init__(self, registry: Registry, source: str, distribution: str | None = None,
                 version: str | None = None) -> None:
        self._registry = registry
        self._source = source
        self._distribution = distribution
        self._version = version

    def _check_name(self, name: str) -> None:
        if not name or not name.replace("-", "_").isidentifier():
            raise PluginError(f"invalid {self.kind} name {name!r}: use letters, digits, '-' and '_'")


class PluginRegistrar(_Registrar):
    """The ``register`` object handed to :func:`mitk.hookspecs.mitk_register_plugins`."""

    def __call__(self, name: str, *, task: Any, factory: Factory, summary: str = "") -> None:
        """Register the plugin ``name`` for ``task`` (a task's name); ``factory`` builds it when first used."""
        self._check_name(name)
        task = task_name(task)
        spec = self._registry.tasks.get(str(task))
        if spec is None:
            choices = ", ".join(self._registry.tasks)
            raise PluginError(f"plugin {name!r}: unknown task {task!r} (choose from {choices})")
        self._registry.add(PluginEntry(name=name, task=task, factory=factory, summary=summary, base=spec.plugin_base,
                                       source=self._source, distribution=self._distribution,
                                       version=self._version))


@dataclass
class ExecutorEntry:
    """One registered executor (:mod:`mitk.executors`). ``factory`` builds it for one batch."""

    name: str
    factory: ExecutorFactory
    """Called with a :class:`mitk.executors.ExecutorOptions`; returns a :class:`mitk.executors.Executor`."""
    summary: str = ""
    source: str = ""
    distribution: str | None = None
    version: str | None = None


class ExecutorRegistrar(_Registrar):
    """The ``register`` object handed to :func:`mitk.hookspecs.mitk_register_executors`."""

    kind = "executor"

    def __call__(self, name: str, *, factory: ExecutorFactory, summary: str = "") -> None:
        """Register the executor ``name`` (``--executor NAME``); ``factory(options)`` builds it per batch."""
        self._check_name(name)
        self._registry.add_executor(ExecutorEntry(name=name, factory=factory, summary=summary, source=self._source,
                                                  distribution=self._distribution, version=self._version))


class TaskRegistrar(_Registrar):
    """The ``register`` object handed to :func:`mitk.hookspecs.mitk_register_tasks`."""

    kind = "task"

    def __call__(self, spec: TaskSpec) -> None:
        """Add ``spec`` to the task table (a new verb ``mitk <spec.name>``)."""
        if not isinstance(spec, TaskSpec):
            raise PluginError(f"register() takes a mitk.taskspec.TaskSpec, not {type(spec).__qualname__}")
        if not spec.name.isidentifier() or spec.name.startswith("_"):
            raise PluginError(f"invalid task name {spec.name!r}: it is a verb and a method name (letters, digits, _)")
        existing = self._registry.task_sources.get(spec.name)
        if existing is not None:
            raise PluginError(f"task name {spec.name!r} from {self._source} is already registered by {existing}")
        self._registry.tasks[spec.name] = spec
        self._registry.task_sources[spec.name] = self._source


class Registry:
    """The task table, all registered plugins and executors, and the broken plugin sources, keyed by name."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskSpec] = {}
        """The task table: name → spec, in registration order (built-ins first)."""
        self.task_sources: dict[str, str] = {}
        self._entries: dict[str, PluginEntry] = {}
        self._executors: dict[str, ExecutorEntry] = {}
        self.broken: list[BrokenPlugin] = []

    def add(self, entry: PluginEntry) -> None:
        existing = self._entries.get(entry.name)
        if existing is not None:
            raise PluginError(
                f"plugin name {entry.name!r} from {entry.source} is already registered by {existing.source}")
        self._entries[entry.name] = entry

    def __iter__(self) -> Iterator[PluginEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: (str(e.task), e.name)))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, task: Any = None) -> list[str]:
        wanted = None if task is None else str(task)
        return [e.name for e in self if wanted is None or str(e.task) == wanted]

    def get(self, name: str, task: Any = None) -> PluginEntry:
        """Return the entry for ``name``, checking its task (a name); a clear error lists the alternatives."""
        entry = self._entries.get(name)
        wanted = None if task is None else str(task)
        if entry is None:
            raise self._unknown(f"{wanted} plugin" if wanted else "plugin", name,
                                ", ".join(self.names(wanted)) or "none installed")
        if wanted is not None and str(entry.task) != wanted:
            raise PluginError(f"plugin {name!r} is a {entry.task} plugin, not a {wanted} plugin")
        return entry

    def add_executor(self, entry: ExecutorEntry) -> None:
        existing = self._executors.get(entry.name)
        if existing is not None:
            raise PluginError(f"executor name {entry.name!r} from {entry.source} is already registered by "
                              f"{existing.source}")
        self._executors[entry.name] = entry

    @property
    def executors(self) -> list[ExecutorEntry]:
        """The registered executors, by name."""
        return sorted(self._executors.values(), key=lambda e: e.name)

    def executor(self, name: str) -> ExecutorEntry:
        """The executor ``name``; a clear error lists the alternatives."""
        entry = self._executors.get(name)
        if entry is None:
            raise self._unknown("executor", name, ", ".join(e.name for e in self.executors) or "none")
        return entry

    def _unknown(self, what: str, name: str, choices: str) -> PluginError:
        """The error for a name nothing registered: the alternatives, and a plugin source that failed to load
        (the likely reason) when one mentions the name."""
        broken = [b for b in self.broken if name in b.source]
        hint = f" (a plugin source failed to load: {broken[0].reason})" if broken else ""
        return PluginError(f"unknown {what} {name!r}; available: {choices}{hint}")
