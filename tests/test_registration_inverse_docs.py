"""docs/registration.md § Inverses: every command and Python example in the section runs, as written, on real
anatomy (the MNI152 T1 at 2 mm, a copy moved by a known affine, and a 116-parcel label map)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke, load
from test_label_warp import parcellation
from test_registration_affine import known_affine, moved_copy

PAGE = Path(__file__).resolve().parents[1] / "docs" / "registration.md"


def section() -> str:
    text = PAGE.read_text()
    start, end = text.index("<!-- inverse-docs:start -->"), text.index("<!-- inverse-docs:end -->")
    return text[start:end]


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_threaded_torch: None) -> None:
    """Small tensors: one torch thread is faster on a shared CPU."""


def test_the_section_runs_as_written(mni_t1_2mm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = section()
    commands = [line[2:] for line in text.splitlines() if line.startswith("$ mitk ")]
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(commands) == 4 and len(blocks) == 1
    fixed = load(mni_t1_2mm)
    nib.save(fixed, tmp_path / "fixed.nii.gz")
    moved_copy(np.asarray(fixed.get_fdata(), np.float32), np.asarray(fixed.affine, float), known_affine(),
               tmp_path / "moving.nii.gz")
    labels, affine = parcellation(resolution=2)
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "fixed_labels.nii.gz")
    monkeypatch.chdir(tmp_path)
    for command in commands:
        code, _, stderr = invoke(shlex.split(command)[1:])
        assert code == 0, (command, stderr)
    assert {"t.mat", "t_inverse.mat", "warped_inverse_warped.nii.gz", "warped_preview.png"} <= set(os.listdir())
    exec(compile(blocks[0], "registration.md", "exec"), {})  # the page's own example
    assert Path("check.png").stat().st_size > 10_000
    # the two ways of carrying the fixed labels onto the moving grid agree (the last command printed Dice)
    inverted = np.asarray(load(tmp_path / "labels_on_moving.nii.gz").dataobj)
    same = np.asarray(load(tmp_path / "same_on_moving.nii.gz").dataobj)
    assert (inverted == same).mean() > 0.999 and len(np.unique(inverted)) > 100
