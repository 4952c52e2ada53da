"""TID 1500 SR of a segmentation: a volume per segment in mL, referencing the SEG's segments; dciodvfy-clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from dicom_factory import series_from_nifti
from test_dicom_seg import image_from_series, threshold_result

from mitk.image import voxel_spacing
from mitk.tasks.segment.dicom_seg import write_dicom_seg
from mitk.tasks.segment.dicom_sr import write_segmentation_sr

DCIODVFY = shutil.which("dciodvfy")


def test_volumes_reference_the_seg_and_validate(anatomical_t1: Path, tmp_path: Path) -> None:
    image = image_from_series(series_from_nifti(anatomical_t1, tmp_path / "series", "axial"))
    result = threshold_result(image)
    seg_path = write_dicom_seg(result, image, tmp_path / "seg.dcm", plugin_name="threshold")
    seg = hd.seg.segread(seg_path)
    voxel_ml = float(np.prod(voxel_spacing(image.affine))) / 1000.0
    labels = np.asarray(result.label_map)
    values = sorted(v for v in result.labels if v != 0)
    volumes = {number: float(np.count_nonzero(labels == value)) * voxel_ml
               for number, value in enumerate(values, start=1)}
    path = write_segmentation_sr(seg_path, volumes, image, tmp_path / "sr.dcm", plugin_name="threshold")
    sr = hd.sr.srread(path)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(seg.SegmentSequence) == len(volumes)
    for group in groups:
        referenced = group.referenced_segment
        assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID
        [number] = referenced.referenced_segment_numbers
        [volume] = group.get_measurements()
        assert volume.name.meaning == "Volume" and volume.unit.value == "mL"
        assert volume.value == pytest.approx(volumes[number], rel=1e-6)
    assert {str(e.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
            for e in s.ReferencedSeriesSequence[0].ReferencedSOPSequence} >= {str(seg.SOPInstanceUID)}
    if DCIODVFY is not None:
        run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
        assert [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")] == []
