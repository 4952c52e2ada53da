"""mitk: plugin-based medical image analysis on MONAI.

The front door: nothing inside the package imports it (constants live in :mod:`mitk.constants`, ``hookimpl`` in
:mod:`mitk.hookspecs`). This module stays light: importing :mod:`mitk` must not import torch, monai, nibabel or
pydicom. The Python API (:mod:`mitk.api`: ``mitk.load``, ``mitk.Model``, ``mitk.as_image`` and one call per task of
the task table, ``mitk.segment`` …) is reached through :func:`__getattr__`; torch and monai load on the first
``load``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import TYPE_CHECKING, Any

from mitk.constants import ENTRY_POINT_GROUP, PROJECT_NAME, __version__
from mitk.hookspecs import hookimpl

if TYPE_CHECKING:  # for type checkers; at run time these come from __getattr__ below
    from mitk.api import Model as Model
    from mitk.api import as_image as as_image
    from mitk.api import load as load

logging.getLogger(PROJECT_NAME).addHandler(logging.NullHandler())  # a library logs; the application shows (the CLI)

_API_NAMES = ("Model", "as_image", "load")


def _api_names() -> tuple[str, ...]:
    from mitk.taskspecs import task_names

    return (*_API_NAMES, *task_names())


def __getattr__(name: str) -> Any:
    """``mitk.load``, ``mitk.segment`` …: the names of :mod:`mitk.api`, imported on first use. A submodule's
    name (``from mitk import options``) is left to the import system without reading the task table."""
    if name.startswith("_"):
        raise AttributeError(f"module 'mitk' has no attribute {name!r}")
    if name not in _API_NAMES and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _api_names():
        from mitk import api

        return getattr(api, name)
    raise AttributeError(f"module 'mitk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_api_names()})


__all__ = ["ENTRY_POINT_GROUP", "PROJECT_NAME", "__version__", "hookimpl"]
