"""Finding plugins: entry points, built-ins, and the rules for broken ones.

Environment variables:

``MITK_DISABLE_PLUGIN_AUTOLOAD=1``
    load only mitk's built-in plugins, no third-party entry points.
``MITK_PLUGINS_STRICT=1``
    a plugin that fails to import or register is an error instead of a warning.
``MITK_BLOCK_PLUGINS=a,b``
    skip the named entry points (or distributions).
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache
from importlib import metadata
from typing import Any

import pluggy

from mitk import ENTRY_POINT_GROUP, PROJECT_NAME, hookspecs
from mitk.env import env_flag
from mitk.errors import PluginError
from mitk.registry import BrokenPlugin, PluginRegistrar, Registry

BUILTIN_DISTRIBUTION = "mitk"
DEFAULT_PLUGINS = ("mitk_builtin.threshold", "mitk_builtin.segment_networks")
"""Built-in plugin modules, used when mitk runs from a source tree without installed entry points."""


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _distribution_of(entry_point: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = entry_point.dist
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _fail(registry: Registry, broken: BrokenPlugin) -> None:
    registry.broken.append(broken)
    if env_flag("MITK_PLUGINS_STRICT"):
        raise PluginError(f"plugin {broken.source} is broken: {broken.reason}")


def build_plugin_manager(extra_plugins: tuple[Any, ...] = (), autoload: bool | None = None
                         ) -> tuple[pluggy.PluginManager, Registry]:
    """Load plugin modules, call their registration hooks, and return the manager and the registry.

    A plugin that fails to import or whose hook raises is recorded in ``registry.broken`` and skipped
    (or raises :class:`PluginError` under ``MITK_PLUGINS_STRICT``).
    """
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    if autoload is None:
        autoload = not env_flag("MITK_DISABLE_PLUGIN_AUTOLOAD")
    blocked = {b.strip() for b in os.environ.get("MITK_BLOCK_PLUGINS", "").split(",") if b.strip()}

    origins: dict[str, tuple[str | None, str | None]] = {}
    builtin_seen = False
    for entry_point in _entry_points():
        distribution, version = _distribution_of(entry_point)
        is_builtin = distribution == BUILTIN_DISTRIBUTION
        builtin_seen |= is_builtin
        if entry_point.name in blocked or (distribution in blocked and not is_builtin):
            continue
        if not (autoload or is_builtin):
            continue
        source = f"{entry_point.name} ({entry_point.value})"
        try:
            plugin = entry_point.load()
        except Exception as error:  # a broken third-party plugin must not take the host down
            _fail(registry, BrokenPlugin(source, f"import failed: {type(error).__name__}: {error}",
                                         distribution, version))
            continue
        if manager.is_registered(plugin):
            continue
        manager.register(plugin, name=entry_point.name)
        origins[entry_point.name] = (distribution, version)

    if not builtin_seen:  # running from a source tree: register the built-ins directly
        from mitk import __version__

        for module_name in DEFAULT_PLUGINS:
            short = module_name.rsplit(".", 1)[-1]
            if short in blocked or manager.has_plugin(short):
                continue
            manager.register(importlib.import_module(module_name), name=short)
            origins[short] = (BUILTIN_DISTRIBUTION, __version__)

    for plugin in extra_plugins:
        manager.register(plugin)

    # Built-ins register first, so that a third-party plugin cannot take a built-in's name.
    impls = sorted(manager.hook.mitk_register_plugins.get_hookimpls(),
                   key=lambda impl: origins.get(impl.plugin_name, (None, None))[0] != BUILTIN_DISTRIBUTION)
    for impl in impls:
        distribution, version = origins.get(impl.plugin_name, (None, None))
        source = impl.plugin_name
        registrar = PluginRegistrar(registry, source, distribution, version)
        try:
            impl.function(register=registrar)
        except Exception as error:
            _fail(registry, BrokenPlugin(source, f"registration failed: {type(error).__name__}: {error}",
                                         distribution, version))
    manager.check_pending()
    return manager, registry


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry, built once."""
    return build_plugin_manager()[1]
