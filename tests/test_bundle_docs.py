"""docs/pretrained-models.md: every command and the Python example run, on real images and real bundle configs."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from bundle_factory import make_bundle

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "pretrained-models.md"
NNUNET_SECTION = "\n## nnU-Net model folders"
"""The page's last section, run by tests/test_nnunet_docs.py."""


def bundle_part() -> str:
    return PAGE.read_text().split(NNUNET_SECTION)[0]

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def commands() -> list[list[str]]:
    """The page's mitk commands but HD-BET's, which are the README's (run by tests/test_hdbet.py)."""
    return [shlex.split(line[2:]) for line in re.findall(r"^\$ mitk .*$", bundle_part(), re.MULTILINE)
            if "--plugin hdbet" not in line]


def test_the_hdbet_commands_are_the_readmes() -> None:
    """The HD-BET example on the page is the README's, which tests/test_hdbet.py runs as written."""
    from test_hdbet import readme_commands

    page = re.findall(r"^\$ (.*hdbet.*)$", PAGE.read_text(), re.MULTILINE)
    assert page and page == readme_commands()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", bundle_part(), re.DOTALL)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The files the page names: two bundles with seeded weights, a real CT, a real CT series, a real photo."""
    import pydicom.data
    import skimage.data
    from PIL import Image as Picture

    make_bundle("spleen_ct_segmentation", tmp_path)
    make_bundle("endoscopic_inbody_classification", tmp_path)
    shutil.copy(ROOT / "tests" / "data" / "lung1_image.nii.gz", tmp_path / "ct.nii.gz")
    series = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
    shutil.copytree(series, tmp_path / "ct_series")
    Picture.fromarray(skimage.data.retina()[::8, ::6]).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_page_shows_the_commands_it_promises() -> None:
    verbs = [command[1] for command in commands()]
    assert verbs == ["info", "segment", "segment", "classify"]
    assert len(python_blocks()) == 1


def test_every_command_runs(workdir: Path, run_inprocess) -> None:
    outputs = []
    for command in commands():
        code, out, err = run_inprocess(*command[1:])
        assert code == 0, f"{' '.join(command)}: {err}"
        outputs.append(out)
    assert "spleen" in outputs[0]
    assert (workdir / "ct_seg.nii.gz").is_file() and (workdir / "out" / "ct_series_seg.dcm").is_file()
    assert json.loads(outputs[3])["cases"][0]["predicted"] in ("in body", "out body")


def test_the_python_example_runs(workdir: Path) -> None:
    exec(compile(python_blocks()[0], "docs/pretrained-models.md", "exec"), {})
    assert (workdir / "ct_seg_api.nii.gz").is_file()
