"""Pytest fixtures for plugin authors (loaded automatically through the ``pytest11`` entry point).

``mitk_plugin_registry``  build a registry with extra plugin modules/objects registered in-process
``mitk_volume``            a small, seeded, anatomy-like NIfTI volume with an oblique affine
``mitk_run``               run the ``mitk`` CLI in a subprocess and get the CompletedProcess

Nothing here imports torch or monai at import time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


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
    """``mitk_run("segment", path, "--plugin", "mine", env={...})`` runs the CLI as a user would."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mitk", *map(str, args)], capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, cwd=cwd, timeout=900)

    return run
