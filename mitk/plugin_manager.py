"""Finding plugins (tasks, task plugins and executors): entry points, built-ins, and the rules for broken ones.

Environment variables:

``MITK_DISABLE_PLUGIN_AUTOLOAD=1``
    load only mitk's built-in plugins, no third-party entry points.
``MITK_PLUGINS_STRICT=1``
    a plugin that fails to import or register is an error instead of a warning.
``MITK_BLOCK_PLUGINS=a,b``
    skip the named entry points (or distributions).

Containment: a plugin that fails to import, declares a hook mitk does not have (a misspelt name), declares an
argument a hook does not pass, raises in its hook, or tries to end the process (``sys.exit()``) is recorded
as broken with the reason, and every other plugin keeps working. Hook implementations are called with only the
arguments they declare, so hooks can gain arguments without breaking older plugins.

Tests make a registry live everywhere with :func:`use_plugins` / :func:`override_registry` (the pytest fixture
``mitk_plugins`` in :mod:`mitk.testing`).
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib import metadata
from typing import Any

import pluggy

from mitk import hookspecs
from mitk.constants import ENTRY_POINT_GROUP, PROJECT_NAME, __version__
from mitk.env import env_flag
from mitk.errors import PluginError
from mitk.hookspecs import hookimpl
from mitk.registry import (
    BrokenPlugin,
    ExecutorRegistrar,
    PluginRegistrar,
    Registry,
    TaskRegistrar,
    contained,
    describe,
    set_task_lookup,
)

BUILTIN_DISTRIBUTION = "mitk"
DEFAULT_PLUGINS = ("mitk_builtin.threshold", "mitk_builtin.segment_networks", "mitk_builtin.classify_networks",
                   "mitk_builtin.detect", "mitk_builtin.registration", "mitk_builtin.bundle",
                   "mitk_builtin.nnunet")
"""Built-in plugin modules, used when mitk runs from a source tree without installed entry points (and for
any built-in that an older install's entry points do not list yet)."""


class BuiltinExecutors:
    """mitk's own executors, registered through the executor hook like a third party's."""

    @hookimpl
    def mitk_register_executors(self, register: ExecutorRegistrar) -> None:
        register("local", factory="mitk.executors:LocalExecutor",
                 summary="In this process, one case after another (the default).")
        register("dask", factory="mitk.executors.dask_executor:DaskExecutor",
                 summary="Dask distributed workers: --scheduler ADDRESS or a local cluster of --workers N "
                         "(extra mitk[dask]).")


BUILTIN_EXECUTORS = "executors"
"""The name :class:`BuiltinExecutors` is registered under."""
BUILTIN_TASKS = "mitk.tasks.table"
"""The module that registers mitk's own tasks (through the task hook, like a third party's); always loaded."""


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _distribution_of(entry_point: metadata.EntryPoint, seen: dict[int, tuple[str | None, str | None]] | None = None
                     ) -> tuple[str | None, str | None]:
    """The name and version of the distribution that declares ``entry_point``. Each ``metadata`` access parses
    the distribution's METADATA file again: ``seen`` keeps each distribution's answer (mitk's own built-ins
    are seven entry points of one distribution)."""
    dist = entry_point.dist
    if dist is None:
        return None, None
    if seen is not None and id(dist) in seen:
        return seen[id(dist)]
    found = dist.metadata
    answer: tuple[str | None, str | None] = (found["Name"], found["Version"])
    if seen is not None:
        seen[id(dist)] = answer
    return answer


def _fail(registry: Registry, broken: BrokenPlugin) -> None:
    registry.broken.append(broken)
    if env_flag("MITK_PLUGINS_STRICT"):
        raise PluginError(f"plugin {broken.source} is broken: {broken.reason}")


def plugin_name(plugin: Any) -> str:
    """The name an in-process plugin (a module, class or object) is registered and reported under."""
    name = getattr(plugin, "__name__", None)
    return name if isinstance(name, str) else f"{type(plugin).__module__}.{type(plugin).__qualname__}"


def _hook_problem(manager: pluggy.PluginManager, plugin: Any) -> str | None:
    """Why ``plugin``'s hook implementations do not fit mitk's hooks, or ``None`` when they do."""
    hooks = {name: caller for name, caller in vars(manager.hook).items()
             if not name.startswith("_") and caller.has_spec()}
    for attribute in dir(plugin):
        options = manager.parse_hookimpl_opts(plugin, attribute)
        if options is None:
            continue
        hook_name = options.get("specname") or attribute
        hook = hooks.get(hook_name)
        if hook is None or hook.spec is None:
            if options.get("optionalhook"):
                continue
            close = difflib.get_close_matches(hook_name, list(hooks), n=1)
            return f"unknown hook {hook_name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        impl = pluggy.HookImpl(plugin, "", getattr(plugin, attribute), options)
        unknown = [argument for argument in impl.argnames if argument not in hook.spec.argnames]
        if unknown:
            return (f"{hook_name} declares argument(s) {', '.join(unknown)} that the hook does not pass "
                    f"(it passes: {', '.join(hook.spec.argnames)})")
        if impl.wrapper or impl.hookwrapper:
            return f"{hook_name} is declared as a hook wrapper, which mitk's hooks do not support"
    return None


def _register(manager: pluggy.PluginManager, registry: Registry, plugin: Any, name: str,
              distribution: str | None, version: str | None, source: str | None = None) -> bool:
    """Register ``plugin`` under ``name`` if its hooks fit; otherwise record it (as ``source``) as broken."""
    source = source or name
    if manager.has_plugin(name):
        _fail(registry, BrokenPlugin(source, f"the name {name!r} is already taken by another plugin",
                                     distribution, version))
        return False
    try:
        with contained():
            problem = _hook_problem(manager, plugin)
            if problem is None:
                manager.register(plugin, name=name)
    except Exception as error:  # pluggy's own validation, or plugin code run by dir()/getattr()
        if manager.get_plugin(name) is plugin:
            manager.unregister(name=name)
        problem = describe(error)
    if problem is not None:
        _fail(registry, BrokenPlugin(source, f"invalid hooks: {problem}", distribution, version))
        return False
    return True


def build_plugin_manager(extra_plugins: tuple[Any, ...] = (), autoload: bool | None = None
                         ) -> tuple[pluggy.PluginManager, Registry]:
    """Load plugin modules, call their registration hooks, and return the manager and the registry.

    ``extra_plugins`` (modules or objects with hook implementations) are registered in-process after the
    installed ones. A plugin that fails to import, has hooks mitk does not know, or whose hook raises or
    exits is recorded in ``registry.broken`` and skipped (or raises :class:`PluginError` under
    ``MITK_PLUGINS_STRICT``).
    """
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    manager.register(BuiltinExecutors(), name=BUILTIN_EXECUTORS)
    manager.register(importlib.import_module(BUILTIN_TASKS), name="tasks")
    if autoload is None:
        autoload = not env_flag("MITK_DISABLE_PLUGIN_AUTOLOAD")
    blocked = {b.strip() for b in os.environ.get("MITK_BLOCK_PLUGINS", "").split(",") if b.strip()}

    origins: dict[str, tuple[str | None, str | None]] = {}
    builtin_modules: set[str] = set()
    seen: dict[int, tuple[str | None, str | None]] = {}
    for entry_point in _entry_points():
        distribution, version = _distribution_of(entry_point, seen)
        is_builtin = distribution == BUILTIN_DISTRIBUTION
        if is_builtin:
            builtin_modules.add(entry_point.value)
        if entry_point.name in blocked or (distribution in blocked and not is_builtin):
            continue
        if not (autoload or is_builtin):
            continue
        source = f"{entry_point.name} ({entry_point.value})"
        try:
            with contained():
                plugin = entry_point.load()
        except Exception as error:  # a broken third-party plugin must not take the host down
            _fail(registry, BrokenPlugin(source, f"import failed: {describe(error)}", distribution, version))
            continue
        if manager.is_registered(plugin):
            continue
        if _register(manager, registry, plugin, entry_point.name, distribution, version, source):
            origins[entry_point.name] = (distribution, version)

    # Built-ins that the installed entry points do not list (a source tree, or an install older than
    # the source): registered directly.

    for module_name in DEFAULT_PLUGINS:
        short = module_name.rsplit(".", 1)[-1]
        if module_name in builtin_modules or short in blocked or manager.has_plugin(short):
            continue
        try:
            with contained():
                module = importlib.import_module(module_name)
        except Exception as error:
            _fail(registry, BrokenPlugin(module_name, f"import failed: {describe(error)}",
                                         BUILTIN_DISTRIBUTION, __version__))
            continue
        if _register(manager, registry, module, short, BUILTIN_DISTRIBUTION, __version__, module_name):
            origins[short] = (BUILTIN_DISTRIBUTION, __version__)

    for plugin in extra_plugins:
        if not manager.is_registered(plugin):
            _register(manager, registry, plugin, plugin_name(plugin), None, None)

    origins[BUILTIN_EXECUTORS] = origins["tasks"] = (BUILTIN_DISTRIBUTION, __version__)
    _call_registration(manager.hook.mitk_register_tasks, TaskRegistrar, registry, origins)  # tasks before plugins
    _call_registration(manager.hook.mitk_register_plugins, PluginRegistrar, registry, origins)
    _call_registration(manager.hook.mitk_register_executors, ExecutorRegistrar, registry, origins)
    return manager, registry


def _call_registration(hook: Any, registrar: type[PluginRegistrar | ExecutorRegistrar | TaskRegistrar],
                       registry: Registry, origins: dict[str, tuple[str | None, str | None]]) -> None:
    """Call every implementation of a ``mitk_register_*`` hook with its own registrar, containing failures."""
    # Built-ins register first, so that a third-party plugin cannot take a built-in's name.
    impls = sorted(hook.get_hookimpls(),
                   key=lambda impl: origins.get(impl.plugin_name, (None, None))[0] != BUILTIN_DISTRIBUTION)
    for impl in impls:
        distribution, version = origins.get(impl.plugin_name, (None, None))
        source = impl.plugin_name
        arguments = {"register": registrar(registry, source, distribution, version)}
        try:
            with contained():  # like pluggy: pass only the arguments the implementation declares
                impl.function(*(arguments[name] for name in impl.argnames))
        except Exception as error:
            _fail(registry, BrokenPlugin(source, f"registration failed: {describe(error)}", distribution, version))


_overrides: list[Registry] = []


@lru_cache(maxsize=1)
def _installed_registry() -> Registry:
    return build_plugin_manager()[1]


def forget_installed_plugins() -> None:
    """Drop the registry built from the installed plugins, so the next :func:`get_registry` builds it again
    (the warm worker does this when a call's ``MITK_*`` switches differ from its own)."""
    _installed_registry.cache_clear()


def get_registry() -> Registry:
    """The process-wide registry: the installed plugins, built once, unless a test overrides it."""
    if _overrides:
        return _overrides[-1]
    return _installed_registry()


set_task_lookup(lambda name: get_registry().tasks.get(name))


@contextmanager
def override_registry(registry: Registry) -> Iterator[Registry]:
    """Make :func:`get_registry` return ``registry`` everywhere in this process until the block ends."""
    _overrides.append(registry)
    try:
        yield registry
    finally:
        _overrides.remove(registry)


@contextmanager
def use_plugins(*plugins: Any, autoload: bool = False) -> Iterator[Registry]:
    """Make the built-ins plus ``plugins`` (modules or objects with hook implementations) the registry every
    part of mitk uses until the block ends; ``autoload=True`` adds the installed third-party plugins too.

    A given plugin that turns out broken raises :class:`PluginError` with the reason, so a test fails loudly.
    """
    registry = build_plugin_manager(extra_plugins=plugins, autoload=autoload)[1]
    names = {plugin_name(plugin) for plugin in plugins}
    for broken in registry.broken:
        if broken.source in names:
            raise PluginError(f"plugin {broken.source} is broken: {broken.reason}")
    with override_registry(registry):
        yield registry
