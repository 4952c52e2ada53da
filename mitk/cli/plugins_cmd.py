"""``mitk plugins``: list and describe installed plugins without importing torch or monai."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mitk.cli.common import JsonOption, emit_json, plain_table

app = typer.Typer(
    rich_markup_mode=None,
    help="List and inspect installed plugins.", no_args_is_help=True)


def _rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from mitk.plugin_manager import get_registry

    registry = get_registry()
    plugins = [
        {"name": e.name, "task": e.task, "version": e.version, "distribution": e.distribution,
         "status": "ok", "summary": e.summary, "source": e.source}
        for e in registry
    ]
    broken = [
        {"name": b.source, "task": None, "version": b.version, "distribution": b.distribution,
         "status": "broken", "summary": b.reason, "source": b.source}
        for b in registry.broken
    ]
    return plugins, broken


def _executor_rows() -> list[dict[str, Any]]:
    from mitk.plugin_manager import get_registry

    return [{"name": e.name, "version": e.version, "distribution": e.distribution, "summary": e.summary,
             "source": e.source} for e in get_registry().executors]


@app.command("list")
def list_plugins(as_json: JsonOption = False) -> None:
    """List plugins: name, task, version, distribution and status (broken ones with the reason); then the
    executors (``--executor NAME``)."""
    plugins, broken = _rows()
    executors = _executor_rows()
    if as_json:
        emit_json({"plugins": plugins + broken, "executors": executors})
        return
    typer.echo(plain_table(plugins + broken, ["name", "task", "version", "distribution", "status", "summary"]))
    typer.echo("")
    typer.echo(plain_table([{**row, "executor": row["name"]} for row in executors],
                           ["executor", "version", "distribution", "summary"]))
    if broken:
        typer.echo(f"{len(broken)} plugin source(s) failed to load; set MITK_PLUGINS_STRICT=1 to make this an "
                   "error.", err=True)


@app.command("info")
def plugin_info(name: Annotated[str, typer.Argument(help="Plugin name, or a MONAI bundle folder.")],
                as_json: JsonOption = False) -> None:
    """Describe one plugin: task, origin, its settings with defaults and descriptions, and missing methods
    (imports the plugin). Given a MONAI bundle folder, what the bundle declares (as ``mitk info --weights``)."""
    from pathlib import Path

    from mitk.bundles import is_bundle

    if is_bundle(Path(name)):
        from mitk.cli.info import describe_weights, print_document

        print_document(describe_weights(Path(name)), as_json)
        return
    from mitk.plugin_manager import get_registry
    from mitk.registry import missing_methods
    from mitk.settings import describe_settings

    entry = get_registry().get(name)
    plugin = entry.load()
    missing = missing_methods(plugin)
    config = plugin.default_config()
    settings = describe_settings(plugin)
    document = {
        "name": entry.name, "task": entry.task, "version": entry.version,
        "distribution": entry.distribution, "source": entry.source, "summary": entry.summary,
        "needs_weights": bool(getattr(plugin, "needs_weights", True)),
        "trainable": bool(getattr(plugin, "trainable", True)),
        "config": config,
        "missing_methods": missing,
        "settings": settings,
    }
    if as_json:
        emit_json(document)
        return
    import json

    from rich.console import Console
    from rich.markup import escape

    console = Console()
    for key in ("name", "task", "version", "distribution", "source", "summary", "needs_weights", "trainable"):
        console.print(f"[bold]{key}[/]: {escape(str(document[key]))}")  # plugin text is never markup
    console.print("[bold]settings[/] (change with --set KEY=VALUE):")
    rows = [{"setting": row["key"], "default": json.dumps(row["default"], default=str),
             "description": row["help"] or "-"} for row in settings]
    typer.echo(plain_table(rows, ["setting", "default", "description"]))  # no wrapping: one line a setting
    console.print(f"[bold]missing methods[/]: {escape(', '.join(missing)) or 'none'}"
                  + (f" (a {entry.task} plugin must implement them)" if missing else ""), soft_wrap=True)
