"""Pytest fixtures for plugin authors and mitk's own tests (loaded automatically through ``pytest11``).

``mitk_plugins``           make test plugins live everywhere in mitk for one test; returns the registry
``mitk_plugin_registry``  build a registry with extra plugin modules/objects, without making it live
``mitk_volume``            a small, seeded, anatomy-like NIfTI volume with an oblique affine
``mitk_run``               run the ``mitk`` CLI in a subprocess (:func:`run_mitk`) and get the CompletedProcess

For a module- or session-scoped fixture, use the context manager :func:`mitk.plugin_manager.use_plugins`
directly. Nothing here imports torch or monai at import time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mitk.registry import Registry


def run_mitk(*args: str | os.PathLike[str], env: Mapping[str, str | None] | None = None,
             cwd: str | os.PathLike[str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mitk ARGS`` in a subprocess, as a user or a shell script would.

    ``env`` is laid over the current environment; a ``None`` value removes that variable.
    """
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "mitk", *map(str, args)], capture_output=True, text=True,
                          env={k: v for k, v in full_env.items() if v is not None}, cwd=cwd, timeout=timeout)


@pytest.fixture
def mitk_plugins() -> Iterator[Callable[..., Registry]]:
    """``mitk_plugins(my_plugin_module_or_object)`` → the registry that every part of mitk (``get_registry()``,
    the runners, the CLI invoked in-process) uses until this test ends: the built-ins plus the given plugins.

    A given plugin that is broken (a misspelt hook, a hook that raises) fails the test with the reason.
    ``autoload=True`` adds the installed third-party plugins.
    """
    from mitk.plugin_manager import use_plugins

    with ExitStack() as stack:

        def use(*plugins: Any, autoload: bool = False) -> Registry:
            return stack.enter_context(use_plugins(*plugins, autoload=autoload))

        yield use


@pytest.fixture
def mitk_plugin_registry() -> Callable[..., Any]:
    """``mitk_plugin_registry(my_plugin_module)`` → a :class:`mitk.registry.Registry` that includes it."""
    from mitk.plugin_manager import build_plugin_manager

    def build(*plugins: Any, autoload: bool = False) -> Any:
        return build_plugin_manager(extra_plugins=plugins, autoload=autoload)[1]

    return build


@pytest.fixture
def mitk_volume(tmp_path: Path) -> Path:
    """A 32×28×24 smooth blob volume (int16) with an oblique, anisotropic affine, as ``.nii.gz``."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    i, j, k = np.meshgrid(*(np.linspace(-1, 1, n) for n in (32, 28, 24)), indexing="ij")
    body = np.exp(-((i / 0.7) ** 2 + (j / 0.6) ** 2 + (k / 0.8) ** 2) * 2)
    array = (body * 1000 + rng.normal(0, 20, body.shape)).astype(np.int16)
    angle = np.deg2rad(12)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.2, 1.0, 2.5])
    affine[:3, 3] = [-20, -15, -30]
    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


@pytest.fixture
def mitk_run() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``mitk_run("segment", path, "--plugin", "mine", env={...})`` runs the CLI as a user would (:func:`run_mitk`)."""
    return run_mitk
