"""nibabel imported for the command line without the pydicom import it does not need.

``import nibabel`` imports pydicom (``nibabel.nifti1`` asks for it at import time, only to parse the DICOM
extension of a NIfTI header, code 2), and pydicom's import pulls in its pixel decoders, PIL and ``requests``:
about 0.25 s of CPU, a third of a classical ``mitk segment`` call. mitk never reads those extensions (outputs
drop every extension, see :func:`mitk.io.nifti.nifti_image`), so :func:`lean_nibabel_import` arranges that when
nibabel is first imported, pydicom is hidden while nibabel's package imports (nibabel then keeps the extension's
bytes as a plain ``Nifti1Extension``) and unhidden at once: a later ``import pydicom`` (a DICOM input) works as
ever, and a process that imported pydicom before nibabel is not touched. The command line arranges it; the
Python API never does.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

HIDDEN = ("pydicom",)


class _HidingLoader(importlib.abc.Loader):
    """nibabel's own loader, with :data:`HIDDEN` hidden while the package module executes."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        created: ModuleType | None = self.loader.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        hidden = [name for name in HIDDEN if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]  # `import name` now raises ImportError
        try:
            self.loader.exec_module(module)
        finally:
            for name in hidden:
                if name in sys.modules and sys.modules[name] is None:
                    del sys.modules[name]


class _LeanNibabel(importlib.abc.MetaPathFinder):
    """Finds ``nibabel`` as the other finders do, and hands back its spec with :class:`_HidingLoader`; once."""

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name != "nibabel":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _HidingLoader(spec.loader)
        return spec


def lean_nibabel_import() -> None:
    """Make the first ``import nibabel`` of this process skip pydicom; nothing if nibabel is already imported."""
    if "nibabel" in sys.modules or any(isinstance(finder, _LeanNibabel) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _LeanNibabel())
