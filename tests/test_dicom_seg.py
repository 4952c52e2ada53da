"""DICOM SEG output: frames on the source slices, codes, references, validity (dciodvfy), errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_factory import CANARY_STRINGS, series_from_nifti
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.sr.coding import Code

from mitk import __version__
from mitk.errors import GeometryError, InputError, PluginError
from mitk.io.dicom.deidentify import remap_uid
from mitk.io.dicom.source import DicomSource
from mitk.tasks.segment.dicom_seg import property_codes, write_dicom_seg
from mitk.types import Image, SegmentationResult

LABELS = {0: "background", 1: "brain", 3: "lesion", 7: "edema"}
"""Non-contiguous values, and one label (edema) that no voxel carries: segments 1, 2, 3."""

DCIODVFY = shutil.which("dciodvfy")


def image_from_series(series) -> Image:
    """The Image a DICOM reader returns for ``series``: slices sorted along the normal, headers alike."""
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in series.files]
    if len(headers) == 1 and int(headers[0].get("NumberOfFrames", 1)) > 1:
        dataset = headers[0]
        cosines = np.asarray(dataset.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                             .ImageOrientationPatient, dtype=float)
        positions = [np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
                     for item in dataset.PerFrameFunctionalGroupsSequence]
        normal = np.cross(cosines[:3], cosines[3:])
        frames = [int(f) for f in np.argsort([normal @ p for p in positions])]
        source = DicomSource(files=list(series.files), headers=headers, series_uid=series.series_uid,
                             frames=frames, modality=dataset.Modality)
    else:
        cosines = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(cosines[:3], cosines[3:])
        order = np.argsort([normal @ np.asarray(h.ImagePositionPatient, dtype=float) for h in headers])
        source = DicomSource(files=[series.files[i] for i in order], headers=[headers[i] for i in order],
                             series_uid=series.series_uid, modality=headers[0].Modality)
    return Image(series.expected_array, series.expected_affine, path=series.directory, meta={"dicom": source})


def cuts(array: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(array, 60)), float(np.percentile(array, 97))


def label_intensities(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Label 1 above ``low``, label 3 above ``high``: a function of intensity, so files can be the oracle."""
    labels = np.zeros(values.shape, dtype=np.uint8)
    labels[values > low] = 1
    labels[values > high] = 3
    return labels


def threshold_result(image: Image) -> SegmentationResult:
    return SegmentationResult(label_intensities(image.array, *cuts(image.array)), image.affine, dict(LABELS))


SEGMENT_NUMBER = np.zeros(8, dtype=np.uint8)
SEGMENT_NUMBER[[1, 3, 7]] = [1, 2, 3]


def dciodvfy_errors(path: Path) -> tuple[list[str], str]:
    assert DCIODVFY is not None
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    return [line for line in output.splitlines() if line.startswith("Error")], output


@pytest.fixture(scope="module")
def series_by_orientation(anatomical_t1, tmp_path_factory):
    cache: dict[str, object] = {}

    def get(orientation: str, **options):
        key = orientation + repr(sorted(options.items()))
        if key not in cache:
            directory = tmp_path_factory.mktemp(orientation)
            cache[key] = series_from_nifti(anatomical_t1, directory, orientation, **options)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def axial(series_by_orientation):
    return series_by_orientation("axial")


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal", "oblique"])
def test_seg_frames_lie_on_their_source_slices(series_by_orientation, orientation, tmp_path):
    series = series_by_orientation(orientation)
    image = image_from_series(series)
    result = threshold_result(image)
    path = write_dicom_seg(result, image, tmp_path / "seg.dcm", plugin_name="threshold")
    seg = hd.seg.segread(path)
    source: DicomSource = image.meta["dicom"]
    uids = [h.SOPInstanceUID for h in source.headers]

    # 1. Read back with highdicom: frame for slice k is label_map[:, :, k].T, exactly.
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    expected = SEGMENT_NUMBER[result.label_map].transpose(2, 1, 0)
    assert pixels.shape == expected.shape
    np.testing.assert_array_equal(pixels, expected)

    # 2. Each frame's plane position is its referenced source slice's Image Position (Patient).
    position_of = {h.SOPInstanceUID: np.asarray(h.ImagePositionPatient, dtype=float) for h in source.headers}
    assert seg.NumberOfFrames > 0
    for item in seg.PerFrameFunctionalGroupsSequence:
        referenced = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose(item.PlanePositionSequence[0].ImagePositionPatient,
                                   position_of[referenced], atol=1e-4)

    # 3. Oracle from the files themselves: the SEG frame referencing a file equals the file's own pixels
    #    labelled by the same intensity cuts (no use of the Image's array or affine).
    low, high = cuts(image.array)
    for uid, file in zip(uids, source.files, strict=True):
        dataset = pydicom.dcmread(file)
        values = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
        frame = seg.get_pixels_by_source_instance([uid], combine_segments=True)[0]
        np.testing.assert_array_equal(frame, SEGMENT_NUMBER[label_intensities(values, low, high)])


@pytest.mark.parametrize("orientation", ["sagittal", "oblique"])
def test_seg_geometry_agrees_with_simpleitk(series_by_orientation, orientation, tmp_path):
    """Every foreground SEG pixel, placed in the world by the SEG's own plane geometry, lands on a
    SimpleITK-read source voxel whose intensity is above the cut."""
    import SimpleITK as sitk
    series = series_by_orientation(orientation)
    image = image_from_series(series)
    result = threshold_result(image)
    seg = hd.seg.segread(write_dicom_seg(result, image, tmp_path / "seg.dcm", plugin_name="threshold"))

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series.directory))])
    volume = reader.Execute()
    values = sitk.GetArrayFromImage(volume)  # [k, j, i]
    origin = np.asarray(volume.GetOrigin())
    to_index = np.linalg.inv(np.asarray(volume.GetDirection()).reshape(3, 3) @ np.diag(volume.GetSpacing()))

    shared = seg.SharedFunctionalGroupsSequence[0]
    cosines = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    low = cuts(image.array)[0]
    frames = seg.pixel_array
    checked = 0
    for item, frame in zip(seg.PerFrameFunctionalGroupsSequence, frames, strict=True):
        if item.SegmentIdentificationSequence[0].ReferencedSegmentNumber != 1:
            continue
        rows, columns = np.nonzero(frame)
        origin_frame = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        world = (origin_frame + np.outer(columns * column_spacing, cosines[:3])
                 + np.outer(rows * row_spacing, cosines[3:]))
        index = (to_index @ (world - origin).T).T
        assert np.allclose(index, np.rint(index), atol=1e-3)
        i, j, k = np.rint(index).astype(int).T
        assert np.all(values[k, j, i] > low)
        checked += rows.size
    assert checked == int(np.count_nonzero(result.label_map == 1))


def test_segments_codes_references_and_equipment(axial, tmp_path):
    image = image_from_series(axial)
    seg = hd.seg.segread(write_dicom_seg(threshold_result(image), image, tmp_path / "seg.dcm",
                                         plugin_name="threshold"))
    first = image.meta["dicom"].headers[0]
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.SegmentationType == "BINARY" and "SegmentationFractionalType" not in seg
    assert seg.Modality == "SEG" and seg.Manufacturer == "mitk" and seg.SoftwareVersions == __version__
    assert seg.SeriesDescription == "mitk threshold segmentation"
    assert str(seg.ContentCreatorName) == "mitk^threshold"
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == axial.series_uid
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == {
        h.SOPInstanceUID for h in image.meta["dicom"].headers}

    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert {n: s.SegmentLabel for n, s in segments.items()} == {1: "brain", 2: "lesion", 3: "edema"}
    brain, lesion, edema = segments[1], segments[2], segments[3]
    assert brain.SegmentedPropertyTypeCodeSequence[0].CodeValue == "12738006"
    assert brain.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert lesion.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    assert lesion.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert edema.SegmentedPropertyTypeCodeSequence[0].CodeValue == "79654002"
    for segment in segments.values():
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "threshold" and algorithm.AlgorithmVersion == __version__
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # Artificial Intelligence
    # The named but absent label keeps its segment number and has no frames.
    numbers = [int(i.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
               for i in seg.PerFrameFunctionalGroupsSequence]
    assert set(numbers) == {1, 2}


def test_property_codes_table_and_plugin_codes(axial, tmp_path):
    assert property_codes("Liver")[1].value == "10200004"
    assert property_codes("left_kidney")[1].value == "85756007"  # not in the table: generic tissue
    assert property_codes("Kidney")[1] == dicom_codes.SCT.Kidney
    assert property_codes("tumour")[1] == dicom_codes.SCT.Neoplasm
    assert property_codes("white-matter")[1] == dicom_codes.SCT.WhiteMatter
    assert property_codes("foreground") == (dicom_codes.SCT.Tissue, dicom_codes.SCT.Tissue)

    image = image_from_series(axial)
    special = Code("T-D0050", "SRT", "Tissue")  # an old-style code, to tell it apart from the default
    own = (Code("91723000", "SCT", "Anatomical Structure"), Code("64033007", "SCT", "Kidney"))
    seg = hd.seg.segread(write_dicom_seg(threshold_result(image), image, tmp_path / "seg.dcm",
                                         plugin_name="x", codes={1: own, 7: (special, special)},
                                         algorithm_family=dicom_codes.cid7162.HistogramAnalysis))
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert segments[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "64033007"
    assert segments[3].SegmentedPropertyTypeCodeSequence[0].CodeValue == "T-D0050"
    assert segments[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"  # table still used
    family = segments[1].SegmentationAlgorithmIdentificationSequence[0].AlgorithmFamilyCodeSequence[0]
    assert family.CodeMeaning == "Histogram Analysis"


def test_all_background_result_still_writes_a_valid_seg(axial, tmp_path):
    image = image_from_series(axial)
    result = SegmentationResult(np.zeros(image.spatial_shape, np.uint8), image.affine, dict(LABELS))
    path = write_dicom_seg(result, image, tmp_path / "empty.dcm", plugin_name="threshold")
    seg = hd.seg.segread(path)
    assert seg.number_of_segments == 3
    uids = [h.SOPInstanceUID for h in image.meta["dicom"].headers]
    assert not seg.get_pixels_by_source_instance(uids, combine_segments=True).any()
    if DCIODVFY:
        errors, output = dciodvfy_errors(path)
        assert not errors, output


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
@pytest.mark.parametrize("deidentify", [False, True], ids=["identified", "deidentified"])
def test_dciodvfy_finds_no_errors(series_by_orientation, deidentify, tmp_path):
    image = image_from_series(series_by_orientation("oblique"))
    path = write_dicom_seg(threshold_result(image), image, tmp_path / "seg.dcm", plugin_name="threshold",
                           deidentify=deidentify)
    errors, output = dciodvfy_errors(path)
    assert not errors, output
    assert "Segmentation" in output  # it recognised the IOD


def test_enhanced_multiframe_source(series_by_orientation, tmp_path):
    series = series_by_orientation("coronal", enhanced=True, order="reversed")
    image = image_from_series(series)
    source = image.meta["dicom"]
    assert source.frames != sorted(source.frames)  # the frames are stored against slice order
    result = threshold_result(image)
    path = write_dicom_seg(result, image, tmp_path / "seg.dcm", plugin_name="threshold")
    seg = hd.seg.segread(path)
    uid = source.headers[0].SOPInstanceUID
    pixels = seg.get_pixels_by_source_frame(uid, [f + 1 for f in source.frames], combine_segments=True)
    np.testing.assert_array_equal(pixels, SEGMENT_NUMBER[result.label_map].transpose(2, 1, 0))
    if DCIODVFY:
        errors, output = dciodvfy_errors(path)
        assert not errors, output


def test_deidentified_seg_keeps_consistent_references_and_no_identity(axial, tmp_path):
    image = image_from_series(axial)
    result = threshold_result(image)
    before = [h.to_json() for h in image.meta["dicom"].headers]
    path = write_dicom_seg(result, image, tmp_path / "seg.dcm", plugin_name="threshold", deidentify=True)
    raw = path.read_bytes()
    for canary in CANARY_STRINGS:
        assert canary.encode() not in raw
    headers = image.meta["dicom"].headers
    for uid in {headers[0].StudyInstanceUID, headers[0].SeriesInstanceUID, headers[0].FrameOfReferenceUID,
                *(h.SOPInstanceUID for h in headers)}:
        assert uid.encode() not in raw
    seg = hd.seg.segread(path)
    assert seg.PatientIdentityRemoved == "YES" and seg.PatientName == "" and seg.PatientID == ""
    assert seg.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert seg.StudyInstanceUID == remap_uid(headers[0].StudyInstanceUID)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == remap_uid(axial.series_uid)
    assert seg.file_meta.MediaStorageSOPInstanceUID == seg.SOPInstanceUID
    assert seg.SeriesDescription == "mitk threshold segmentation"  # mitk's own words are kept
    pixels = seg.get_pixels_by_source_instance([remap_uid(h.SOPInstanceUID) for h in headers],
                                               combine_segments=True)
    np.testing.assert_array_equal(pixels, SEGMENT_NUMBER[result.label_map].transpose(2, 1, 0))
    # The source headers the image carries are untouched.
    assert str(headers[0].PatientName) == "CANARY^SECRET"
    assert [h.to_json() for h in headers] == before


# -- errors ---------------------------------------------------------------------------------------


def test_nifti_image_is_refused(anatomical_t1, tmp_path):
    from mitk.io.nifti import read_nifti

    image = read_nifti(anatomical_t1)
    result = SegmentationResult(np.ones(image.spatial_shape, np.uint8), image.affine, {0: "bg", 1: "brain"})
    with pytest.raises(InputError, match="needs a DICOM input"):
        write_dicom_seg(result, image, tmp_path / "seg.dcm", plugin_name="threshold")
    assert not (tmp_path / "seg.dcm").exists()


def test_image_off_the_source_grid_is_refused(axial, tmp_path):
    image = image_from_series(axial)
    flipped = Image(image.array[:, :, ::-1].copy(), image.affine @ np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, image.spatial_shape[2] - 1], [0, 0, 0, 1.0]]),
        path=image.path, meta=image.meta)  # the same world image, slices in the other order
    with pytest.raises(GeometryError, match="does not match its DICOM source"):
        write_dicom_seg(threshold_result(flipped), flipped, tmp_path / "seg.dcm", plugin_name="threshold")
    cropped = Image(image.array[:, :-1], image.affine, path=image.path, meta=image.meta)
    with pytest.raises(GeometryError, match="not the source grid"):
        write_dicom_seg(threshold_result(cropped), cropped, tmp_path / "seg.dcm", plugin_name="threshold")


def test_sparse_headers_are_completed_or_refused(axial, tmp_path):
    """Type 2 attributes that some anonymisers drop are filled in; a slice without a position is refused."""
    image = image_from_series(axial)
    headers = image.meta["dicom"].headers
    for keyword in ("PatientSex", "PatientBirthDate", "StudyID", "AccessionNumber", "SliceThickness"):
        delattr(headers[0], keyword)
    seg = hd.seg.segread(write_dicom_seg(threshold_result(image), image, tmp_path / "seg.dcm",
                                         plugin_name="threshold"))
    assert seg.PatientSex == "" and seg.AccessionNumber == ""
    assert float(seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness) == \
        pytest.approx(image.spacing[2])
    assert "PatientSex" not in headers[0]  # the image's own headers are not filled in
    del headers[4].ImagePositionPatient
    with pytest.raises(InputError, match="no Image Position"):
        write_dicom_seg(threshold_result(image), image, tmp_path / "bad.dcm", plugin_name="threshold")


def test_label_values_the_plugin_does_not_name_are_refused(axial, tmp_path):
    image = image_from_series(axial)
    result = threshold_result(image)
    result.labels = {0: "background", 1: "brain"}
    with pytest.raises(PluginError, match=r"\[3\]"):
        write_dicom_seg(result, image, tmp_path / "seg.dcm", plugin_name="threshold")


# -- end to end, through the DICOM reader and the CLI -----------------------------------------------




@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_reader_output_is_what_the_seg_writer_assumes(series_by_orientation, orientation, tmp_path):
    from mitk.io.dicom import read_dicom

    series = series_by_orientation(orientation)
    image = read_dicom(series.directory)
    ours = image_from_series(series)
    np.testing.assert_allclose(image.affine, ours.affine, atol=1e-4)
    np.testing.assert_array_equal(image.array, ours.array)
    assert [h.SOPInstanceUID for h in image.meta["dicom"].headers] == [
        h.SOPInstanceUID for h in ours.meta["dicom"].headers]
    result = threshold_result(image)
    seg = hd.seg.segread(write_dicom_seg(result, image, tmp_path / "seg.dcm", plugin_name="threshold"))
    uids = [h.SOPInstanceUID for h in image.meta["dicom"].headers]
    np.testing.assert_array_equal(seg.get_pixels_by_source_instance(uids, combine_segments=True),
                                  SEGMENT_NUMBER[result.label_map].transpose(2, 1, 0))


def test_cli_segment_writes_a_seg_of_the_threshold_mask(axial, anatomical_t1, mitk_cli, tmp_path):
    """One run, two inputs: the DICOM series gets its SEG; the NIfTI file fails with a one-line reason."""
    from mitk.io.dicom import read_dicom

    image = read_dicom(axial.directory)
    threshold = float(np.floor(np.percentile(image.array, 70))) + 0.5
    run = mitk_cli("segment", str(axial.directory), str(anatomical_t1), "--plugin", "threshold", "--format",
                   "dicom-seg", "--output-dir", str(tmp_path), "--set", f"threshold={threshold}",
                   "--set", "largest_component=false", "--json")
    cases = {Path(c["input"]).name: c for c in json.loads(run.stdout)["cases"]}
    assert run.returncode == 3, run.stderr  # partial: one written, one failed
    refused = cases[anatomical_t1.name]
    assert refused["status"] == "failed" and "needs a DICOM input" in refused["error"]
    assert "Traceback" not in run.stderr
    assert not list(tmp_path.glob("anatomical*"))
    out = Path(cases[axial.directory.name]["output"])
    seg = hd.seg.segread(out)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["foreground"]
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "threshold"
    uids = [h.SOPInstanceUID for h in image.meta["dicom"].headers]
    np.testing.assert_array_equal(seg.get_pixels_by_source_instance(uids, combine_segments=True),
                                  (image.array > threshold).astype(np.uint8).transpose(2, 1, 0))
    if DCIODVFY:
        errors, output = dciodvfy_errors(out)
        assert not errors, output


def test_resampled_series_is_refused(anatomical_t1, tmp_path):
    """A series with a missing slice, read with allow_resample, no longer lies on its source slices."""
    from mitk.io.dicom import read_dicom

    series = series_from_nifti(anatomical_t1, tmp_path / "gap", "axial", drop=(5,))
    image = read_dicom(series.directory, allow_resample=True)
    with pytest.raises(GeometryError, match="not the source grid"):
        write_dicom_seg(threshold_result(image), image, tmp_path / "seg.dcm", plugin_name="threshold")
