"""Plugin settings: closed, typed by their defaults, described one line each.

A plugin's settings are the keys of its :meth:`~mitk.plugin.TaskPlugin.default_config`, nested keys written
with dots (``network.channels``). The rules, checked by :func:`check_overrides` on the user's ``--set`` values:

- **Known keys only.** A key that is neither in the defaults nor in the plugin's
  :meth:`~mitk.plugin.TaskPlugin.settings_schema` is refused, listing the known keys at that level and
  suggesting a close match.
- **The default's type.** A value must have the JSON type of the default: ``true``/``false`` for a bool,
  an integer for an int, any number for a float, text for a string, a list for a list (its items are the
  plugin's to check), a mapping for a mapping (checked key by key, recursively). A ``None`` default accepts
  anything.
- **The schema overrides both.** A key in ``settings_schema()`` (dotted key → accepted types, e.g.
  ``{"sw_batch_size": (int, str), "labels": (dict, list)}``; ``None`` stands for ``null``) accepts exactly
  those types and nothing below it is checked: a mapping there is *open*, its keys are the user's (label
  names, say). Schema keys need not be in the defaults.

Settings saved in a checkpoint (:func:`check_saved_config`) are the plugin's own, perhaps from another
version: keys this version does not know are dropped with one warning, types are not checked. The keys
``training``, ``plan`` and ``init`` are the core's (what ``mitk train`` records: its options, the plan it used
and the weights it started from) and are kept.

The settings a plugin builds its pieces from can still be wrong in ways types do not show (a list of the
wrong length, a negative probability); :func:`settings_errors` turns what the plugin or MONAI raises then
into one line naming the overridden settings.

This module imports neither torch nor monai.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mitk.errors import CheckpointError, MitkWarning, PluginError, UsageError

if TYPE_CHECKING:
    from pathlib import Path

    from mitk.plugin import TaskPlugin

CORE_KEYS = frozenset({"training", "plan", "init"})
"""Top-level keys the core adds to a checkpoint's config; not plugin settings."""

NoneType = type(None)
SETTING_ERRORS = (ValueError, TypeError, AssertionError, KeyError, IndexError, PluginError)
"""What plugins and MONAI raise when they cannot build from a setting."""


class SettingsWarning(MitkWarning):
    """A checkpoint's saved settings do not all match the installed plugin version."""


def check_overrides(plugin: TaskPlugin, overrides: Mapping[str, Any] | None, *, source: str = "--set",
                    name: str | None = None) -> None:
    """Raise :class:`UsageError` for the first unknown key or wrong-typed value in ``overrides``.

    ``source`` names where the overrides came from in the message; ``name`` is the plugin's name.
    """
    schema = settings_schema(plugin)
    label = f"plugin {name!r}" if name else f"plugin {type(plugin).__name__}"

    def walk(defaults: Mapping[str, Any], values: Mapping[Any, Any], prefix: str) -> None:
        for key, value in values.items():
            path = f"{prefix}{key}"
            if path in schema:
                if not _is_one_of(value, schema[path]):
                    raise UsageError(f"{source} {path}: {label} expects {_describe_types(schema[path])}, "
                                     f"got {_show(value)}")
                continue
            if str(key) in defaults:
                default = defaults[str(key)]
            elif isinstance(value, Mapping) and any(known.startswith(f"{path}.") for known in schema):
                default = {}  # a mapping known only through the schema keys below it
            else:
                raise UsageError(_unknown_message(plugin, schema, path, prefix, source, label))
            if not _is_one_of(value, _types_of(default)):
                raise UsageError(f"{source} {path}: {label} expects {_describe_types(_types_of(default))} "
                                 f"(default {_show(default)}), got {_show(value)}")
            if isinstance(default, Mapping):
                walk(_string_keys(default), value, f"{path}.")

    walk(_string_keys(defaults_of(plugin)), overrides or {}, "")


def check_saved_config(plugin: TaskPlugin, config: Mapping[str, Any] | None, *, source: str | Path,
                       name: str | None = None) -> dict[str, Any]:
    """``config`` without the keys this plugin version does not know, with one warning naming ``source``."""
    schema = settings_schema(plugin)
    unknown: list[str] = []

    def keep(defaults: Mapping[str, Any], values: Mapping[Any, Any], prefix: str) -> dict[Any, Any]:
        kept: dict[Any, Any] = {}
        for key, value in values.items():
            path = f"{prefix}{key}"
            if path in schema or (not prefix and key in CORE_KEYS):
                kept[key] = copy.deepcopy(value)
            elif str(key) not in defaults and not any(known.startswith(f"{path}.") for known in schema):
                unknown.append(path)
            elif isinstance(value, Mapping) and isinstance(defaults.get(str(key)), Mapping):
                kept[key] = keep(_string_keys(defaults[str(key)]), value, f"{path}.")
            else:
                kept[key] = copy.deepcopy(value)
        return kept

    kept = keep(_string_keys(defaults_of(plugin)), config or {}, "")
    if unknown:
        label = f"plugin {name!r}" if name else f"plugin {type(plugin).__name__}"
        warnings.warn(f"{source}: ignoring saved settings that the installed {label} does not know "
                      f"(saved by another version?): {', '.join(unknown)}", SettingsWarning, stacklevel=2)
    return kept


def describe_settings(plugin: TaskPlugin) -> list[dict[str, Any]]:
    """One row per setting, in the order of the defaults: ``key`` (dotted), ``default``, ``type``, ``help``."""
    schema = settings_schema(plugin)
    help_lines = help_of(plugin)
    rows: list[dict[str, Any]] = []

    def walk(defaults: Mapping[str, Any], prefix: str) -> None:
        for key, default in defaults.items():
            path = f"{prefix}{key}"
            if isinstance(default, Mapping) and default and path not in schema:
                walk(_string_keys(default), f"{path}.")
                continue
            types = schema.get(path, _types_of(default))
            rows.append({"key": path, "default": default, "type": _describe_types(types),
                         "help": help_lines.get(path, "")})

    walk(_string_keys(defaults_of(plugin)), "")
    described = {row["key"] for row in rows}
    for path, types in schema.items():
        if path not in described:
            rows.append({"key": path, "default": None, "type": _describe_types(types),
                         "help": help_lines.get(path, "")})
    return rows


def settings_schema(plugin: TaskPlugin) -> dict[str, tuple[type, ...]]:
    """The plugin's explicit types, with ``None`` written as ``type(None)``."""
    return {key: tuple(NoneType if kind is None else kind for kind in kinds)
            for key, kinds in plugin.settings_schema().items()}


@contextlib.contextmanager
def settings_errors(name: str, overrides: Mapping[str, Any] | None, *, source: str = "--set",
                    checkpoint: str | Path | None = None) -> Iterator[None]:
    """Turn what a plugin raises while building its pieces from settings into one line.

    With ``overrides`` the error is the user's (:class:`UsageError` naming the overridden settings); without,
    it is the checkpoint's (:class:`CheckpointError`) or, with neither, the plugin's (:class:`PluginError`).
    """
    try:
        yield
    except SETTING_ERRORS as error:
        reason = _first_line(error)
        if overrides:
            raise UsageError(f"plugin {name!r}: settings not valid ({source} {flat_settings(overrides)}): "
                             f"{reason}") from None
        if isinstance(error, PluginError):
            raise
        if checkpoint is not None:
            raise CheckpointError(f"plugin {name!r} cannot use the checkpoint's settings: {reason}",
                                  checkpoint) from None
        raise PluginError(f"plugin {name!r}: its default settings are not valid: {reason}") from None


def flat_settings(overrides: Mapping[str, Any]) -> str:
    """``{"network": {"channels": [1]}, "bins": 3}`` → ``network.channels=[1], bins=3``."""
    pairs: list[str] = []

    def walk(values: Mapping[Any, Any], prefix: str) -> None:
        for key, value in values.items():
            if isinstance(value, Mapping) and value:
                walk(value, f"{prefix}{key}.")
            else:
                pairs.append(f"{prefix}{key}={_show(value)}")

    walk(overrides, "")
    return ", ".join(pairs)


# -- helpers -----------------------------------------------------------------------------------------


def _string_keys(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """JSON turns every key into text, so ``{0: "background"}`` and ``{"0": ...}`` are the same settings."""
    return {str(key): value for key, value in mapping.items()}


def _types_of(default: Any) -> tuple[type, ...]:
    if default is None:
        return ()  # anything
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, int):
        return (int,)
    if isinstance(default, float):
        return (float,)
    if isinstance(default, str):
        return (str,)
    if isinstance(default, Mapping):
        return (dict,)
    if isinstance(default, Sequence):
        return (list,)
    return (type(default),)


def _is_one_of(value: Any, kinds: tuple[type, ...]) -> bool:
    """JSON typing: no kinds accept anything; see :func:`_fits`."""
    return not kinds or any(_fits(value, kind) for kind in kinds)


def _fits(value: Any, kind: type) -> bool:
    """A bool is not a number, an int is a float, any sequence but text is a list, any mapping a dict."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    if kind is list:
        return isinstance(value, Sequence) and not isinstance(value, str)
    if kind is dict:
        return isinstance(value, Mapping)
    return isinstance(value, kind)


TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "text", list: "a list",
              dict: "a mapping", NoneType: "null"}


def _describe_types(kinds: tuple[type, ...]) -> str:
    if not kinds:
        return "anything"
    words = [TYPE_WORDS.get(kind, kind.__name__) for kind in kinds]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _show(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, KeyError):
        return f"missing setting {text}"
    return text.splitlines()[0] if text else type(error).__name__


def _known_paths(plugin: TaskPlugin, schema: Mapping[str, tuple[type, ...]]) -> list[str]:
    """Every dotted key: leaves and the mappings above them."""
    paths: list[str] = list(schema)

    def walk(defaults: Mapping[str, Any], prefix: str) -> None:
        for key, default in defaults.items():
            path = f"{prefix}{key}"
            paths.append(path)
            if isinstance(default, Mapping) and path not in schema:
                walk(_string_keys(default), f"{path}.")

    walk(_string_keys(defaults_of(plugin)), "")
    return list(dict.fromkeys(paths))


def _unknown_message(plugin: TaskPlugin, schema: Mapping[str, tuple[type, ...]], path: str, prefix: str,
                     source: str, label: str) -> str:
    everything = _known_paths(plugin, schema)
    level = sorted(p for p in everything if p.startswith(prefix) and "." not in p[len(prefix):])
    leaf = path.rsplit(".", 1)[-1]
    match = (difflib.get_close_matches(path, level, n=1)
             or [p for p in everything if p.rsplit(".", 1)[-1] == leaf][:1]
             or difflib.get_close_matches(path, everything, n=1))
    hint = f" (did you mean {match[0]!r}?)" if match else ""
    where = f" under {prefix[:-1]!r}" if prefix else ""
    names = ", ".join(p[len(prefix):] for p in level)
    return f"{source}: {label} has no setting {path!r}{hint}; known settings{where}: {names}"


def defaults_of(plugin: TaskPlugin) -> dict[str, Any]:
    """Every setting the plugin has, with its default: its ``default_config()`` over the training settings
    every trainable plugin shares (:data:`mitk.tasks.TRAINING_DEFAULTS`)."""
    return plugin.resolve_config()


def help_of(plugin: TaskPlugin) -> dict[str, str]:
    """One line per setting: the shared training settings' descriptions, then the plugin's own."""
    from mitk.plugin import TRAINING_HELP

    return {**(TRAINING_HELP if plugin.trainable else {}), **plugin.settings_help()}
