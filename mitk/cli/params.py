"""Options declared as data (:class:`mitk.taskspec.Option`) turned into Typer parameters and commands.

The owner declares, the host builds the parser (pytest's ``addoption``): a task's row lists its options, and
:func:`command` makes a Typer command of them whose body receives the parsed values as one dict.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer

from mitk.taskspec import Option


def annotated(option: Option) -> Any:
    """``Annotated[type, typer.Option(...)]`` (or ``typer.Argument``) for ``option``."""
    if option.argument:
        info = typer.Argument(help=option.help, metavar=option.metavar)
    else:
        info = typer.Option(*option.flags, help=option.help, metavar=option.metavar)
    return Annotated[option.type, info]


def command(name: str, options: Iterable[Option], body: Callable[[dict[str, Any]], Any], doc: str
            ) -> Callable[..., Any]:
    """A function Typer reads as a command with ``options`` as its parameters; it calls ``body(values)``."""
    listed = list(options)
    parameters = [inspect.Parameter(option.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    default=inspect.Parameter.empty if option.required else option.default,
                                    annotation=annotated(option))
                  for option in sorted(listed, key=lambda option: not option.required)]

    def run(**values: Any) -> Any:
        return body(values)

    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__doc__ = doc
    run.__name__ = run.__qualname__ = name.replace("-", "_")
    return run
