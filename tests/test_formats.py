"""NRRD, MetaImage and the other ITK formats: read and written with SimpleITK's exact geometry (SimpleITK is the
oracle), on ITK's own example headers (oblique 2-D, detached data files, 3-D) and on real MR saved by SimpleITK in
any axis order and with oblique directions; and through every command that reads images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import rotation

from mitk.errors import UsageError
from mitk.image import ras_to_lps
from mitk.io.reader import load_image

DATA = Path(__file__).resolve().parent / "data" / "itk_formats"
HEADERS = ("BrainProtonDensitySliceBorder20DirectionPlus30.nhdr", "BrainProtonDensitySliceBorder20DirectionMinus30.mhd",
           "BrainProtonDensity3Slices.mha")


def assert_same_as_simpleitk(path: Path) -> None:
    """mitk's array and affine against SimpleITK's: every corner's physical point, and every voxel."""
    ours, oracle = load_image(path), sitk.ReadImage(str(path))
    size = oracle.GetSize()
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in size], indexing="ij")).reshape(len(size), -1).T
    for corner in corners:
        expected = np.array(oracle.TransformIndexToPhysicalPoint([int(c) for c in corner]))
        voxel = np.array([*corner, *([0] * (3 - len(size))), 1.0])
        found = ras_to_lps(ours.affine) @ voxel
        np.testing.assert_allclose(found[: len(size)], expected, atol=1e-9)
        if len(size) == 2:
            assert found[2] == 0.0
    values = sitk.GetArrayFromImage(oracle)
    expected_array = np.swapaxes(values, 0, 1)[:, :, None] if len(size) == 2 else values.transpose(2, 1, 0)
    assert ours.array.dtype == expected_array.dtype
    np.testing.assert_array_equal(ours.array, expected_array)


@pytest.mark.parametrize("name", HEADERS)
def test_itk_example_headers_read_as_simpleitk_reads_them(name: str) -> None:
    assert_same_as_simpleitk(DATA / name)


def test_oblique_headers_are_rotated_30_degrees_either_way() -> None:
    plus = load_image(DATA / HEADERS[0]).affine
    minus = load_image(DATA / HEADERS[1]).affine
    angle = np.degrees(np.arctan2(ras_to_lps(plus)[1, 0], ras_to_lps(plus)[0, 0]))
    assert angle == pytest.approx(30.0, abs=1e-4)
    angle = np.degrees(np.arctan2(ras_to_lps(minus)[1, 0], ras_to_lps(minus)[0, 0]))
    assert angle == pytest.approx(-30.0, abs=1e-4)


def variants(brain_mr: Path, folder: Path) -> dict[str, Path]:
    """The real MR as NRRD and MetaImage: as stored, axes permuted and flipped, and oblique (rotated header)."""
    image = sitk.ReadImage(str(brain_mr))
    permuted = sitk.Flip(sitk.PermuteAxes(image, [2, 0, 1]), [True, False, True])
    oblique = sitk.Image(image)
    oblique.SetDirection(tuple((rotation(12, -20, 33) @ np.asarray(image.GetDirection()).reshape(3, 3)).ravel()))
    oblique.SetOrigin((-12.5, 40.25, 7.75))
    files = {}
    for label, source in (("plain", image), ("permuted", permuted), ("oblique", oblique)):
        for suffix in (".nrrd", ".mha", ".nhdr"):
            files[label + suffix] = folder / f"{label}{suffix}"
            sitk.WriteImage(source, str(files[label + suffix]), True)
    return files


def test_3d_nrrd_and_metaimage_in_any_axis_order_and_oblique(brain_mr: Path, tmp_path: Path) -> None:
    files = variants(brain_mr, tmp_path)
    for path in files.values():
        assert_same_as_simpleitk(path)
    assert load_image(files["permuted.nrrd"]).orientation != load_image(files["plain.nrrd"]).orientation
    assert load_image(files["plain.nrrd"]).meta["itk"]["format"] == "NRRD"


def test_segment_writes_the_input_format_on_its_exact_grid(brain_mr: Path, tmp_path: Path, run_inprocess) -> None:
    """Default output: NRRD for NRRD, MetaImage (one file) for .mhd; the grid is SimpleITK's, bit for bit; the
    labels are those of the same voxels read from NIfTI."""
    files = variants(brain_mr, tmp_path)
    reference = tmp_path / "ref"
    code, _, err = run_inprocess("segment", brain_mr, "--plugin", "threshold", "--output-dir", reference)
    assert code == 0, err
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(reference / "brain1_image_seg.nii.gz")))
    code, _, err = run_inprocess("segment", files["oblique.nrrd"], files["plain.nhdr"], "--plugin", "threshold",
                                 "--output-dir", tmp_path / "out", "--stats")
    assert code == 0, err
    for name, source in (("oblique_seg.nrrd", files["oblique.nrrd"]), ("plain_seg.nrrd", files["plain.nhdr"])):
        written, original = sitk.ReadImage(str(tmp_path / "out" / name)), sitk.ReadImage(str(source))
        assert written.GetOrigin() == original.GetOrigin()
        assert written.GetSpacing() == original.GetSpacing()
        assert written.GetDirection() == original.GetDirection()
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written), expected)
    assert "volume_ml" in (tmp_path / "out" / "oblique_seg_stats.csv").read_text()
    code, _, err = run_inprocess("segment", files["permuted.mha"], "--plugin", "threshold", "-o",
                                 tmp_path / "asked.mha")
    assert code == 0, err
    written = sitk.ReadImage(str(tmp_path / "asked.mha"))
    assert written.GetDirection() == sitk.ReadImage(str(files["permuted.mha"])).GetDirection()


def test_names_mitk_cannot_write_are_refused_before_any_work(brain_mr: Path, tmp_path: Path, run_inprocess) -> None:
    files = variants(brain_mr, tmp_path)
    for name, message in (("x.mhd", "name the output .mha"), ("x.jpg", "never written as JPEG"),
                          ("x.vtk", "mitk writes NIfTI")):
        code, _, err = run_inprocess("segment", files["plain.nrrd"], "--plugin", "threshold", "-o", tmp_path / name)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / name).exists()
    assert not list(tmp_path.glob(".mitk-*"))


def test_convert_between_dicom_nifti_nrrd_and_metaimage(brain_mr: Path, tmp_path: Path, run_inprocess) -> None:
    from pydicom.data import get_testdata_file

    dicom = get_testdata_file("CT_small.dcm")
    code, _, err = run_inprocess("convert", dicom, tmp_path / "ct.mha")
    assert code == 0, err
    ours, oracle = sitk.ReadImage(str(tmp_path / "ct.mha")), sitk.ReadImage(dicom)
    np.testing.assert_allclose(ours.GetOrigin(), oracle.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(ours.GetSpacing()[:2], oracle.GetSpacing()[:2], atol=1e-6)
    np.testing.assert_allclose(ours.GetDirection(), oracle.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(oracle))
    for target in ("mr.nrrd", "back.nii.gz"):
        source = brain_mr if target == "mr.nrrd" else tmp_path / "mr.nrrd"
        code, _, err = run_inprocess("convert", source, tmp_path / target)
        assert code == 0, err
    original, back = sitk.ReadImage(str(brain_mr)), sitk.ReadImage(str(tmp_path / "back.nii.gz"))
    assert back.GetOrigin() == original.GetOrigin() and back.GetSpacing() == original.GetSpacing()
    np.testing.assert_allclose(back.GetDirection(), original.GetDirection(), atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(original))


def test_info_and_evaluate_accept_nrrd_and_metaimage(brain_mr_label: Path, tmp_path: Path, run_inprocess) -> None:
    code, out, err = run_inprocess("info", DATA / HEADERS[0], "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["itk"]["format"] == "NRRD" and document["shape"] == [221, 257, 1]
    label = sitk.ReadImage(str(brain_mr_label))
    sitk.WriteImage(label, str(tmp_path / "case_label.nrrd"), True)
    sitk.WriteImage(label, str(tmp_path / "case_seg.mha"), True)
    code, out, err = run_inprocess("evaluate", "segment", "--pred", tmp_path / "case_seg.mha", "--ref",
                                   tmp_path / "case_label.nrrd", "--json")
    assert code == 0, err
    assert json.loads(out)["cases"][0]["labels"][0]["dice"] == 1.0


def test_result_save_writes_nrrd(brain_mr: Path, tmp_path: Path) -> None:
    import mitk

    result = mitk.segment(str(DATA / HEADERS[2]), plugin="threshold")
    target = result.save(tmp_path / "labels.nrrd")
    written = sitk.ReadImage(str(target))
    assert written.GetSize() == (181, 217, 3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written).transpose(2, 1, 0), result.label_map)
    with pytest.raises(UsageError, match=r"name the output \.mha"):
        result.save(tmp_path / "labels.mhd")


def test_simpleitk_is_imported_only_for_itk_files(brain_mr: Path) -> None:
    script = ("import sys; from mitk.io.reader import load_image; load_image(sys.argv[1]); "
              "assert 'SimpleITK' not in sys.modules; load_image(sys.argv[2]); assert 'SimpleITK' in sys.modules")
    done = subprocess.run([sys.executable, "-c", script, str(brain_mr), str(DATA / HEADERS[2])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_an_unreadable_nrrd_is_one_line_naming_the_file(tmp_path: Path, run_inprocess) -> None:
    bad = tmp_path / "bad.nrrd"
    bad.write_text("NRRD0004\ntype: nonsense\n")
    code, _, err = run_inprocess("info", bad)
    assert code == 1 and "bad.nrrd: not a readable NRRD image" in err and len(err.strip().splitlines()) == 1


def test_a_2d_simpleitk_image_in_memory_is_read_as_its_file() -> None:
    from mitk.io.memory import as_image

    path = DATA / HEADERS[0]
    in_memory, from_file = as_image(sitk.ReadImage(str(path))), load_image(path)
    assert np.array_equal(in_memory.affine, from_file.affine)
    np.testing.assert_array_equal(in_memory.array, from_file.array)


def test_a_2d_oblique_header_gives_a_2d_label_map_with_its_direction(tmp_path: Path, run_inprocess) -> None:
    source = DATA / HEADERS[1]  # MetaImage, direction rotated −30°, detached compressed data
    code, _, err = run_inprocess("segment", source, "--plugin", "threshold", "--output-dir", tmp_path)
    assert code == 0, err
    written, original = sitk.ReadImage(str(tmp_path / f"{source.stem}_seg.mha")), sitk.ReadImage(str(source))
    assert written.GetDimension() == 2 and written.GetSize() == original.GetSize()
    assert written.GetDirection() == original.GetDirection() and written.GetOrigin() == original.GetOrigin()
    assert "mm²" in err
