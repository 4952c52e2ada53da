"""docs/formats.md: every command and the Python example run, on real images (pyradiomics MR, ITK's oblique NRRD
header, pydicom's CT slice and radiograph, scikit-image's fundus photograph and microaneurysm crop)."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "formats.md"
ITK = ROOT / "tests" / "data" / "itk_formats"

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def commands() -> list[list[str]]:
    return [shlex.split(line[2:]) for line in re.findall(r"^\$ mitk .*$", PAGE.read_text(), re.MULTILINE)]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, brain_mr: Path, brain_mr_label: Path) -> Path:
    import pydicom.data
    import skimage.data
    from PIL import Image as Picture

    shutil.copy(brain_mr, tmp_path / "mr.nii.gz")
    shutil.copy(brain_mr_label, tmp_path / "mr_label.nii.gz")
    shutil.copy(ITK / "BrainProtonDensitySliceBorder20DirectionPlus30.nhdr", tmp_path / "oblique.nhdr")
    shutil.copy(ITK / "BrainProtonDensitySliceBorder20DirectionPlus30.raw", tmp_path)
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    shutil.copy(pydicom.data.get_testdata_file("RG3_UNCR.dcm"), tmp_path / "radiograph.dcm")
    Picture.fromarray(skimage.data.microaneurysms()).save(tmp_path / "micro.png")
    Picture.fromarray(skimage.data.retina()[::4, ::4]).save(tmp_path / "fundus.jpg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_page_shows_the_commands_it_promises() -> None:
    verbs = [command[1] for command in commands()]
    assert verbs == ["convert", "info", "info", "convert", "segment", "segment", "convert", "evaluate", "segment",
                     "segment", "segment", "segment"]
    assert len(python_blocks()) == 1


def test_every_command_runs(workdir: Path, run_inprocess) -> None:
    outputs = {}
    for command in commands():
        code, out, err = run_inprocess(*command[1:])
        assert code == 0, f"{' '.join(command)}: {err}"
        outputs[" ".join(command[1:])] = (out, err)
    assert json.loads(outputs["info oblique.nhdr --json"][0])["itk"]["format"] == "NRRD"
    for name in ("mr.nrrd", "ct.mha", "mr_seg.nrrd", "labels.mha", "micro_seg.png", "micro_labels.nii.gz",
                 "radiograph_seg.nii.gz", "fundus_seg.png"):
        assert (workdir / name).is_file(), name
    evaluation = outputs["evaluate segment --pred mr_seg.nrrd --ref mr_label.nrrd"][0]
    assert "Dice" in evaluation
    with (workdir / "micro_seg_stats.csv").open(newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert list(row) == ["label", "name", "pixels", "area_mm2", "mean_intensity", "pixel_spacing_mm",
                         "spacing_source"]
    assert row["spacing_source"] == "unknown (1 mm assumed)"
    assert "mm²" in outputs["segment fundus.jpg --plugin threshold --stats"][1]
    namespace: dict[str, object] = {}
    exec(python_blocks()[0], namespace)  # the page's own example
    assert (workdir / "mr_labels.nrrd").is_file() and (workdir / "micro_labels.png").is_file()
