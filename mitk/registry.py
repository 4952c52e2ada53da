"""The plugin registry: names → factories of task plugins, with where each came from."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mitk.enums import Task
from mitk.errors import PluginError

Factory = Callable[[], Any] | str


@dataclass
class PluginEntry:
    """One registered task plugin. ``factory`` builds it on first use."""

    name: str
    task: Task
    factory: Factory
    summary: str = ""
    source: str = ""
    """The entry point or module that registered it."""
    distribution: str | None = None
    version: str | None = None
    _instance: Any = field(default=None, repr=False)

    def load(self) -> Any:
        """Build (once) and return the plugin object, checking it is for the task it claimed."""
        if self._instance is None:
            factory = self.factory
            try:
                if isinstance(factory, str):
                    module_name, _, attribute = factory.partition(":")
                    factory = getattr(importlib.import_module(module_name), attribute)
                instance = factory()
            except ImportError as error:
                raise PluginError(f"plugin {self.name!r} could not be loaded: {error}") from error
            except Exception as error:
                raise PluginError(f"plugin {self.name!r} failed to build: {type(error).__name__}: {error}") \
                    from error
            task = getattr(instance, "task", None)
            if task is not None and Task(task) != self.task:
                raise PluginError(f"plugin {self.name!r} registered for {self.task.value} but is a {task} plugin")
            self._instance = instance
        return self._instance


@dataclass
class BrokenPlugin:
    """A plugin source that failed to import or to register, and why."""

    source: str
    reason: str
    distribution: str | None = None
    version: str | None = None


class PluginRegistrar:
    """The ``register`` object handed to :func:`mitk.hookspecs.mitk_register_plugins`."""

    def __init__(self, registry: Registry, source: str, distribution: str | None = None,
                 version: str | None = None) -> None:
        self._registry = registry
        self._source = source
        self._distribution = distribution
        self._version = version

    def __call__(self, name: str, *, task: Task | str, factory: Factory, summary: str = "") -> None:
        """Register the plugin ``name`` for ``task``; ``factory`` builds it when first used."""
        if not name or not name.replace("-", "_").isidentifier():
            raise PluginError(f"invalid plugin name {name!r}: use letters, digits, '-' and '_'")
        try:
            task = Task(task)
        except ValueError:
            choices = ", ".join(t.value for t in Task)
            raise PluginError(f"plugin {name!r}: unknown task {task!r} (choose from {choices})") from None
        self._registry.add(PluginEntry(name=name, task=task, factory=factory, summary=summary,
                                       source=self._source, distribution=self._distribution,
                                       version=self._version))


class Registry:
    """All registered plugins, and the broken ones, keyed by name."""

    def __init__(self) -> None:
        self._entries: dict[str, PluginEntry] = {}
        self.broken: list[BrokenPlugin] = []

    def add(self, entry: PluginEntry) -> None:
        existing = self._entries.get(entry.name)
        if existing is not None:
            raise PluginError(
                f"plugin name {entry.name!r} from {entry.source} is already registered by {existing.source}")
        self._entries[entry.name] = entry

    def __iter__(self) -> Iterator[PluginEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: (e.task.value, e.name)))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, task: Task | None = None) -> list[str]:
        return [e.name for e in self if task is None or e.task == task]

    def get(self, name: str, task: Task | str | None = None) -> PluginEntry:
        """Return the entry for ``name``, checking its task; a clear error lists the alternatives."""
        entry = self._entries.get(name)
        wanted = Task(task) if task is not None else None
        if entry is None:
            broken = [b for b in self.broken if name in b.source]
            hint = f" (a plugin source failed to load: {broken[0].reason})" if broken else ""
            choices = ", ".join(self.names(wanted)) or "none installed"
            what = f"{wanted.value} plugin" if wanted else "plugin"
            raise PluginError(f"unknown {what} {name!r}; available: {choices}{hint}")
        if wanted is not None and entry.task != wanted:
            raise PluginError(f"plugin {name!r} is a {entry.task.value} plugin, not a {wanted.value} plugin")
        return entry
