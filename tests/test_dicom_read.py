"""DICOM reading: real anatomy written as series in every orientation and file order, checked against
SimpleITK's ImageSeriesReader; real pydicom/pydicom-data files; refusals; resampling."""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.pixels
import pytest
import SimpleITK as sitk
from dicom_factory import (
    CANARY_STRINGS,
    ORIENTATIONS,
    load_nifti,
    orient_volume,
    series_from_nifti,
    with_unused_high_bits,
    write_series,
)
from pydicom import data as pydicom_data
from pydicom.uid import ExplicitVRBigEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from mitk.errors import GeometryError, InputError, MitkError, UsageError
from mitk.io.dicom import list_series, read_dicom
from mitk.io.dicom.pixels import decode_frames
from mitk.io.dicom.source import DicomSource
from mitk.types import ras_to_lps

TEST_FILES = Path(pydicom_data.__file__).parent / "test_files"
DICOMDIR_TESTS = TEST_FILES / "dicomdirtests"


def dicom_testfile(name: str) -> Path:
    """A file shipped with pydicom or pydicom-data (never downloaded; the test extra installs pydicom-data)."""
    local = TEST_FILES / name
    if local.exists():
        return local
    import data_store  # pydicom-data's package

    path = Path(data_store.__file__).parent / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is in neither pydicom nor pydicom-data")
    return path


def read_with_simpleitk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The independent oracle: SimpleITK's array in [i, j, k] order and its voxel → RAS affine."""
    if path.is_dir():
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        image = sitk.ReadImage(names if len(names) > 1 else names[0])
    else:
        image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    components = image.GetNumberOfComponentsPerPixel()
    spatial = array.ndim - (1 if components > 1 else 0)
    array = np.moveaxis(array, list(range(spatial)), list(range(spatial))[::-1])
    direction = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = direction, image.GetOrigin()
    return array, ras_to_lps(lps)


def assert_matches_simpleitk(directory: Path, image) -> None:
    expected, affine = read_with_simpleitk(directory)
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    assert image.array.shape == expected.shape
    assert np.array_equal(image.array, expected)


# ---------------------------------------------------------------------------------------------------
# Real anatomy written as DICOM, read back against SimpleITK
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("order", ["sorted", "reversed", "shuffled"])
def test_series_matches_simpleitk(anatomical_t1, tmp_path, orientation, order):
    written = series_from_nifti(anatomical_t1, tmp_path, orientation, modality="MR", order=order,
                                shuffle_instance_numbers=order == "shuffled", seed=7)
    image = read_dicom(tmp_path)
    assert_matches_simpleitk(tmp_path, image)
    np.testing.assert_allclose(image.affine, written.expected_affine, atol=1e-4)
    assert np.array_equal(image.array, written.expected_array)
    assert image.meta["format"] == "dicom"
    source = image.meta["dicom"]
    assert isinstance(source, DicomSource) and source.series_uid == written.series_uid
    # files/headers are in slice order k: positions increase along the slice normal.
    orientation_cosines = np.array(source.headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation_cosines[:3], orientation_cosines[3:])
    distances = [float(np.dot(np.array(h.ImagePositionPatient, dtype=float), normal)) for h in source.headers]
    assert distances == sorted(distances) and len(source.files) == image.shape[2]


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_real_brain_mr_matches_simpleitk(brain_mr, tmp_path, orientation):
    series_from_nifti(brain_mr, tmp_path, orientation, modality="MR", order="shuffled",
                      shuffle_instance_numbers=True)
    image = read_dicom(tmp_path)
    assert_matches_simpleitk(tmp_path, image)
    assert image.orientation == ("LPS" if orientation == "axial" else image.orientation)


def test_ct_keeps_int16_hounsfield_units(lung_ct, tmp_path):
    array, affine = load_nifti(lung_ct)
    written = write_series(array, affine, tmp_path, modality="CT", order="reversed")
    image = read_dicom(tmp_path)
    assert image.array.dtype == np.int16  # intercept -1024 applied without widening the type
    assert np.array_equal(image.array, array)  # the original Hounsfield units, voxel for voxel
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    assert_matches_simpleitk(tmp_path, image)
    summary = image.meta["dicom_summary"]
    assert summary["Modality"] == "CT" and summary["KVP"] == 120 and summary["slices"] == 48
    assert written.series_uid not in str(summary)


def test_unsigned_ct_with_negative_intercept_becomes_int16(lung_ct, tmp_path):
    array, affine = load_nifti(lung_ct)
    write_series(array[:, :, 20:26], affine, tmp_path, modality="CT", signed=False)  # stored uint16
    assert pydicom.dcmread(next(tmp_path.iterdir())).PixelRepresentation == 0
    image = read_dicom(tmp_path)
    assert image.array.dtype == np.int16 and np.array_equal(image.array, array[:, :, 20:26])
    assert_matches_simpleitk(tmp_path, image)


def test_non_integral_rescale_gives_float32_equal_to_simpleitk(anatomical_t1, tmp_path):
    series_from_nifti(anatomical_t1, tmp_path, "coronal", modality="MR", slope=0.37, intercept=1.5)
    image = read_dicom(tmp_path)
    assert image.array.dtype == np.float32
    expected, affine = read_with_simpleitk(tmp_path)
    assert np.array_equal(image.array, expected.astype(np.float32))
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless], ids=lambda s: s.name[:9])
def test_compressed_series_decode_losslessly(anatomical_t1, tmp_path, syntax):
    # The test extra installs the encoders: pydicom (RLE), pylibjpeg-openjpeg (JPEG 2000), pyjpegls (JPEG-LS).
    written = series_from_nifti(anatomical_t1, tmp_path, "axial", modality="MR", transfer_syntax=syntax,
                                order="shuffled")
    image = read_dicom(tmp_path)
    assert np.array_equal(image.array, written.expected_array)
    assert_matches_simpleitk(tmp_path, image)


@pytest.mark.parametrize("per_frame_orientation", [False, True])
def test_enhanced_multiframe_matches_classic_series(brain_mr, tmp_path, per_frame_orientation):
    classic = series_from_nifti(brain_mr, tmp_path / "classic", "coronal", modality="CT")
    written = series_from_nifti(brain_mr, tmp_path / "enhanced", "coronal", modality="CT", enhanced=True,
                                order="shuffled", per_frame_orientation=per_frame_orientation)
    image = read_dicom(written.files[0])
    reference = read_dicom(classic.directory)
    assert np.array_equal(image.array, reference.array)
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-4)
    assert np.array_equal(image.array, written.expected_array)
    source = image.meta["dicom"]
    assert source.files == written.files and source.frames is not None and len(source.frames) == image.shape[2]
    assert sorted(source.frames) == list(range(image.shape[2])) and source.frames != sorted(source.frames)


def test_compressed_enhanced_frames_decode_on_threads(anatomical_t1, tmp_path):
    written = series_from_nifti(anatomical_t1, tmp_path, "sagittal", modality="MR", enhanced=True,
                                order="reversed", transfer_syntax=RLELossless)
    image = read_dicom(written.files[0])
    assert np.array_equal(image.array, written.expected_array)
    np.testing.assert_allclose(image.affine, written.expected_affine, atol=1e-4)


def test_zip_input_reads_like_the_folder(anatomical_t1, tmp_path):
    written = series_from_nifti(anatomical_t1, tmp_path / "series", "axial", modality="MR")
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for file in written.files:
            handle.write(file, f"study/{file.name}")
        handle.writestr("study/README.txt", "not dicom")
    image = read_dicom(archive)
    assert np.array_equal(image.array, written.expected_array)
    assert image.meta["dicom"].archive == archive
    assert list_series(archive).skipped_files == 1


# ---------------------------------------------------------------------------------------------------
# Real DICOM files
# ---------------------------------------------------------------------------------------------------
def test_ct_small_matches_simpleitk():
    path = dicom_testfile("CT_small.dcm")
    image = read_dicom(path)
    assert image.shape == (128, 128, 1)
    expected, affine = read_with_simpleitk(path)
    assert np.array_equal(image.array, expected)
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)


@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding")
@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
                                  "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_padded.dcm"])
def test_mr_small_every_lossless_transfer_syntax(name):
    reference = read_dicom(dicom_testfile("MR_small.dcm"))
    image = read_dicom(dicom_testfile(name))
    assert np.array_equal(image.array, reference.array)
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-6)
    pixels = pydicom.dcmread(dicom_testfile(name)).pixel_array
    assert np.array_equal(image.array[:, :, 0], pixels.T)


def test_jpeg_colour_decodes_like_the_uncompressed_image():
    reference = read_dicom(dicom_testfile("SC_rgb.dcm")).array.astype(np.int32)
    lossless = read_dicom(dicom_testfile("SC_rgb_jpeg_gdcm.dcm")).array  # JPEG lossless, process 14
    assert np.array_equal(lossless, reference)
    lossy = read_dicom(dicom_testfile("SC_rgb_jpeg_dcmtk.dcm")).array  # JPEG baseline, YBR_FULL → RGB
    assert lossy.shape == (100, 100, 1, 3)
    assert 0 < np.abs(lossy.astype(np.int32) - reference).mean() < 2


def test_undecodable_jpeg_is_one_clear_line():
    with pytest.raises(InputError, match=r"JPEG-lossy.dcm: cannot decode pixel data .*pylibjpeg") as caught:
        read_dicom(dicom_testfile("JPEG-lossy.dcm"))  # 12-bit JPEG extended: no installed plugin decodes it
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["emri_small_RLE.dcm", "emri_small_big_endian.dcm",
                                  "emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm"])
def test_enhanced_mr_frames_decode_in_every_syntax(name):
    reference = decode_frames(dicom_testfile("emri_small.dcm"))
    frames = decode_frames(dicom_testfile(name))
    assert frames.shape == (10, 64, 64) and np.array_equal(frames, reference)


def test_enhanced_mr_without_plane_positions_is_refused():
    with pytest.raises(GeometryError, match=r"emri_small.dcm frame 1 has no ImagePositionPatient"):
        read_dicom(dicom_testfile("emri_small.dcm"))


def test_enhanced_ct_matches_simpleitk_after_ordering_along_the_normal():
    path = dicom_testfile("eCT_Supplemental.dcm")
    image = read_dicom(path)
    expected, affine = read_with_simpleitk(path)
    # SimpleITK keeps file frame order; mitk orders along the normal (here the reverse).
    assert image.orientation == "RPI"
    assert np.array_equal(image.array, expected[:, :, ::-1])
    flipped = affine.copy()
    flipped[:3, 3] = affine[:3, :3] @ [0, 0, expected.shape[2] - 1] + affine[:3, 3]
    flipped[:3, 2] *= -1
    np.testing.assert_allclose(image.affine, flipped, atol=1e-4)
    assert image.meta["dicom_summary"]["RescaleIntercept"] == -1024


def test_rt_dose_grid_frame_offsets_and_scaling():
    path = dicom_testfile("rtdose.dcm")
    image = read_dicom(path)
    stored, affine = read_with_simpleitk(path)
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    scaling = float(pydicom.dcmread(path, stop_before_pixels=True).DoseGridScaling)
    assert image.array.dtype == np.float32
    np.testing.assert_allclose(image.array, stored * scaling, rtol=1e-6)


def test_ct5n_is_a_regular_volume():
    directory = DICOMDIR_TESTS / "98892001" / "CT5N"
    listing = list_series(directory)
    assert [s.to_dict()["volume"] for s in listing.series] == [True]
    image = read_dicom(directory)
    assert image.shape == (16, 16, 5)
    assert_matches_simpleitk(directory, image)
    assert image.spacing[2] == pytest.approx(2.5, abs=1e-4)


def test_ct2_outlier_is_refused_naming_it():
    """Three contiguous slices 1.25 mm apart and one 202.5 mm away: a guess either way would lose or invent
    data, and interpolating 162 missing slices is no volume, so mitk refuses even with allow_resample."""
    directory = DICOMDIR_TESTS / "77654033" / "CT2"
    (info,) = list_series(directory).series
    assert not info.volume and "not uniform" in (info.problem or "")
    for allow in (False, True):
        with pytest.raises(GeometryError, match=r"202\.5 mm between 17106 and 17136") as caught:
            read_dicom(directory, allow_resample=allow)
        assert "\n" not in str(caught.value)


def test_mr700_projections_are_listed_not_read_as_a_volume():
    directory = DICOMDIR_TESTS / "98892003" / "MR700"
    listing = list_series(directory)
    rows = [s.to_dict() for s in listing.series]
    assert len(rows) == 7 and not any(row["volume"] for row in rows)
    assert {row["split"] for row in rows} == {"orientation"} and {row["slices"] for row in rows} == {1}
    with pytest.raises(UsageError, match=r"7 series found") as caught:
        read_dicom(directory)
    message = str(caught.value)
    assert "\n" not in message and all(f"{n}: 1.3.6.1.4.1.5962" in message for n in range(7))
    assert " MR 1 slice" in message and "ANGIO" not in message  # no free-text description in messages
    single = read_dicom(directory, series="3")
    assert single.shape == (16, 16, 1)
    with pytest.raises(GeometryError, match=r"mixes orientations"):
        read_dicom(directory, series=rows[0]["uid"])


def test_whole_test_tree_picks_the_only_volume_and_counts_skipped_files():
    listing = list_series(DICOMDIR_TESTS)
    assert listing.skipped_files > 0  # DICOMDIR, README, images without pixel data
    assert sum(s.volume for s in listing.series) == 1
    assert read_dicom(DICOMDIR_TESTS).shape == (16, 16, 5)


def test_colour_images_keep_a_trailing_channel_axis():
    uncompressed = read_dicom(dicom_testfile("US1_UNCR.dcm"))
    jpeg2000 = read_dicom(dicom_testfile("US1_J2KR.dcm"))
    assert uncompressed.shape == (640, 480, 1, 3) and uncompressed.array.dtype == np.uint8
    assert np.array_equal(uncompressed.array, jpeg2000.array)
    pixels = pydicom.dcmread(dicom_testfile("US1_UNCR.dcm")).pixel_array  # (rows, columns, 3)
    assert np.array_equal(uncompressed.array[:, :, 0, :], pixels.transpose(1, 0, 2))
    rgb = read_dicom(dicom_testfile("SC_rgb.dcm"))
    assert rgb.shape == (100, 100, 1, 3) and rgb.spacing[:2] == (1.0, 1.0)


# ---------------------------------------------------------------------------------------------------
# Stored values: unused high bits, MONOCHROME1
# ---------------------------------------------------------------------------------------------------
def pydicom_values(path: Path) -> np.ndarray:
    """pydicom's ``pixel_array`` through RescaleSlope/Intercept, ``[column, row]`` like mitk's 2-D slices."""
    dataset = pydicom.dcmread(path)
    values = pydicom.pixels.apply_rescale(dataset.pixel_array, dataset)
    return np.swapaxes(values, 0, 1)


def assert_same_values(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert np.array_equal(actual, expected.astype(actual.dtype)), (actual.min(), actual.max(), expected.max())


@pytest.mark.filterwarnings("ignore:.*(VR|endian).*")
@pytest.mark.parametrize(("name", "route"), [
    ("MR2_UNCR.dcm", "native"),  # 12 of 16 bits, unsigned, read straight from the file
    ("693_UNCR.dcm", "native"),  # 14 of 16 bits, signed: sign-extended from bit 13
    ("MR2_UNCR.dcm", "big-endian"),
    ("RG3_UNCR.dcm", "native"),  # a 2-D radiograph (10 of 16 bits, MONOCHROME1)
    ("MR2_UNCR.dcm", "zip"),  # a zip member goes through pydicom's pixel_array
    ("693_UNCR.dcm", "rle"),  # compressed
])
def test_unused_high_bits_are_masked_like_pydicom_and_simpleitk(tmp_path, name, route):
    original = dicom_testfile(name)
    syntax = {"big-endian": ExplicitVRBigEndian, "rle": RLELossless}.get(route)
    junk = with_unused_high_bits(original, tmp_path / name, seed=3, transfer_syntax=syntax)
    stored = pydicom.dcmread(original)
    raw = pydicom.pixels.pixel_array(pydicom.dcmread(junk), correct_unused_bits=False)
    assert not np.array_equal(raw, stored.pixel_array)  # the copy really carries junk above BitsStored
    source = junk
    if route == "zip":
        source = tmp_path / "series.zip"
        with zipfile.ZipFile(source, "w") as archive:
            archive.write(junk, name)
    image = read_dicom(source)
    expected = pydicom_values(original)
    assert_same_values(image.array[:, :, 0], expected)
    assert_same_values(image.array[:, :, 0], pydicom_values(junk))
    oracle, _ = read_with_simpleitk(junk)
    if stored.PhotometricInterpretation == "MONOCHROME1":  # SimpleITK turns MONOCHROME1 into MONOCHROME2
        oracle = (1 << int(stored.BitsStored)) - 1 - oracle.astype(np.int64)
    assert_same_values(image.array, oracle)


@pytest.mark.parametrize("signed", [False, True])
def test_unused_high_bits_are_masked_in_enhanced_multiframe_objects(anatomical_t1, tmp_path, signed):
    array, affine = orient_volume(*load_nifti(anatomical_t1), "axial")
    values = array // 16 if signed else np.clip(array, 0, None) // 8  # 12-bit values
    written = write_series(values, affine, tmp_path / "clean", modality="MR", enhanced=True, signed=signed,
                           bits_stored=12, order="shuffled")
    junk = with_unused_high_bits(written.files[0], tmp_path / "junk.dcm", seed=5)
    image = read_dicom(junk)
    assert np.array_equal(image.array, written.expected_array)
    assert np.array_equal(decode_frames(junk), decode_frames(written.files[0]))


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG3_UNCR.dcm"])
def test_monochrome1_radiographs_keep_their_stored_values(name):
    """MONOCHROME1 (higher is darker) is not inverted: the values are those pydicom's pixel_array gives,
    through the rescale; SimpleITK inverts them (2**BitsStored - 1 - value), which is checked too."""
    path = dicom_testfile(name)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.PhotometricInterpretation == "MONOCHROME1"
    image = read_dicom(path)
    expected, affine = read_with_simpleitk(path)
    assert image.shape == expected.shape == (header.Columns, header.Rows, 1)
    assert_same_values(image.array[:, :, 0], pydicom_values(path))
    assert_same_values(image.array, (1 << int(header.BitsStored)) - 1 - expected.astype(np.int64))
    np.testing.assert_allclose(image.affine, affine, atol=1e-6)
    summary = image.meta["dicom_summary"]
    assert summary["PhotometricInterpretation"] == "MONOCHROME1" and "monochrome1_inverted" not in summary
    if name == "RG1_UNCR.dcm":  # PixelSpacing "0.000\\0.000": a real degenerate header, read with 1 mm
        assert [float(v) for v in header.PixelSpacing] == [0.0, 0.0]
        assert image.spacing == (1.0, 1.0, 1.0) and summary["spacing_source"] == "unknown (1 mm assumed)"


def test_compressed_monochrome1_radiograph_decodes_like_the_native_one():
    assert np.array_equal(read_dicom(dicom_testfile("RG3_J2KR.dcm")).array,
                          read_dicom(dicom_testfile("RG3_UNCR.dcm")).array)


# ---------------------------------------------------------------------------------------------------
# Several series, splitting, refusals
# ---------------------------------------------------------------------------------------------------
def test_several_series_are_listed_and_selected(anatomical_t1, tmp_path):
    mr = series_from_nifti(anatomical_t1, tmp_path / "a", "axial", modality="MR", description="T1 axial",
                           series_number=3)
    ct = series_from_nifti(anatomical_t1, tmp_path / "b", "sagittal", modality="CT", description="CT sag",
                           series_number=2)
    (tmp_path / "notes.txt").write_text("not dicom")
    listing = list_series(tmp_path)
    rows = [s.to_dict() for s in listing.series]
    assert [r["uid"] for r in rows] == [ct.series_uid, mr.series_uid]  # ordered by SeriesNumber
    assert rows[1]["description"] == "T1 axial" and rows[1]["slices"] == 25 and listing.skipped_files == 1
    assert set(rows[0]) >= {"index", "uid", "modality", "description", "slices", "size", "spacing",
                            "orientation", "volume"}
    with pytest.raises(UsageError, match=r"2 series found .*0: .* CT 33 slices; 1: .* MR 25 slices$"):
        read_dicom(tmp_path)
    assert np.array_equal(read_dicom(tmp_path, series="1").array, mr.expected_array)
    assert np.array_equal(read_dicom(tmp_path, series=ct.series_uid).array, ct.expected_array)
    with pytest.raises(UsageError, match=r"no series with index 5"):
        read_dicom(tmp_path, series="5")


def test_one_volume_beside_single_slices_is_chosen(anatomical_t1, tmp_path):
    volume = series_from_nifti(anatomical_t1, tmp_path / "volume", "axial", modality="MR")
    array, affine = load_nifti(anatomical_t1)
    oriented, oriented_affine = orient_volume(array, affine, "sagittal")
    write_series(oriented[:, :, 10:11], oriented_affine, tmp_path / "localizer", modality="MR")
    assert len(list_series(tmp_path).series) == 2
    assert np.array_equal(read_dicom(tmp_path).array, volume.expected_array)


def test_one_uid_with_two_sizes_is_split_and_named(anatomical_t1, tmp_path):
    array, affine = load_nifti(anatomical_t1)
    uid = pydicom.uid.generate_uid()
    write_series(array, affine, tmp_path / "full", modality="MR", series_uid=uid)
    write_series(array[:20, :20, :3], affine, tmp_path / "crop", modality="MR", series_uid=uid, prefix="CR")
    listing = list_series(tmp_path)
    assert [(s.slices, s.split) for s in listing.series] in ([(25, "size"), (3, "size")],
                                                             [(3, "size"), (25, "size")])
    with pytest.raises(GeometryError, match=r"mixes image sizes .*CR00001.dcm"):
        read_dicom(tmp_path, series=uid)


def test_repeated_positions_split_by_acquisition_number(anatomical_t1, tmp_path):
    array, affine = load_nifti(anatomical_t1)
    uid = pydicom.uid.generate_uid()
    first = write_series(array, affine, tmp_path, modality="MR", series_uid=uid, prefix="A")
    write_series(array * 2, affine, tmp_path, modality="MR", series_uid=uid, prefix="B")
    for file in tmp_path.glob("B*.dcm"):
        ds = pydicom.dcmread(file)
        ds.AcquisitionNumber = 2
        ds.save_as(file)
    parts = list_series(tmp_path).series
    assert [(p.split, p.volume) for p in parts] == [("AcquisitionNumber=1", True), ("AcquisitionNumber=2", True)]
    assert np.array_equal(read_dicom(tmp_path, series="0").array, first.expected_array)


def test_duplicate_positions_are_refused_naming_files(anatomical_t1, tmp_path):
    written = series_from_nifti(anatomical_t1, tmp_path, "axial", modality="MR")
    ds = pydicom.dcmread(written.files[4])
    ds.ImagePositionPatient = pydicom.dcmread(written.files[5]).ImagePositionPatient
    ds.save_as(written.files[4])
    with pytest.raises(GeometryError, match=r"duplicate slice positions: IM00005.dcm and IM00006.dcm"):
        read_dicom(tmp_path, allow_resample=True)


def test_missing_position_is_refused_naming_the_file(anatomical_t1, tmp_path):
    written = series_from_nifti(anatomical_t1, tmp_path, "axial", modality="CT")
    ds = pydicom.dcmread(written.files[7])
    del ds.ImagePositionPatient
    ds.save_as(written.files[7])
    with pytest.raises(GeometryError, match=r"IM00008.dcm has no ImagePositionPatient"):
        read_dicom(tmp_path)
    with pytest.raises(GeometryError, match=r"IM00008.dcm has no ImagePositionPatient"):
        read_dicom(written.files[7])


def test_missing_slice_is_refused_then_resampled(anatomical_t1, tmp_path, caplog):
    array, affine = orient_volume(*load_nifti(anatomical_t1), "axial")  # slices along the normal
    write_series(array, affine, tmp_path, modality="MR", drop=(12,))
    with pytest.raises(GeometryError, match=r"not uniform .*IM00012.dcm and IM00013.dcm.*--allow-resample"):
        read_dicom(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mitk.io.dicom"):
        image = read_dicom(tmp_path, allow_resample=True)
    assert "resampled 24 slices onto 25" in caplog.text
    assert image.shape == array.shape and image.array.dtype == np.int16  # rounded back to the stored type
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    kept = [k for k in range(25) if k != 12]
    assert np.array_equal(image.array[:, :, kept], array[:, :, kept])
    midpoint = np.rint((array[:, :, 11].astype(float) + array[:, :, 13]) / 2)
    assert np.array_equal(image.array[:, :, 12], midpoint)
    assert "resampled" in image.meta["dicom_summary"]


def test_gantry_tilt_is_refused_then_resampled(brain_mr, tmp_path):
    array, affine = load_nifti(brain_mr)
    oriented, oriented_affine = orient_volume(array, affine, "axial")
    tilted = oriented_affine.copy()
    tilted[:3, 2] += 0.15 * oriented_affine[:3, 1] / np.linalg.norm(oriented_affine[:3, 1]) * 6.5  # ≈ 8.5°
    write_series(oriented, tilted, tmp_path, modality="MR", order="shuffled")
    with pytest.raises(GeometryError, match=r"gantry tilt"):
        read_dicom(tmp_path)
    image = read_dicom(tmp_path, allow_resample=True)
    assert image.shape == oriented.shape
    # The resampled grid is orthogonal and every voxel holds the tilted volume's value at its world point.
    columns = image.affine[:3, :3] / np.linalg.norm(image.affine[:3, :3], axis=0)
    np.testing.assert_allclose(columns.T @ columns, np.eye(3), atol=1e-6)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"), -1).reshape(-1, 3)
    world = nib.affines.apply_affine(image.affine, grid)
    source = nib.affines.apply_affine(np.linalg.inv(tilted), world)
    from scipy import ndimage

    expected = ndimage.map_coordinates(oriented.astype(np.float32), source.T, order=1, mode="constant",
                                       cval=np.nan).reshape(image.shape)
    inside = np.isfinite(expected)
    assert inside.mean() > 0.8
    assert np.abs(image.array[inside] - expected[inside]).max() <= 1.0  # rounding to int only


# ---------------------------------------------------------------------------------------------------
# Malformed input, decoders, privacy
# ---------------------------------------------------------------------------------------------------
def test_malformed_files_give_one_line_errors(tmp_path):
    original = dicom_testfile("CT_small.dcm").read_bytes()
    cases = {"truncated_pixels.dcm": (original[:-5000], "truncated pixel data"),
             "truncated_header.dcm": (original[:600], "truncated file: it ends after"),
             "no_preamble.dcm": (original[132:], "not a DICOM file"),
             "empty.dcm": (b"", "not a DICOM file")}
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(InputError, match=message) as caught:
            read_dicom(path)
        assert name in str(caught.value) and "\n" not in str(caught.value)


def test_broken_files_in_a_folder_are_skipped_and_counted(anatomical_t1, tmp_path, caplog):
    written = series_from_nifti(anatomical_t1, tmp_path, "axial", modality="MR")
    (tmp_path / "broken.dcm").write_bytes(written.files[0].read_bytes()[:400])
    with caplog.at_level(logging.WARNING, logger="mitk.io.dicom"):
        listing = list_series(tmp_path)
    assert listing.skipped_files == 1 and "broken.dcm" in caplog.text
    assert listing.series[0].volume


def test_missing_decoder_names_the_install_command(monkeypatch):
    decoder = pydicom.pixels.get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    with pytest.raises(InputError, match=r'no decoder for JPEG 2000 .* pip install "mitk\[dicom\]"'):
        read_dicom(dicom_testfile("MR_small_jp2klossless.dcm"))


def test_no_identifying_attribute_reaches_messages_or_summary(anatomical_t1, tmp_path):
    written = series_from_nifti(anatomical_t1, tmp_path, "axial", modality="CT", drop=(3,))
    messages = []
    for call in (lambda: read_dicom(tmp_path), lambda: read_dicom(tmp_path, series="9"),
                 lambda: read_dicom(tmp_path, series="1.2.3")):
        with pytest.raises(MitkError) as caught:
            call()
        messages.append(str(caught.value))
    image = read_dicom(tmp_path, allow_resample=True)
    listing = list_series(tmp_path)
    text = " ".join(messages) + repr(image.meta["dicom_summary"]) + repr([s.to_dict() for s in listing.series])
    assert not any(canary in text for canary in CANARY_STRINGS)
    assert "CANARY" in str(pydicom.dcmread(written.files[0]).PatientName)  # the canary is really there
    assert os.fspath(tmp_path) in messages[0]
