"""Every table mitk prints keeps file names visible: a long path (a deep install or data folder) loses its
middle, never its end. Real commands in this process at a fixed terminal width (``COLUMNS``), on real images
copied under a long folder path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import invoke

from mitk.checkpoint import save_checkpoint
from mitk.console import ELLIPSIS, elide_middle

pytestmark = pytest.mark.usefixtures("single_threaded_torch")

WIDTH = 80


@pytest.fixture
def deep(tmp_path: Path) -> Path:
    """A folder whose path alone is wider than the terminal."""
    folder = tmp_path / ("long-install-prefix-" * 3) / "lib" / "python3.12" / "site-packages" / "project-data"
    folder.mkdir(parents=True)
    assert len(str(folder)) > WIDTH
    return folder


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    return WIDTH


def printed_lines(stdout: str) -> list[str]:
    return [line.rstrip() for line in stdout.splitlines() if line.strip()]


def test_classify_table_keeps_the_file_names(deep: Path, narrow: int, tmp_path: Path) -> None:
    from mitk_builtin._classify_networks import ResNetClassifier
    from PIL import Image
    from skimage import data

    plugin = ResNetClassifier()
    config = plugin.resolve_config({"class_names": ["normal", "lesion", "other"], "spatial_dims": 2,
                                    "image_size": [32, 32], "network": {"widen_factor": 0.25}})
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "resnet.safetensors", plugin.network(config).state_dict(),
                              task="classify", plugin="resnet", plugin_version="0", config=config)
    names = ["fundus_microaneurysms_left_eye.png", "fundus_retina_right_eye.png"]
    Image.fromarray(data.microaneurysms()).save(deep / names[0])
    Image.fromarray(data.retina()[::8, ::8]).save(deep / names[1])

    code, stdout, stderr = invoke(["classify", *(str(deep / name) for name in names), "--weights", str(weights),
                                   "-d", str(tmp_path / "out")])
    assert code == 0, stderr
    lines = printed_lines(stdout)
    assert lines[0].split() == ["input", "predicted", "normal", "lesion", "other"]
    for name, line in zip(names, lines[1:], strict=True):
        assert name in line and ELLIPSIS in line  # the whole name, after an elided middle
        assert line.startswith(str(deep)[:8])  # and the start of the path
        assert len(line) <= narrow


def test_segment_evaluation_table_keeps_the_end_of_case_names(deep: Path, narrow: int, brain_mr_label: Path
                                                              ) -> None:
    case = "cohort2024_siteA_scannerB_protocolC_followup3_patient_case_0001"
    prediction, reference = deep / f"{case}_seg.nii.gz", deep / f"{case}.nii.gz"
    shutil.copy(brain_mr_label, prediction)
    shutil.copy(brain_mr_label, reference)
    code, stdout, stderr = invoke(["evaluate", "segment", "--pred", str(prediction), "--ref", str(reference)])
    assert code == 0, stderr
    [header, row, mean] = printed_lines(stdout)[:3]
    cell = row.split()[0]
    assert header.split()[0] == "case" and mean.split()[0] == "mean"
    assert cell.startswith(ELLIPSIS) and cell.endswith("_0001") and len(row) <= narrow  # not "cohor…"
    assert "1.0000" in row  # the scores are still there


def test_info_keeps_the_file_name(deep: Path, narrow: int, anatomical_t1: Path) -> None:
    image = deep / "subject-0001_ses-01_T1w.nii"
    shutil.copy(anatomical_t1, image)
    code, stdout, stderr = invoke(["info", str(image)])
    assert code == 0, stderr
    [row] = [line for line in printed_lines(stdout) if line.split()[0] == "path"]
    assert row.endswith("subject-0001_ses-01_T1w.nii") and ELLIPSIS in row and len(row) <= narrow


@pytest.mark.parametrize(("width", "expected"), [
    (200, "/data/site/subject/scan.nii.gz"),
    (30, "/data/site/subject/scan.nii.gz"),
    (29, "/data/site/subjec…scan.nii.gz"),
    (20, "/data/si…scan.nii.gz"),
    (13, "/…scan.nii.gz"),
    (12, "…scan.nii.gz"),  # the name alone, whole
    (8, "….nii.gz"),  # a name too long for the cell keeps its end
    (1, "…"),
])
def test_elide_middle_keeps_the_end(width: int, expected: str) -> None:
    assert elide_middle("/data/site/subject/scan.nii.gz", width) == expected


def test_a_short_name_keeps_its_nearest_folders_whole() -> None:
    path = "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/data/site/subject/scan.nii.gz"
    assert elide_middle(path, 60) == "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o…data/site/subject/scan.nii.gz"
    assert elide_middle(path, 40) == "/a/b/c/d/e/f/g/h/i/j…subject/scan.nii.gz"
