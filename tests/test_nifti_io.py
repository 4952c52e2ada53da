"""NIfTI geometry is sacred: every axis order and flip, oblique affines, both NIfTI versions, both suffixes.

The volume is nibabel's real T1 (``anatomical.nii``). Each of the 48 axis orderings/flips is a copy of the
same anatomy on a different voxel grid; outputs must keep the input's grid exactly, and the label map must
follow the anatomy. SimpleITK (LPS world) reads every file as an independent oracle.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke, load, rotation

from mitk.io.nifti import read_nifti, write_nifti
from mitk.plugin_manager import use_plugins

PERMUTATIONS = list(itertools.permutations(range(3)))
FLIPS = list(itertools.product((False, True), repeat=3))
ORIENTATIONS = [(p, f) for p in PERMUTATIONS for f in FLIPS]
FORMATS = [(nib.Nifti1Image, ".nii"), (nib.Nifti1Image, ".nii.gz"), (nib.Nifti2Image, ".nii"),
           (nib.Nifti2Image, ".nii.gz")]
CODES = [(1, 1), (1, 0), (0, 2), (2, 4)]
"""(qform_code, sform_code) pairs: both, qform only, sform only, different codes."""
OBLIQUE_ANGLES = [(15.0, 0.0, 0.0), (10.0, -20.0, 30.0), (-35.0, 25.0, 5.0)]
LPS = np.diag([-1.0, -1.0, 1.0])




def reorient(data: np.ndarray, affine: np.ndarray, permutation: tuple[int, ...], flips: tuple[bool, ...]
             ) -> tuple[np.ndarray, np.ndarray]:
    """The same anatomy on a new grid: new axis ``a`` is old axis ``permutation[a]``, reversed if flipped."""
    new_data = np.transpose(data, permutation)
    new_to_old = np.zeros((4, 4))
    new_to_old[3, 3] = 1
    for new_axis, (old_axis, flipped) in enumerate(zip(permutation, flips, strict=True)):
        if flipped:
            new_data = np.flip(new_data, axis=new_axis)
            new_to_old[old_axis, new_axis] = -1
            new_to_old[old_axis, 3] = data.shape[old_axis] - 1
        else:
            new_to_old[old_axis, new_axis] = 1
    return np.ascontiguousarray(new_data), affine @ new_to_old


def back_to_original_grid(values: np.ndarray, permutation: tuple[int, ...], flips: tuple[bool, ...]
                          ) -> np.ndarray:
    """Undo :func:`reorient` on an array."""
    for axis, flipped in enumerate(flips):
        if flipped:
            values = np.flip(values, axis=axis)
    return np.transpose(values, np.argsort(permutation))


def save(data: np.ndarray, affine: np.ndarray, path: Path, klass: Any = nib.Nifti1Image,
         codes: tuple[int, int] = (1, 1)) -> Path:
    image = klass(data, affine)
    image.set_qform(affine, code=codes[0])
    image.set_sform(affine, code=codes[1])
    nib.save(image, path)
    return path


@pytest.fixture(scope="module")
def t1(anatomical_t1: Path) -> tuple[np.ndarray, np.ndarray]:
    image = load(anatomical_t1)
    return np.asarray(image.dataobj).astype(np.int16), image.affine


def assert_same_grid(output: Path, source: Path) -> None:
    """Same affine (1e-5), shape, qform/sform matrices and codes, NIfTI version and orientation."""
    out, src = load(output), load(source)
    assert out.shape[:3] == src.shape[:3]
    assert np.allclose(out.affine, src.affine, atol=1e-5)
    for key in ("qform_code", "sform_code"):
        assert int(out.header[key]) == int(src.header[key]), key
    if int(src.header["qform_code"]):
        assert np.allclose(out.header.get_qform(), src.header.get_qform(), atol=1e-5)
    if int(src.header["sform_code"]):
        assert np.allclose(out.header.get_sform(), src.header.get_sform(), atol=1e-5)
    assert type(out.header) is type(src.header)
    assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(src.affine)


# -------------------------------------------------------------------------------------------------
# Reader and writer, directly
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("permutation", "flips"), ORIENTATIONS)
def test_write_keeps_the_grid_for_every_axis_order(
        t1: tuple[np.ndarray, np.ndarray], tmp_path: Path, permutation: tuple[int, ...],
        flips: tuple[bool, ...]) -> None:
    data, affine = reorient(*t1, permutation, flips)
    for n, (klass, suffix) in enumerate(FORMATS):
        codes = CODES[(ORIENTATIONS.index((permutation, flips)) + n) % len(CODES)]
        source = save(data, affine, tmp_path / f"in{n}{suffix}", klass, codes)
        image = read_nifti(source)
        assert np.allclose(image.affine, affine, atol=1e-5)
        assert np.array_equal(image.array, data)
        assert image.orientation == "".join(nib.aff2axcodes(affine))
        output = write_nifti((image.array > 500).astype(np.uint8), tmp_path / f"out{n}{suffix}", like=image)
        assert_same_grid(output, source)
        assert np.array_equal(np.asanyarray(load(output).dataobj), data > 500)


@pytest.mark.parametrize("angles", OBLIQUE_ANGLES)
def test_write_keeps_oblique_affines(t1: tuple[np.ndarray, np.ndarray], tmp_path: Path,
                                     angles: tuple[float, float, float]) -> None:
    data, affine = t1
    oblique = affine.copy()
    oblique[:3] = rotation(*angles) @ affine[:3]
    for n, (klass, suffix) in enumerate(FORMATS):
        source = save(data, oblique, tmp_path / f"in{n}{suffix}", klass, CODES[n])
        image = read_nifti(source)
        assert np.allclose(image.affine, oblique, atol=1e-5)
        output = write_nifti(np.zeros(data.shape, np.uint8), tmp_path / f"out{n}{suffix}", like=image)
        assert_same_grid(output, source)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_scaled_data_reads_as_float_equal_to_nibabel(t1: tuple[np.ndarray, np.ndarray], tmp_path: Path,
                                                     suffix: str) -> None:
    data, affine = t1
    scaled = nib.Nifti1Image(data, affine)
    scaled.header.set_slope_inter(0.25, -12.5)
    path = tmp_path / f"scaled{suffix}"
    nib.save(scaled, path)
    image = read_nifti(path)
    assert image.array.dtype.kind == "f"
    expected = load(path).get_fdata()
    assert np.allclose(image.array, expected, rtol=1e-6, atol=1e-4)
    assert np.allclose(expected, data * 0.25 - 12.5)


@pytest.mark.parametrize("codes", [(1, 0), (0, 1), (2, 0), (0, 3), (0, 0)], ids=str)
def test_qform_only_and_sform_only_files_keep_their_codes(t1: tuple[np.ndarray, np.ndarray], tmp_path: Path,
                                                          codes: tuple[int, int]) -> None:
    data, affine = reorient(*t1, (2, 0, 1), (True, False, True))
    source = save(data, affine, tmp_path / "in.nii.gz", codes=codes)
    image = read_nifti(source)
    output = write_nifti(np.ones(data.shape, np.uint8), tmp_path / "out.nii.gz", like=image)
    assert_same_grid(output, source)
    assert (int(load(output).header["qform_code"]), int(load(output).header["sform_code"])) == codes


# -------------------------------------------------------------------------------------------------
# Through `mitk segment`: the label map lands on the input's grid and follows the anatomy
# -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Tiny volumes: one torch thread is several times faster than two on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def reorienting_threshold_plugin() -> Any:
    """A test plugin that reorients to RAS before thresholding, so the runner must invert the reorientation."""
    from mitk import hookimpl

    class Plugin:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register: Any) -> None:
            from mitk_builtin._threshold import ThresholdSegmenter

            class ReorientingThreshold(ThresholdSegmenter):
                needs_torch = True  # its network is what the test holds, breaks or counts

                def inference_transforms(self, config: dict[str, Any]) -> Any:
                    from monai.transforms import Orientationd

                    return Orientationd(keys="image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))

            register("threshold-ras", task="segment", factory=ReorientingThreshold)

    return Plugin()


CASES = [(f"o{n:02d}", p, f) for n, (p, f) in enumerate(ORIENTATIONS)]
OBLIQUE_CASES = [f"oblique{n}" for n in range(len(OBLIQUE_ANGLES))]


@pytest.fixture(scope="module")
def segmented(t1: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One batch per plugin over all 48 reoriented copies, the original and oblique copies."""

    root = tmp_path_factory.mktemp("orientations")
    inputs = root / "in"
    inputs.mkdir()
    sources: dict[str, Path] = {}
    data, affine = t1
    sources["original"] = save(data, affine, inputs / "original.nii.gz")
    for n, (name, permutation, flips) in enumerate(CASES):
        klass, suffix = FORMATS[n % len(FORMATS)]
        new_data, new_affine = reorient(data, affine, permutation, flips)
        sources[name] = save(new_data, new_affine, inputs / f"{name}{suffix}", klass, CODES[n % len(CODES)])
    for n, angles in enumerate(OBLIQUE_ANGLES):
        klass, suffix = FORMATS[(n + 1) % len(FORMATS)]
        oblique = affine.copy()
        oblique[:3] = rotation(*angles) @ affine[:3]
        sources[OBLIQUE_CASES[n]] = save(data, oblique, inputs / f"{OBLIQUE_CASES[n]}{suffix}", klass, CODES[n])

    documents = {}
    with use_plugins(reorienting_threshold_plugin()), single_threaded_torch():
        for plugin in ("threshold", "threshold-ras"):
            code, stdout, stderr = invoke(["segment", "--plugin", plugin, str(inputs), "--output-dir",
                                           str(root / plugin), "--json"])
            assert code == 0, stderr
            documents[plugin] = json.loads(stdout)
    return {"sources": sources, "root": root, "documents": documents}


def output_of(segmented: dict[str, Any], plugin: str, name: str) -> Path:
    from mitk.io.atomic import split_suffix

    stem = split_suffix(segmented["sources"][name])[0]
    return segmented["root"] / plugin / f"{stem}_seg.nii.gz"


def test_batch_segmented_every_orientation(segmented: dict[str, Any]) -> None:
    for document in segmented["documents"].values():
        assert document["summary"] == {"total": 52, "ok": 52, "skipped": 0, "failed": 0}


@pytest.mark.parametrize("plugin", ["threshold", "threshold-ras"])
@pytest.mark.parametrize(("name", "permutation", "flips"), CASES, ids=[c[0] for c in CASES])
def test_label_map_keeps_grid_and_follows_anatomy(segmented: dict[str, Any], plugin: str, name: str,
                                                  permutation: tuple[int, ...], flips: tuple[bool, ...]) -> None:
    source, output = segmented["sources"][name], output_of(segmented, plugin, name)
    assert_same_grid(output, source)
    labels = load(output)
    assert labels.get_data_dtype().kind in "iu"
    label_map = np.asanyarray(labels.dataobj)
    reference = np.asanyarray(load(output_of(segmented, plugin, "original")).dataobj)
    assert 0 < reference.sum() < reference.size
    assert np.array_equal(back_to_original_grid(label_map, permutation, flips), reference)


@pytest.mark.parametrize("name", OBLIQUE_CASES)
def test_label_map_of_oblique_input(segmented: dict[str, Any], name: str) -> None:
    for plugin in ("threshold", "threshold-ras"):
        output = output_of(segmented, plugin, name)
        assert_same_grid(output, segmented["sources"][name])
        reference = np.asanyarray(load(output_of(segmented, plugin, "original")).dataobj)
        assert np.array_equal(np.asanyarray(load(output).dataobj), reference)


def sitk_geometry(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return (np.array(image.GetOrigin()), np.array(image.GetDirection()).reshape(3, 3),
            np.array(image.GetSpacing()))


# SimpleITK (ITK 5.4) reads NIfTI-1 only: check the NIfTI-1 cases (even indices, see `segmented`).
SITK_CASES = [c[0] for n, c in enumerate(CASES) if FORMATS[n % len(FORMATS)][0] is nib.Nifti1Image][::3]
SITK_OBLIQUE = [name for n, name in enumerate(OBLIQUE_CASES) if FORMATS[(n + 1) % len(FORMATS)][0] is nib.Nifti1Image]


@pytest.mark.parametrize("name", SITK_CASES + SITK_OBLIQUE)
def test_simpleitk_sees_the_same_geometry(segmented: dict[str, Any], name: str) -> None:
    import SimpleITK as sitk
    source, output = segmented["sources"][name], output_of(segmented, "threshold-ras", name)
    origin, direction, spacing = sitk_geometry(output)
    source_origin, source_direction, source_spacing = sitk_geometry(source)
    assert np.allclose(origin, source_origin, atol=1e-4)
    assert np.allclose(direction, source_direction, atol=1e-5)
    assert np.allclose(spacing, source_spacing, atol=1e-5)
    # SimpleITK's world is LPS: x and y change sign against nibabel's RAS affine.
    affine = load(source).affine
    assert np.allclose(origin, LPS @ affine[:3, 3], atol=1e-4)
    assert np.allclose(direction @ np.diag(spacing), LPS @ affine[:3, :3], atol=1e-4)
    # Voxel order: SimpleITK arrays are (k, j, i).
    label_map = np.asanyarray(load(output).dataobj)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(output))).transpose(2, 1, 0), label_map)


# -------------------------------------------------------------------------------------------------
# Scaled data, 2-D images, free text in headers, qform/sform disagreement
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_scaled_data_is_float32_for_both_suffixes(t1: tuple[np.ndarray, np.ndarray], tmp_path: Path,
                                                  suffix: str) -> None:
    data, affine = t1
    scaled = nib.Nifti1Image(data, affine)
    scaled.header.set_slope_inter(0.5, 3.0)
    path = tmp_path / f"scaled{suffix}"
    nib.save(scaled, path)
    array = read_nifti(path).array
    assert array.dtype == np.float32
    assert np.array_equal(array, data.astype(np.float32) * 0.5 + 3)


def two_d_image(tmp_path: Path, suffix: str = ".nii") -> Path:
    """A real 2-D NIfTI (dim[0] = 2): one slice of the T1 with free text in every text field."""
    data = np.asarray(load(Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii").dataobj)
    image = nib.Nifti1Image(data[:, :, 12].astype(np.int16), np.diag([2.0, 2.5, 3.0, 1.0]))
    image.header.set_qform(image.affine, code=1)
    image.header.set_sform(image.affine @ np.array([[1, 0, 0, 4], [0, 1, 0, 5], [0, 0, 1, 0], [0, 0, 0, 1.0]]),
                           code=2)
    fill_free_text(image.header)
    path = tmp_path / f"x2d{suffix}"
    nib.save(image, path)
    return path


def fill_free_text(header: Any) -> None:
    header["descrip"] = b"CANARY^SECRET scanned 2020"
    header["aux_file"] = b"CANARY-AUX"
    if "db_name" in header:  # NIfTI-1 only
        header["db_name"] = b"CANARY-DB"
    header.set_intent("t test", (4.0,), name="CANARY-INTENT")


def test_segment_two_d_nifti_gives_a_two_d_label_map_on_its_header(tmp_path: Path) -> None:
    source = two_d_image(tmp_path)
    code, _, stderr = invoke(["segment", str(source), "--plugin", "threshold", "--output-dir", str(tmp_path / "out"),
                              "--stats", "--preview"])
    assert code == 0, stderr
    assert (tmp_path / "out" / "x2d_seg_stats.csv").exists() and (tmp_path / "out" / "x2d_seg_preview.png").exists()
    output = tmp_path / "out" / "x2d_seg.nii.gz"
    labels, original = load(output), load(source)
    assert labels.shape == original.shape == (33, 41)
    assert np.allclose(labels.affine, original.affine, atol=1e-6)
    for key in ("qform_code", "sform_code"):
        assert int(labels.header[key]) == int(original.header[key])
    assert np.allclose(labels.header.get_sform(), original.header.get_sform(), atol=1e-6)
    assert np.allclose(labels.header.get_zooms(), original.header.get_zooms())
    label_map = np.asanyarray(labels.dataobj)
    assert label_map.dtype.kind in "iu" and 0 < label_map.sum() < label_map.size


def test_two_d_source_with_channels_keeps_its_grid(tmp_path: Path) -> None:
    image = read_nifti(two_d_image(tmp_path, ".nii.gz"))
    output = write_nifti(np.zeros((33, 41, 1, 2), np.float32), tmp_path / "prob.nii.gz", like=image)
    assert load(output).shape == (33, 41, 1, 2)
    assert np.allclose(load(output).affine, image.affine, atol=1e-6)
    plain = write_nifti(image.array, tmp_path / "copy.nii", like=image)  # the 2-D array itself, as convert writes it
    assert load(plain).shape == (33, 41)


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
def test_outputs_carry_no_free_text_from_the_input(t1: tuple[np.ndarray, np.ndarray], tmp_path: Path,
                                                   klass: Any) -> None:
    data, affine = t1
    image = klass(data, affine)
    fill_free_text(image.header)
    source = tmp_path / "in.nii.gz"
    nib.save(image, source)
    read = read_nifti(source)
    outputs = [write_nifti(np.zeros(data.shape, np.uint8), tmp_path / "labels.nii.gz", like=read, intent="label"),
               write_nifti(np.zeros(data.shape, np.float32), tmp_path / "prob.nii", like=read),
               write_nifti(read.array, tmp_path / "converted.nii.gz", like=read)]
    for output in outputs:
        header = load(output).header
        assert b"CANARY" not in header.binaryblock, output
        assert header["descrip"].item().startswith(b"mitk")
    assert load(outputs[1]).header.get_intent()[:2] == ("t test", (4.0,))  # numeric intent kept, name dropped


def rotated_sform_file(path: Path, codes: tuple[int, int]) -> tuple[Path, np.ndarray, np.ndarray]:
    data = np.zeros((20, 22, 24), np.int16)
    qform = np.diag([1.0, 1.2, 1.5, 1.0])
    qform[:3, 3] = [-10, -12, -18]
    sform = qform.copy()
    sform[:3] = rotation(15, 0, 0) @ qform[:3]
    sform[:3, 3] += [3, 4, 5]
    image = nib.Nifti1Image(data, None)
    image.set_qform(qform, code=codes[0])
    image.set_sform(sform, code=codes[1])
    nib.save(image, path)
    return path, qform, sform


@pytest.mark.parametrize(("codes", "itk_uses"), [((1, 2), "qform"), ((1, 1), "sform"), ((2, 4), "qform")])
def test_qform_sform_disagreement_is_one_warning_naming_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                 codes: tuple[int, int], itk_uses: str) -> None:
    """mitk and nibabel use the sform; SimpleITK (the oracle) follows ITK's rule, which the warning names."""
    sitk = pytest.importorskip("SimpleITK")
    path, qform, sform = rotated_sform_file(tmp_path / "rotated.nii", codes)
    with caplog.at_level(logging.WARNING, logger="mitk.io.nifti"):
        image = read_nifti(path)
    assert np.allclose(image.affine, sform, atol=1e-4) and np.allclose(load(path).affine, image.affine)
    reference = sitk.ReadImage(str(path))
    itk_affine = np.eye(4)
    itk_affine[:3, :3] = LPS @ np.array(reference.GetDirection()).reshape(3, 3) @ np.diag(reference.GetSpacing())
    itk_affine[:3, 3] = LPS @ np.array(reference.GetOrigin())
    assert np.allclose(itk_affine, qform if itk_uses == "qform" else sform, atol=1e-4)
    distance = float(np.abs(qform - sform).max())
    assert distance > 5  # millimetres apart, not rounding
    messages = [r.getMessage() for r in caplog.records if r.name == "mitk.io.nifti"]
    assert len(messages) == 1 and "\n" not in messages[0], messages
    assert str(path) in messages[0] and f"ITK/SimpleITK uses the {itk_uses}" in messages[0]
    assert "mitk uses the sform" in messages[0]


@pytest.mark.parametrize("codes", [(1, 0), (0, 1), (1, 1)], ids=str)
def test_no_warning_when_only_one_form_or_both_agree(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                     codes: tuple[int, int]) -> None:
    data = np.zeros((4, 5, 6), np.int16)
    affine = np.diag([1.0, 1.2, 1.5, 1.0])
    affine[:3] = rotation(10, 20, 30) @ affine[:3]
    affine[:3, 3] = [100.5, -200.25, 300.125]
    path = save(data, affine, tmp_path / "agree.nii.gz", codes=codes)
    with caplog.at_level(logging.WARNING, logger="mitk.io.nifti"):
        read_nifti(path)
    assert not [r for r in caplog.records if r.name == "mitk.io.nifti"]
