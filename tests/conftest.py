"""Shared fixtures: real images from ../shared/data and installed packages, skipped cleanly when absent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mitk.testing import run_mitk

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MITK_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture(scope="session")
def brain_mr() -> Path:
    """Real MR brain (256×256×25, LAS) from pyradiomics."""
    return shared_file("pyradiomics", "brain1_image.nii.gz")


@pytest.fixture(scope="session")
def brain_mr_label() -> Path:
    return shared_file("pyradiomics", "brain1_label.nii.gz")


@pytest.fixture(scope="session")
def lung_ct() -> Path:
    """Real CT chest (512×512×48) from pyradiomics."""
    return shared_file("pyradiomics", "lung1_image.nii.gz")


@pytest.fixture(scope="session")
def lung_ct_label() -> Path:
    return shared_file("pyradiomics", "lung1_label.nii.gz")


@pytest.fixture(scope="session")
def anatomical_t1() -> Path:
    """nibabel's bundled real T1 (33×41×25 at 2 mm)."""
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"


@pytest.fixture(scope="session")
def mni_t1_2mm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nilearn's MNI152 T1 template at 2 mm, written as NIfTI (ships with nilearn, no download)."""
    datasets = pytest.importorskip("nilearn.datasets")
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
