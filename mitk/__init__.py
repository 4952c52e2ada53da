"""mitk: plugin-based medical image analysis on MONAI.

This module stays light: importing :mod:`mitk` must not import torch, monai, nibabel or pydicom. The Python
API (:mod:`mitk.api`: ``mitk.load``, ``mitk.Model``, ``mitk.as_image`` and one call per task of the task
table, ``mitk.segment`` …) is reached through :func:`__getattr__`; torch and monai load on the first ``load``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # for type checkers; at run time these come from __getattr__ below
    from mitk.api import Model as Model
    from mitk.api import as_image as as_image
    from mitk.api import load as load

__version__ = "0.1.0"

PROJECT_NAME = "mitk"
ENTRY_POINT_GROUP = "mitk.plugins"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Decorator that marks a function as an implementation of a mitk hook."""

logging.getLogger(PROJECT_NAME).addHandler(logging.NullHandler())  # a library logs; the application shows (the CLI)

_API_NAMES = ("Model", "as_image", "load")


def _api_names() -> tuple[str, ...]:
    from mitk.taskspecs import iter_tasks

    return (*_API_NAMES, *(spec.name for spec in iter_tasks()))


def __getattr__(name: str) -> Any:
    """``mitk.load``, ``mitk.segment`` …: the names of :mod:`mitk.api`, imported on first use."""
    if not name.startswith("_") and name in _api_names():
        from mitk import api

        return getattr(api, name)
    raise AttributeError(f"module 'mitk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_api_names()})


__all__ = ["ENTRY_POINT_GROUP", "PROJECT_NAME", "__version__", "hookimpl"]
