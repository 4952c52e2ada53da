"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np


def load(path: Path) -> Any:
    """``nibabel.load``, typed loosely (nibabel's stubs know only the base image class)."""
    return nib.load(path)


def invoke(args: list[str]) -> tuple[int, str, str]:
    """Run ``mitk.cli.main(args)`` in this process; return (exit status, stdout, stderr)."""
    from mitk.cli import main
    from mitk.cli.common import STATE

    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main(args)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    finally:
        STATE.debug = STATE.quiet = False
    return code, stdout.getvalue(), stderr.getvalue()


def rotation(degrees_x: float, degrees_y: float, degrees_z: float) -> np.ndarray:
    """3×3 rotation: about x, then y, then z (degrees)."""
    x, y, z = np.deg2rad([degrees_x, degrees_y, degrees_z])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def install_plugin_project(project: Path, target: Path) -> Path:
    """``pip install --no-deps --no-build-isolation --no-index --target TARGET PROJECT``: a plugin package installed
    the way a user installs it, into a private folder (put it on ``PYTHONPATH`` of subprocesses only)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--target", str(target), str(project)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"})
    assert result.returncode == 0, result.stderr
    return target


def use_segmenter(mitk_plugins: Callable[..., Any], name: str, factory: Callable[[], Any]) -> None:
    """Register a segmentation plugin for this test only (through the ``mitk_plugins`` fixture)."""
    from mitk import hookimpl

    class Plugin:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register: Any) -> None:
            register(name, task="segment", factory=factory)

    mitk_plugins(Plugin())
