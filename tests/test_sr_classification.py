"""TID 1500 SR of a classification: each class a finding with its probability, the predicted one present."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pytest
from dicom_factory import series_from_nifti
from test_dicom_seg import image_from_series

from mitk.tasks.classify.dicom_sr import write_classification_sr

DCIODVFY = shutil.which("dciodvfy")


def test_probabilities_and_the_predicted_class(anatomical_t1: Path, tmp_path: Path) -> None:
    image = image_from_series(series_from_nifti(anatomical_t1, tmp_path / "series", "axial"))
    probabilities = {"normal": 0.25, "lesion": 0.75}
    path = write_classification_sr(probabilities, "lesion", image, tmp_path / "sr.dcm", plugin_name="resnet")
    sr = hd.sr.srread(path)
    [measurements] = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "126010"]
    classes = {}
    for group in measurements.ContentSequence:
        items = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in group.ContentSequence}
        name = items["Tracking Identifier"].TextValue.removeprefix("class ")
        probability = float(items["Probability"].MeasuredValueSequence[0].NumericValue)
        classes[name] = (probability, items["Finding"].ConceptCodeSequence[0].CodeMeaning)
    assert classes == {"normal": (0.25, "Absent"), "lesion": (0.75, "Present")}
    assert sr.StudyInstanceUID == image.meta["dicom"].headers[0].StudyInstanceUID
    if DCIODVFY is not None:
        run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
        assert [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")] == [], run.stderr


def test_a_nifti_image_is_refused(tmp_path: Path) -> None:
    import numpy as np

    from mitk.errors import InputError
    from mitk.image import Image

    with pytest.raises(InputError, match="needs a DICOM input"):
        write_classification_sr({"a": 1.0}, "a", Image(np.zeros((2, 2, 2)), np.eye(4)), tmp_path / "x.dcm",
                                plugin_name="resnet")


def test_classify_dicom_sr_on_the_command_line(anatomical_t1: Path, tmp_path: Path) -> None:
    import json

    import torch
    from helpers import invoke

    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    series = series_from_nifti(anatomical_t1, tmp_path / "series", "axial")
    plugin = get_registry().get("resnet", "classify").load()
    config = plugin.resolve_config({"class_names": ["normal", "lesion"], "spatial_dims": 3, "in_channels": 1,
                                    "image_size": [32, 32, 32]})
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "r.safetensors", plugin.network(config).state_dict(), task="classify",
                              plugin="resnet", plugin_version="0", config=config)
    code, _, stderr = invoke(["classify", str(series.directory), "--weights", str(weights), "--dicom-sr", "-d",
                              str(tmp_path / "out")])
    assert code == 0, stderr
    record = json.loads((tmp_path / "out" / "series_class.json").read_text())
    sr = hd.sr.srread(record["sr"])
    assert f"{record['probabilities']['lesion']:.4f}"[:5] in str(sr)
    if DCIODVFY is not None:
        run = subprocess.run([DCIODVFY, record["sr"]], capture_output=True, text=True, timeout=60)
        assert [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")] == []
    code, _, stderr = invoke(["classify", str(series.directory), "--weights", str(weights), "--dicom-sr"])
    assert code == 2 and "--dicom-sr writes beside the JSON record" in stderr
