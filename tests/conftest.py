"""Shared fixtures: real images kept in tests/data (see its README) and installed packages."""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mitk.testing import run_mitk

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"
BACKSTOP_GRACE = 60.0
"""Seconds past a test's time limit (pytest-timeout's) before the backstop below ends the run."""


def time_limit(item: pytest.Item) -> float:
    """The test's limit: its ``timeout`` marker, else the ``timeout`` setting (pyproject); 0 for none."""
    marker = item.get_closest_marker("timeout")
    try:
        value = marker.args[0] if marker is not None and marker.args else item.config.getini("timeout")
        return float(value or 0)
    except (TypeError, ValueError):  # pytest-timeout not installed, or a limit that is not a number
        return 0.0


_REPORTS: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Keep a copy of the real stderr for the backstop: while a test runs, pytest captures file descriptor 2."""
    if "stderr" not in _REPORTS and sys.__stderr__ is not None:
        _REPORTS["stderr"] = os.fdopen(os.dup(sys.__stderr__.fileno()), "w")


def pytest_unconfigure(config: pytest.Config) -> None:
    stderr = _REPORTS.pop("stderr", None)
    if stderr is not None:
        stderr.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    """A backstop behind pytest-timeout: a test still running ``BACKSTOP_GRACE`` s after its limit (a hang that
    holds the interpreter, where pytest-timeout's signal cannot act) gets every thread's stack printed, the test's
    own frame among them, and the run ends (exit status 1) instead of hanging. faulthandler's watchdog is a C
    thread: it needs no Python code to run. Off when ``faulthandler_timeout`` is set (it would replace this)."""
    limit = time_limit(item)
    armed = limit > 0 and not float(item.config.getini("faulthandler_timeout") or 0) and "stderr" in _REPORTS
    if armed:
        faulthandler.dump_traceback_later(limit + BACKSTOP_GRACE, exit=True, file=_REPORTS["stderr"])
    try:
        yield
    finally:
        if armed:
            faulthandler.cancel_dump_traceback_later()


def data_file(name: str) -> Path:
    """A file of tests/data; missing means a broken checkout, so it fails rather than skips."""
    path = TEST_DATA / name
    if not path.is_file():
        raise FileNotFoundError(f"test data missing from the repository: {path}")
    return path


@pytest.fixture(scope="session")
def brain_mr() -> Path:
    """Real MR brain with a tumour (128×128×25 LAS, 0.78×0.78×6.5 mm), an in-plane crop of pyradiomics brain1."""
    return data_file("brain1_image.nii.gz")


@pytest.fixture(scope="session")
def brain_mr_label() -> Path:
    """The tumour label of :func:`brain_mr` (1 = tumour), on its grid."""
    return data_file("brain1_label.nii.gz")


@pytest.fixture(scope="session")
def lung_ct() -> Path:
    """Real CT chest with a lesion (128×128×48 LPS, 0.57×0.57×5 mm), an in-plane crop of pyradiomics lung1."""
    return data_file("lung1_image.nii.gz")


@pytest.fixture(scope="session")
def lung_ct_label() -> Path:
    """The lesion label of :func:`lung_ct` (1 = lesion), on its grid."""
    return data_file("lung1_label.nii.gz")


@pytest.fixture(scope="session")
def anatomical_t1() -> Path:
    """nibabel's bundled real T1 (33×41×25 at 2 mm)."""
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"


@pytest.fixture(scope="session")
def mni_t1_2mm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nilearn's MNI152 T1 template at 2 mm, written as NIfTI (ships with nilearn, no download)."""
    from nilearn import datasets  # the test extra installs nilearn (mitk[sample])

    path = tmp_path_factory.mktemp("mni") / "mni152_t1_2mm.nii.gz"
    datasets.load_mni152_template(resolution=2).to_filename(path)
    return path


@pytest.fixture
def mitk_cli():
    """``mitk_cli("segment", ...)`` runs mitk in a subprocess (:func:`mitk.testing.run_mitk`)."""
    return run_mitk


@pytest.fixture(scope="module")
def single_threaded_torch() -> Iterator[None]:
    """Tiny volumes: one torch thread is several times faster than two on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_inprocess(monkeypatch: pytest.MonkeyPatch):
    """``run_inprocess("info", path)`` runs ``mitk`` in this process (faster than a subprocess) and returns
    ``(exit status, stdout, stderr)``; tables are not folded."""
    from helpers import invoke

    monkeypatch.setenv("COLUMNS", "400")

    def run(*arguments: str) -> tuple[int, str, str]:
        return invoke([str(argument) for argument in arguments])

    return run
