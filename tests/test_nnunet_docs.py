"""docs/pretrained-models.md § nnU-Net model folders: every command and the Python example run."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "pretrained-models.md"
SECTION = "\n## nnU-Net model folders"

pytest.importorskip("nnunetv2")
pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def section() -> str:
    text = PAGE.read_text()
    assert SECTION in text
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def commands() -> list[list[str]]:
    return [shlex.split(line[2:]) for line in re.findall(r"^\$ mitk .*$", section(), re.MULTILINE)]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The files the section names: the committed model folder, a real CT crop, a real CT series."""
    import pydicom.data
    import SimpleITK as sitk

    shutil.copytree(ROOT / "tests" / "data" / "nnunet" / "Dataset990_LungCrop", tmp_path / "Dataset990_LungCrop")
    image = sitk.ReadImage(str(ROOT / "tests" / "data" / "lung1_image.nii.gz"))
    sitk.WriteImage(sitk.RegionOfInterest(image, [64, 64, 16], [30, 30, 24]), str(tmp_path / "ct.nii.gz"))
    series = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
    shutil.copytree(series, tmp_path / "ct_series")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_command_and_the_python_example_run(workdir: Path, run_inprocess) -> None:
    assert [command[1] for command in commands()] == ["info", "segment", "segment", "segment"]
    outputs = []
    for command in commands():
        code, out, err = run_inprocess(*command[1:])
        assert code == 0, f"{' '.join(command)}: {err}"
        outputs.append(out)
    assert "Dataset990_LungCrop" in outputs[0] and "lesion" in outputs[0]
    assert (workdir / "ct_seg.nii.gz").is_file() and (workdir / "fast_seg.nii.gz").is_file()
    assert (workdir / "out" / "ct_series_seg.dcm").is_file()
    blocks = re.findall(r"```python\n(.*?)```", section(), re.DOTALL)
    assert len(blocks) == 1
    printed: list[str] = []
    exec(compile(blocks[0], "docs/pretrained-models.md", "exec"), {"print": lambda *a: printed.append(str(a[0]))})
    assert printed == [str({0: "background", 1: "lesion"})]
    code, out, _ = run_inprocess("info", "--weights", "Dataset990_LungCrop", "--json")
    assert code == 0 and json.loads(out)["folds"] == ["0", "1"]
