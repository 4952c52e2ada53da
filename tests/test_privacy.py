"""Privacy: the PS3.15 basic profile, and no patient identity in anything mitk prints or names.

Canary values go into the source DICOM; they must never reach stdout, stderr, JSON, file names, NIfTI
outputs or a SEG written with --deidentify.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import shutil
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from dicom_factory import (
    CANARY_ACCESSION,
    CANARY_BIRTH_DATE,
    CANARY_INSTITUTION,
    CANARY_STRINGS,
    series_from_nifti,
)
from pydicom.data import get_testdata_file
from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset

from mitk.io.dicom.deidentify import ACTIONS, DUMMY_DATE, deidentify_dataset, remap_uid
from mitk.io.dicom.sidecar import (
    ACQUISITION_KEYWORDS,
    DESCRIPTION_KEYWORDS,
    descriptions,
    sidecar_document,
    summarize,
)

CANARIES = (*CANARY_STRINGS, "CANARY^SECRET", "CANARY-ID-123", "CANARYACC", "19000101")
UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def dataset_bytes(dataset: Dataset) -> bytes:
    buffer = BytesIO()
    if getattr(dataset, "file_meta", None):
        dataset.save_as(buffer, enforce_file_format=True)
    else:
        dataset.save_as(buffer, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def canaries_in(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [c for c in CANARIES if c.encode() in data]


@pytest.fixture
def real_ct() -> Dataset:
    """pydicom's real GE CT slice (private tags, Other Patient IDs Sequence...) plus the brief's canaries."""
    dataset = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    del dataset.PixelData
    dataset.PatientName = "CANARY^SECRET"
    dataset.PatientID = "CANARY-ID-123"
    dataset.PatientBirthDate = "19000101"
    dataset.AccessionNumber = "CANARYACC"
    return dataset


# -- the profile -----------------------------------------------------------------------------------


def test_action_table_names_real_attributes_with_profile_codes():
    assert len(ACTIONS) >= 40
    for keyword, action in ACTIONS.items():
        assert keyword in keyword_dict, keyword
        assert action in {"D", "Z", "X", "U"}, keyword


def test_profile_removes_identity_from_a_real_ct_header(real_ct):
    original = copy.deepcopy(real_ct)
    identifying = [str(original.PatientName), original.PatientID, "CompressedSamples", "JFK IMAGING", "CT01_OC0",
                   original.StudyDate, original.SeriesDate, original.SOPInstanceUID, original.StudyInstanceUID,
                   original.SeriesInstanceUID, original.FrameOfReferenceUID]
    deidentify_dataset(real_ct)
    raw = dataset_bytes(real_ct)
    for value in identifying:
        assert value.encode() not in raw, value
    assert not canaries_in(raw)
    # Z: present and empty; X: gone; D: dummy; private attributes gone everywhere.
    assert real_ct.PatientName == "" and real_ct.PatientID == "" and real_ct.AccessionNumber == ""
    for keyword in ("OtherPatientIDsSequence", "InstitutionName", "StationName", "StudyDescription",
                    "AcquisitionDate", "SeriesDate"):
        assert keyword not in real_ct, keyword
    assert "InstanceCreationDate" not in real_ct
    assert real_ct.InstanceCreatorUID == remap_uid(original.InstanceCreatorUID)
    assert real_ct.ContentDate == DUMMY_DATE
    assert not any(element.tag.is_private for element in real_ct.iterall())
    # Kept: what describes the image, not the person.
    assert real_ct.SOPClassUID == original.SOPClassUID and real_ct.Modality == "CT"
    assert real_ct.Manufacturer == original.Manufacturer and real_ct.PixelSpacing == original.PixelSpacing
    # Recorded: the profile and the method.
    assert real_ct.PatientIdentityRemoved == "YES"
    assert [i.CodeValue for i in real_ct.DeidentificationMethodCodeSequence] == ["113100"]
    assert real_ct.LongitudinalTemporalInformationModified == "REMOVED"


def test_uids_are_remapped_consistently_and_validly(real_ct):
    study = real_ct.StudyInstanceUID
    other = Dataset()
    other.StudyInstanceUID = study
    other.ReferencedSeriesSequence = [Dataset()]
    other.ReferencedSeriesSequence[0].SeriesInstanceUID = real_ct.SeriesInstanceUID
    deidentify_dataset(real_ct)
    deidentify_dataset(other)
    assert real_ct.StudyInstanceUID == other.StudyInstanceUID == remap_uid(study) != study
    assert other.ReferencedSeriesSequence[0].SeriesInstanceUID == real_ct.SeriesInstanceUID
    for uid in (real_ct.StudyInstanceUID, real_ct.SeriesInstanceUID, real_ct.SOPInstanceUID):
        assert len(uid) <= 64 and UID_PATTERN.match(uid) and uid.startswith("2.25.")
    assert remap_uid(study, salt="project-a") != remap_uid(study, salt="project-b")
    assert remap_uid(study) == remap_uid(study)


def test_sequences_are_cleaned_recursively_and_shared_items_once():
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4.5"
    item.InstitutionName = "CANARY INSTITUTE"
    item.add_new(0x00431010, "LO", "CANARY private")
    dataset = Dataset()
    dataset.SourceImageSequence = [item]
    dataset.ReferencedImageSequence = [item]  # the same item twice: remapped once, not twice
    deidentify_dataset(dataset)
    assert dataset.SourceImageSequence[0].ReferencedSOPInstanceUID == remap_uid("1.2.3.4.5")
    assert "InstitutionName" not in item and len(item) == 1
    assert not canaries_in(dataset_bytes(dataset))


def test_keep_spares_the_callers_own_descriptors():
    dataset = Dataset()
    dataset.SeriesDescription = "mitk threshold segmentation"
    dataset.StudyDescription = "CANARY study"
    deidentify_dataset(dataset, keep=("SeriesDescription",))
    assert dataset.SeriesDescription == "mitk threshold segmentation"
    assert "StudyDescription" not in dataset
    assert [i.CodeValue for i in dataset.DeidentificationMethodCodeSequence] == ["113100", "113105"]


# -- the summary, the sidecar and mitk info ----------------------------------------------------------

FREE_TEXT = {"SeriesDescription": "CANARY series text", "ProtocolName": "CANARY protocol text",
             "StudyDescription": "CANARY study text"}
"""Free text PS3.15 removes: shown only with --include-descriptions."""
NEVER = {"ImageComments": "CANARY comment", "OperatorsName": "CANARY^OPERATOR",
         "PerformingPhysicianName": "CANARY^PERFORMER", "InstitutionalDepartmentName": "CANARY DEPARTMENT",
         "StationName": "CANARYSTATION", "DeviceSerialNumber": "CANARY-SERIAL", "AcquisitionDate": "19020304",
         "DerivationDescription": "CANARY derivation", "RequestedProcedureDescription": "CANARY request"}
"""Identifying attributes that never reach any output, --include-descriptions or not."""


def test_summary_allow_list_holds_nothing_the_profile_removes(real_ct):
    assert not set(ACQUISITION_KEYWORDS) & set(ACTIONS)
    assert set(DESCRIPTION_KEYWORDS) <= set(ACTIONS)  # they are profile attributes, shown only on request
    for keyword, value in {**FREE_TEXT, **NEVER}.items():
        setattr(real_ct, keyword, value)
    summary = summarize(real_ct, {"slices": 1})
    assert summary["Modality"] == "CT" and summary["KVP"] == 120
    assert "CANARY" not in json.dumps(summary) and "19020304" not in json.dumps(summary)
    assert not set(summary) & set(ACTIONS)
    assert descriptions(real_ct) == FREE_TEXT
    with_text = {**summary, **descriptions(real_ct), "ImageComments": "CANARY comment"}
    assert not set(sidecar_document(with_text)) & set(ACTIONS)  # the last guard drops them again
    assert set(sidecar_document(with_text, include_descriptions=True)) & set(ACTIONS) == set(FREE_TEXT)


@pytest.fixture(scope="module")
def described_study(anatomical_t1, tmp_path_factory) -> Path:
    """Two series whose headers carry free-text descriptions and other identifying attributes."""
    root = tmp_path_factory.mktemp("described")
    attributes = {**FREE_TEXT, **NEVER}
    series_from_nifti(anatomical_t1, root / "a", "axial", modality="MR", attributes=attributes)
    series_from_nifti(anatomical_t1, root / "b", "coronal", modality="CT", series_number=2, attributes=attributes)
    return root


def test_sidecar_and_info_leave_descriptions_out_by_default(described_study, run_inprocess, tmp_path):
    study = str(described_study)
    status, out, err = run_inprocess("convert", study, str(tmp_path / "t1.nii.gz"), "--series", "0")
    assert status == 0, err
    sidecar = (tmp_path / "t1.json").read_text()
    assert json.loads(sidecar)["Modality"] == "MR"
    outputs = [sidecar, out, err]
    printed = {}
    for arguments in (("--json",), (), ("--series", "1", "--json"), ("--series", "1")):
        status, out, err = run_inprocess("info", study, *arguments)
        assert status == 0, err
        printed[arguments] = out
        outputs += [out, err]
    listing = json.loads(printed[("--json",)])
    assert len(listing["series"]) == 2 and not any("description" in row for row in listing["series"])
    assert "description" not in printed[()]
    assert json.loads(printed[("--series", "1", "--json")])["dicom"]["Modality"] == "CT"
    for text in outputs:
        assert not canaries_in(text) and "CANARY" not in text and "19020304" not in text, text


def test_include_descriptions_adds_only_the_descriptions(described_study, run_inprocess, tmp_path):
    study = str(described_study)
    status, _, err = run_inprocess("convert", study, str(tmp_path / "t1.nii.gz"), "--series", "0",
                                   "--include-descriptions")
    assert status == 0, err
    sidecar = json.loads((tmp_path / "t1.json").read_text())
    assert {key: sidecar[key] for key in FREE_TEXT} == FREE_TEXT
    status, listing, _ = run_inprocess("info", study, "--json", "--include-descriptions")
    assert [row["description"] for row in json.loads(listing)["series"]] == [FREE_TEXT["SeriesDescription"]] * 2
    status, one, _ = run_inprocess("info", study, "--series", "1", "--json", "--include-descriptions")
    assert {key: json.loads(one)["dicom"][key] for key in FREE_TEXT} == FREE_TEXT
    status, table, _ = run_inprocess("info", study, "--include-descriptions")
    assert "description" in table and FREE_TEXT["SeriesDescription"] in table
    for text in (json.dumps(sidecar), listing, one, table):
        assert not any(value in text for value in NEVER.values()), text
        assert not canaries_in(text.replace("CANARY", "")), text  # patient canaries: never


# -- end to end through the CLI --------------------------------------------------------------------




@pytest.fixture(scope="module")
def dicom_cases(anatomical_t1, tmp_path_factory):
    """``case01``: a canary CT series. ``case02``: plus one more slice whose pixel data is cut short, and a
    garbage file. ``case03``: plus a second copy of one slice (duplicate position)."""
    root = tmp_path_factory.mktemp("privacy")
    good = root / "case01"
    series = series_from_nifti(anatomical_t1, good, "axial")
    truncated = root / "case02"
    shutil.copytree(good, truncated)
    extra = pydicom.dcmread(series.files[-1])
    extra.SOPInstanceUID = extra.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    step = float(extra.ImagePositionPatient[2]) - float(pydicom.dcmread(series.files[-2]).ImagePositionPatient[2])
    extra.ImagePositionPatient[2] = float(extra.ImagePositionPatient[2]) + step
    buffer = BytesIO()
    extra.save_as(buffer, enforce_file_format=True)
    (truncated / "IM99999.dcm").write_bytes(buffer.getvalue()[:-600])  # canary header, pixel data cut short
    (truncated / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"CANARY^SECRET garbage" * 10)
    duplicate = root / "case03"
    shutil.copytree(good, duplicate)
    shutil.copy(series.files[3], duplicate / "IM99999.dcm")
    return good, truncated, duplicate


def _assert_clean(run, *documents: str) -> None:
    for text in (run.stdout, run.stderr, *documents):
        assert not canaries_in(text), (canaries_in(text), run.stdout[-2000:], run.stderr[-2000:])


def _assert_clean_files(directory: Path) -> None:
    for path in directory.rglob("*"):
        assert not canaries_in(path.name), path
        if path.is_file():
            data = path.read_bytes()
            if path.name.endswith(".gz"):
                data = gzip.decompress(data)
            if path.suffix == ".dcm":
                continue  # DICOM outputs are checked by the callers (identified SEGs may carry the patient)
            assert not canaries_in(data), path


def test_info_prints_no_identity(dicom_cases, mitk_cli):
    good = dicom_cases[0]
    for folder in dicom_cases:
        run = mitk_cli("info", str(folder), "--json")
        _assert_clean(run)
        if folder == good:
            assert run.returncode == 0, run.stderr
            json.loads(run.stdout)


def test_segment_dicom_seg_deidentified_carries_no_identity(dicom_cases, mitk_cli, tmp_path):
    out = tmp_path / "out"
    manifest = tmp_path / "manifest.jsonl"
    run = mitk_cli("segment", *map(str, dicom_cases), "--plugin", "threshold", "--format", "dicom-seg",
                   "--deidentify", "--json", "--output-dir", str(out), "--stats", "--manifest", str(manifest))
    _assert_clean(run, manifest.read_text())  # provenance included: digests of pixels and geometry only
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    assert any(record.get("provenance", {}).get("input_digest", {}).get("kind") == "dicom" for record in records)
    document = json.loads(run.stdout)
    assert document["summary"]["ok"] >= 1, run.stderr
    _assert_clean_files(out)
    segs = sorted(out.glob("*.dcm"))
    assert segs, list(out.iterdir())
    for path in segs:
        raw = path.read_bytes()
        assert not canaries_in(raw), (path, canaries_in(raw))
        seg = pydicom.dcmread(path)
        assert seg.Modality == "SEG" and seg.PatientIdentityRemoved == "YES"


def test_segment_nifti_outputs_carry_no_identity(dicom_cases, mitk_cli, tmp_path):
    out = tmp_path / "out"
    run = mitk_cli("segment", *map(str, dicom_cases), "--plugin", "threshold", "--json", "--output-dir",
                   str(out), "--stats")
    _assert_clean(run)
    assert json.loads(run.stdout)["summary"]["ok"] >= 1, run.stderr
    niftis = list(out.glob("*.nii.gz"))
    assert niftis
    _assert_clean_files(out)


def test_identified_seg_keeps_the_patient_module_but_nothing_else_leaks(dicom_cases, tmp_path):
    """Without --deidentify the SEG must repeat the source's patient module (the standard asks for it)."""
    from mitk.io.dicom import read_dicom
    from mitk.tasks.segment.dicom_seg import write_dicom_seg
    from mitk.types import SegmentationResult

    image = read_dicom(dicom_cases[0])
    labels = (image.array > image.array.mean()).astype("uint8")
    result = SegmentationResult(labels, image.affine, {0: "background", 1: "foreground"})
    plain = pydicom.dcmread(write_dicom_seg(result, image, tmp_path / "plain.dcm", plugin_name="threshold"))
    assert str(plain.PatientName) == "CANARY^SECRET" and plain.PatientBirthDate == CANARY_BIRTH_DATE
    # Nothing beyond the patient and study modules: no institution, not even in Contributing Equipment.
    raw = (tmp_path / "plain.dcm").read_bytes()
    allowed = (b"CANARY^SECRET", b"CANARY-ID-123", b"CANARY^DOCTOR", CANARY_ACCESSION.encode())
    found = re.findall(rb"CANARY[ -~]*", raw)
    assert found and all(value.startswith(allowed) for value in found), found
    assert CANARY_INSTITUTION.encode() not in raw
    clean = write_dicom_seg(result, image, tmp_path / "clean.dcm", plugin_name="threshold", deidentify=True)
    assert not canaries_in(clean.read_bytes())
    assert str(image.meta["dicom"].headers[0].PatientName) == "CANARY^SECRET"  # inputs untouched
