"""``mitk convert``'s lean path: a plain DICOM series read without pydicom (mitk.io.dicom.native) and a NIfTI
written without nibabel (mitk.io.nifti_plain) give exactly what the pydicom/nibabel path gives (array, affine,
summary, file bytes), equal to SimpleITK's read; everything else falls back to that path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import load_nifti, series_from_nifti, write_series
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from test_dicom_read import assert_matches_simpleitk

from mitk.image import Image
from mitk.io.dicom import read_dicom
from mitk.io.dicom.header import ATTRIBUTES, SOP_CLASS_NAMES, SYNTAX_NAMES, ParsedHeader
from mitk.io.dicom.native import read_native_series
from mitk.io.dicom.sidecar import descriptions, sidecar_document
from mitk.io.nifti import write_nifti
from mitk.io.nifti_plain import NIFTI1_CODES, plain_nifti_possible, write_plain_nifti
from mitk.io.reader import load_for_conversion

ROOT = Path(__file__).resolve().parents[1]
MR_ATTRIBUTES = {"RepetitionTime": "2000", "EchoTime": "30.5", "FlipAngle": "90", "EchoTrainLength": "8",
                 "ScanningSequence": ["SE", "IR"], "ImageType": ["ORIGINAL", "PRIMARY", ""],
                 "MagneticFieldStrength": "1.5", "SequenceName": "tse2d1_8 ", "ProtocolName": "t2 tse",
                 "ParallelReductionFactorInPlane": 2.0, "PixelBandwidth": "130.0"}


def test_the_tables_agree_with_pydicom():
    for keyword, (tag, vr) in ATTRIBUTES.items():
        assert tag_for_keyword(keyword) == tag and dictionary_VR(tag) == vr, keyword
    for uid, name in {**SOP_CLASS_NAMES, **SYNTAX_NAMES}.items():
        assert UID(uid).name == name


def assert_same_as_pydicom_path(directory: Path) -> Image:
    """The lean read equals read_dicom (voxels, dtype, affine, summary, descriptions) and SimpleITK's read."""
    lean = read_native_series(directory)
    assert lean is not None, "the plain series fell back to pydicom"
    full = read_dicom(directory)
    assert lean.array.dtype == full.array.dtype and np.array_equal(lean.array, full.array)
    assert np.array_equal(lean.affine, full.affine)
    assert lean.meta["dicom_summary"] == full.meta["dicom_summary"]
    lean_source, full_source = lean.meta["dicom"], full.meta["dicom"]
    assert isinstance(lean_source.headers[0], ParsedHeader)
    assert lean_source.files == full_source.files and lean_source.series_uid == full_source.series_uid
    assert descriptions(lean_source.headers[0]) == descriptions(full_source.headers[0])
    assert_matches_simpleitk(directory, lean)
    return lean


def rewrite(directory: Path, implicit: bool) -> None:
    """Rewrite every file of ``directory`` with nested undefined-length sequences and a 10 kB comment (a header
    past the first read), in Implicit VR Little Endian if ``implicit``."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    for file in directory.iterdir():
        dataset = pydicom.dcmread(file)
        inner = Dataset()
        inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D3000", "SRT", "Chest"
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = dataset.SOPClassUID, "1.2.3.4"
        item.PurposeOfReferenceCodeSequence = Sequence([inner])
        dataset.ReferencedImageSequence = Sequence([item, item])
        for element in (dataset["ReferencedImageSequence"], item["PurposeOfReferenceCodeSequence"]):
            element.is_undefined_length = True
        dataset.ImageComments = "c" * 10000
        if implicit:
            dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        dataset.save_as(file, enforce_file_format=True)


@pytest.mark.parametrize("orientation, implicit", [("axial", False), ("oblique", True)])
def test_real_mr_series_reads_as_with_pydicom(anatomical_t1, tmp_path, orientation, implicit):
    series_from_nifti(anatomical_t1, tmp_path, orientation, modality="MR", order="shuffled",
                      shuffle_instance_numbers=True, attributes=MR_ATTRIBUTES)
    rewrite(tmp_path, implicit)
    written = pydicom.dcmread(next(tmp_path.iterdir()))
    assert written.file_meta.TransferSyntaxUID == (ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian)
    assert written["ReferencedImageSequence"].is_undefined_length
    image = assert_same_as_pydicom_path(tmp_path)
    summary = image.meta["dicom_summary"]
    assert summary["ImageType"] == ["ORIGINAL", "PRIMARY"] and summary["EchoTime"] == 30.5
    assert summary["EchoTrainLength"] == 8 and summary["ScanningSequence"] == ["SE", "IR"]


def test_real_ct_rescale_and_types_read_as_with_pydicom(lung_ct, tmp_path):
    array, affine = load_nifti(lung_ct)
    write_series(array[:, :, 10:22], affine, tmp_path / "hu", modality="CT", order="reversed")
    assert assert_same_as_pydicom_path(tmp_path / "hu").array.dtype == np.int16
    write_series(array[:, :, 10:16], affine, tmp_path / "unsigned", modality="CT", signed=False)
    assert_same_as_pydicom_path(tmp_path / "unsigned")
    write_series(array[:, :, 10:16], affine, tmp_path / "scaled", modality="CT", slope=0.5, intercept=-1000.25)
    assert assert_same_as_pydicom_path(tmp_path / "scaled").array.dtype == np.float32


def test_anything_else_falls_back_to_pydicom(anatomical_t1, lung_ct, tmp_path, monkeypatch):
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)
    array, affine = load_nifti(lung_ct)
    cases = {
        # values pydicom warns about when it reads them: its path counts the warning, so it reads them
        "lowercase CS": dict(attributes={"BodyPartExamined": "chest"}),
        "long DS": dict(attributes={"SliceThickness": "0.62500000000000001"}),
        "compressed": dict(transfer_syntax=RLELossless),
        "enhanced": dict(enhanced=True),
        "gap": dict(drop=(3,)),
        "latin1": dict(description="Thorax \u00e9t\u00e9", attributes={"SpecificCharacterSet": "ISO_IR 100"}),
    }
    for name, options in cases.items():
        write_series(array[:, :, 10:18], affine, tmp_path / name, modality="CT", **options)  # type: ignore[arg-type]
    write_series(array[:, :, 10:14], affine, tmp_path / "two", modality="CT")
    write_series(array[:, :, 20:24], affine, tmp_path / "two", modality="CT", prefix="B", series_number=2)
    (tmp_path / "readme").mkdir()
    write_series(array[:, :, 10:14], affine, tmp_path / "readme", modality="CT")
    (tmp_path / "readme" / "README.txt").write_text("not DICOM")
    with zipfile.ZipFile(tmp_path / "series.zip", "w") as archive:
        for file in sorted((tmp_path / "gap").iterdir()):
            archive.write(file, file.name)
    for name in [*cases, "two", "readme", "series.zip"]:
        assert read_native_series(tmp_path / name) is None, name
    image = load_for_conversion(tmp_path / "compressed")  # through pydicom's decoders, as before
    assert np.array_equal(image.array, array[:, :, 10:18])
    assert not isinstance(image.meta["dicom"].headers[0], ParsedHeader)


@pytest.mark.parametrize("trial", range(24))
def test_plain_nifti_is_byte_identical_to_nibabel(tmp_path, trial):
    rng = np.random.default_rng(trial)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3))) if trial % 3 else (np.eye(3)[:, rng.permutation(3)], 0)
    affine = np.eye(4)
    affine[:3, :3] = rotation * rng.uniform(0.3, 5, 3) * rng.choice([-1, 1], 3)
    affine[:3, 3] = rng.uniform(-300, 300, 3)
    dtype = list(NIFTI1_CODES)[trial % len(NIFTI1_CODES)]
    array = rng.uniform(-100, 100, tuple(rng.integers(1, 7, 3))).astype(dtype)
    if dtype.kind == "f":
        array.flat[0] = np.nan
    if trial % 2:
        array = np.asfortranarray(array)
    like = Image(array=array, affine=affine, path=tmp_path / "source.dcm", meta={})
    assert plain_nifti_possible(array, like, None)
    for suffix in (".nii", ".nii.gz"):
        expected = write_nifti(array, tmp_path / f"nibabel{suffix}", like=like).read_bytes()
        assert write_plain_nifti(array, tmp_path / f"plain{suffix}", affine).read_bytes() == expected


def test_plain_nifti_leaves_other_images_to_nibabel(tmp_path):
    array = np.zeros((2, 3, 4), np.int16)
    affine = np.diag([1.0, 1.0, 0.0, 1.0])
    assert not plain_nifti_possible(array, Image(array=array, affine=affine, path=tmp_path, meta={}), None)
    assert not plain_nifti_possible(array, Image(array=array, affine=np.eye(4), path=tmp_path,
                                                 meta={"nifti_header": object()}), None)
    assert not plain_nifti_possible(array, Image(array=array, affine=np.eye(4), path=tmp_path, meta={}), "label")
    wide = array.astype(np.int64)
    assert not plain_nifti_possible(wide, Image(array=wide, affine=np.eye(4), path=tmp_path, meta={}), None)


LEAN_CALL = """
import atexit, sys
def report():
    heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pydicom', 'nibabel', 'torch', 'monai', 'SimpleITK'})
    sys.stderr.write('IMPORTED ' + ','.join(heavy) + '\\n')
atexit.register(report)
sys.argv = ['mitk', 'convert', *sys.argv[1:]]
from mitk.__main__ import main
main()
"""


def test_convert_imports_neither_pydicom_nor_nibabel_and_writes_the_same_bytes(lung_ct, tmp_path):
    array, affine = load_nifti(lung_ct)
    write_series(array[:, :, 10:22], affine, tmp_path / "ct", modality="CT", order="shuffled",
                 attributes={"ProtocolName": "chest"})
    full = read_dicom(tmp_path / "ct")
    for suffix in (".nii", ".nii.gz"):
        output = tmp_path / f"out{len(suffix)}{suffix}"
        result = subprocess.run([sys.executable, "-c", LEAN_CALL, str(tmp_path / "ct"), str(output),
                                 "--include-descriptions"], capture_output=True, text=True, timeout=120,
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"})
        assert result.returncode == 0, result.stderr
        assert "IMPORTED \n" in result.stderr, result.stderr
        assert output.read_bytes() == write_nifti(full.array, tmp_path / f"nibabel{suffix}", like=full).read_bytes()
        expected = sidecar_document({**full.meta["dicom_summary"], **descriptions(full.meta["dicom"].headers[0])},
                                    include_descriptions=True)
        assert json.loads(output.with_name(f"out{len(suffix)}.json").read_text()) == expected
        assert expected["ProtocolName"] == "chest" and expected["slices"] == 12


@pytest.mark.parametrize("message", ["wrote /tmp/x.nii (362×434×120, LPS) and /tmp/x.json",
                                     "tab\there [bold]x[/] \x1b[31m :smile: 漢字\r\nend", "a" * 300])
@pytest.mark.parametrize("terminal", [False, True])
def test_plain_messages_print_as_rich_prints_them(message, terminal, capsys):
    import io

    from rich.console import Console

    from mitk.console import message_text, say

    rendered = io.StringIO()
    Console(file=rendered, highlight=False, soft_wrap=True, force_terminal=terminal, width=80).print(
        message_text(message))
    say(message)  # without rich: convert's last line costs no rich import
    assert capsys.readouterr().err == rendered.getvalue()
