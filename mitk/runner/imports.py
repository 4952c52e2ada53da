"""Heavy packages imported without the optional imports their package module makes but mitk never uses.

``import monai`` (which any ``import monai.x`` runs first) imports every MONAI submodule, and with them each
optional package it finds installed: ``mlflow`` (for ``MLFlowHandler``), ``ignite`` (engines, handlers),
``pandas`` (profiling) and ``matplotlib.pyplot`` (notebook plots). None of them runs in mitk's inference, yet they
cost about 2.5 s of CPU and 150 MiB of memory at every start (measured: ``import monai`` 5.7 s CPU, 523 MiB;
without them 3.2 s, 373 MiB). Likewise ``import nibabel`` imports pydicom (``nibabel.nifti1`` asks for it only to
parse a NIfTI header's DICOM extension, code 2), and pydicom pulls in its pixel decoders, PIL and ``requests``:
about 0.25 s of CPU, a third of a classical ``mitk segment`` call, for extensions mitk never reads (outputs drop
every extension, see :func:`mitk.io.nifti.nifti_image`; nibabel then keeps the bytes as a plain
``Nifti1Extension``).

:func:`hide_while_importing` arranges that when a package is first imported, the named modules are hidden while
its package module executes (the package then binds its usual "not installed" placeholders) and unhidden at once:
a later ``import pandas`` or ``import pydicom`` works as ever, and a process that never imports the package (a
classical plugin) or imported the hidden module first is not touched. The command line arranges it (nibabel for
every command, MONAI for the task verbs: a whole process that runs a model); the Python API never does, as a
caller may use MONAI's engines and handlers, or pydicom through nibabel, in the same process.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

NOT_FOR_INFERENCE = ("mlflow", "ignite", "pandas", "matplotlib")
"""What MONAI's package import loads but mitk's inference never uses."""
NOT_FOR_NIFTI = ("pydicom",)
"""What nibabel's package import loads but mitk's NIfTI reading never uses."""


class _HidingLoader(importlib.abc.Loader):
    """The package's own loader, with ``hidden`` hidden while the package module executes."""

    def __init__(self, loader: Any, hidden: tuple[str, ...]) -> None:
        self.loader, self.hidden = loader, hidden

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        created: ModuleType | None = self.loader.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        hidden = [name for name in self.hidden if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]  # `import name` now raises ImportError
        try:
            self.loader.exec_module(module)
        finally:
            for name in hidden:
                if name in sys.modules and sys.modules[name] is None:
                    del sys.modules[name]


class _Hiding(importlib.abc.MetaPathFinder):
    """Finds ``package`` as the other finders do, and hands back its spec with :class:`_HidingLoader`; once."""

    def __init__(self, package: str, hidden: tuple[str, ...]) -> None:
        self.package, self.hidden = package, hidden

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name != self.package:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _HidingLoader(spec.loader, self.hidden)
        return spec


def hide_while_importing(package: str, hidden: tuple[str, ...]) -> None:
    """Make the first ``import package`` of this process run without ``hidden``; nothing if it happened or is
    already arranged."""
    if package in sys.modules or any(isinstance(finder, _Hiding) and finder.package == package
                                     for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _Hiding(package, hidden))


def lean_monai_import() -> None:
    """Make the first ``import monai`` of this process hide :data:`NOT_FOR_INFERENCE`."""
    hide_while_importing("monai", NOT_FOR_INFERENCE)


def lean_nibabel_import() -> None:
    """Make the first ``import nibabel`` of this process hide :data:`NOT_FOR_NIFTI` (pydicom)."""
    hide_while_importing("nibabel", NOT_FOR_NIFTI)
