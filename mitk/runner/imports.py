"""MONAI imported for inference without the optional packages its package import loads but inference never uses.

``import monai`` (which any ``import monai.x`` runs first) imports every MONAI submodule, and with them each
optional package it finds installed: ``mlflow`` (for ``MLFlowHandler``), ``ignite`` (engines, handlers),
``pandas`` (profiling) and ``matplotlib.pyplot`` (notebook plots). None of them runs in mitk's inference, yet they
cost about 2.5 s of CPU and 150 MiB of memory at every start (measured: ``import monai`` 5.7 s CPU, 523 MiB;
without them 3.2 s, 373 MiB). :func:`lean_monai_import` arranges that when MONAI is first imported, they are
hidden while its package imports (MONAI then binds its usual "not installed" placeholders for them) and unhidden
at once: a later ``import pandas`` works as ever, and a process that never imports MONAI (a classical plugin)
is not touched. The command line arranges it for the task verbs only (a whole process that runs a model); the
Python API never does, as a caller may use MONAI's engines and handlers in the same process.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

NOT_FOR_INFERENCE = ("mlflow", "ignite", "pandas", "matplotlib")


class _HidingLoader(importlib.abc.Loader):
    """MONAI's own loader, with :data:`NOT_FOR_INFERENCE` hidden while the package module executes."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        created: ModuleType | None = self.loader.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        hidden = [name for name in NOT_FOR_INFERENCE if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]  # `import name` now raises ImportError
        try:
            self.loader.exec_module(module)
        finally:
            for name in hidden:
                if name in sys.modules and sys.modules[name] is None:
                    del sys.modules[name]


class _LeanMonai(importlib.abc.MetaPathFinder):
    """Finds ``monai`` as the other finders do, and hands back its spec with :class:`_HidingLoader`; once."""

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name != "monai":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _HidingLoader(spec.loader)
        return spec


def lean_monai_import() -> None:
    """Make the first ``import monai`` of this process hide :data:`NOT_FOR_INFERENCE`; nothing if it happened."""
    if "monai" in sys.modules or any(isinstance(finder, _LeanMonai) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _LeanMonai())
