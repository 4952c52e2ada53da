"""ITK transform files holding several transforms: a ``CompositeTransform`` as SimpleITK's ``WriteTransform``
writes it, read by ``mitk warp`` in ITK's order (the last listed is applied first) and checked against
SimpleITK resampling the MNI152 T1 (2 mm) with the same file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import invoke, load

from mitk.errors import InputError
from mitk.io.transforms import FLIP, read_transform


def composite() -> sitk.CompositeTransform:
    """Five kinds of ITK transform with centres, chained: affine, Euler (ZXY and ZYX), versor rigid,
    similarity, translation."""
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((1.04, 0.03, -0.02, -0.01, 0.97, 0.05, 0.02, -0.04, 1.01))
    affine.SetTranslation((2.0, -1.5, 3.0))
    affine.SetCenter((10.0, -20.0, 15.0))
    euler = sitk.Euler3DTransform((-5.0, 12.0, 8.0), 0.08, -0.05, 0.12, (1.0, 2.0, -3.0))
    euler_zyx = sitk.Euler3DTransform((3.0, -4.0, 6.0), -0.06, 0.09, 0.04, (-2.0, 0.5, 1.5))
    euler_zyx.SetComputeZYX(True)
    versor = sitk.VersorRigid3DTransform()
    versor.SetRotation((0.2, -0.3, 0.93), 0.1)
    versor.SetTranslation((1.0, 1.0, -2.0))
    versor.SetCenter((0.0, -15.0, 20.0))
    similarity = sitk.Similarity3DTransform()
    similarity.SetScale(1.06)
    similarity.SetRotation((0.0, 1.0, 0.0), -0.07)
    similarity.SetCenter((5.0, 5.0, 5.0))
    similarity.SetTranslation((-1.0, 0.0, 2.5))
    result = sitk.CompositeTransform(3)
    for transform in (affine, euler, euler_zyx, versor, similarity, sitk.TranslationTransform(3, (4.0, -2.0, 1.0))):
        result.AddTransform(transform)
    return result


def test_composite_points_match_simpleitk(tmp_path: Path) -> None:
    path = tmp_path / "chain.tfm"
    transform = composite()
    sitk.WriteTransform(transform, str(path))
    assert path.read_text().count("Transform:") == 7  # the composite header and its six
    mine = read_transform(path)
    assert mine.matrix is not None
    points = np.random.default_rng(0).uniform(-80, 80, size=(50, 3))
    expected = np.array([FLIP[:3, :3] @ np.asarray(transform.TransformPoint(tuple(FLIP[:3, :3] @ p)))
                         for p in points])
    np.testing.assert_allclose(mine.apply(points), expected, atol=1e-9)
    # not the reverse order: the test can tell ITK's order from its opposite
    reverse = sitk.CompositeTransform(3)
    for index in reversed(range(transform.GetNumberOfTransforms())):
        reverse.AddTransform(transform.GetNthTransform(index))
    other = np.array([FLIP[:3, :3] @ np.asarray(reverse.TransformPoint(tuple(FLIP[:3, :3] @ p))) for p in points])
    assert np.abs(other - expected).max() > 1.0


def test_mitk_warp_with_a_composite_matches_simpleitk_resampling(mni_t1_2mm: Path, tmp_path: Path) -> None:
    path = tmp_path / "chain.tfm"
    sitk.WriteTransform(composite(), str(path))
    out = tmp_path / "warped.nii.gz"
    code, _, stderr = invoke(["warp", str(mni_t1_2mm), "-t", str(path), "-r", str(mni_t1_2mm), "-o", str(out)])
    assert code == 0, stderr
    image = sitk.ReadImage(str(mni_t1_2mm), sitk.sitkFloat32)
    expected = np.transpose(sitk.GetArrayFromImage(sitk.Resample(image, image, sitk.ReadTransform(str(path)),
                                                                 sitk.sitkLinear, 0.0)), (2, 1, 0))
    mine = np.asarray(load(out).dataobj)
    original = np.asarray(load(mni_t1_2mm).dataobj)
    interior = np.zeros(mine.shape, bool)
    interior[3:-3, 3:-3, 3:-3] = True  # samples at the image edge differ only by padding rules
    scale = float(np.abs(expected).max())
    assert np.abs(mine - expected)[interior].max() < 1e-3 * scale
    assert np.abs(original - expected)[interior].mean() > 0.02 * scale  # the chain moved the image


@pytest.mark.parametrize(("text", "message"), [
    ("#Transform 0\nTransform: TranslationTransform_double_3_3\nParameters: 1 0 0\nFixedParameters:\n"
     "#Transform 1\nTransform: TranslationTransform_double_3_3\nParameters: 0 1 0\nFixedParameters:\n",
     "no CompositeTransform header"),
    ("#Transform 0\nTransform: CompositeTransform_double_3_3\n#Transform 1\nTransform: CompositeTransform_double_3_3\n"
     "#Transform 2\nTransform: TranslationTransform_double_3_3\nParameters: 1 0 0\nFixedParameters:\n",
     "nested CompositeTransforms"),
    ("#Transform 0\nTransform: CompositeTransform_double_3_3\n#Transform 1\nTransform: BSplineTransform_double_3_3\n"
     "Parameters: 0 0 0\nFixedParameters: 1 2\n", "unsupported transform type BSplineTransform_double_3_3"),
    ("#Transform 0\nTransform: CompositeTransform_double_3_3\n", "an empty CompositeTransform"),
    ("#Transform 0\nTransform: VersorRigid3DTransform_double_3_3\nParameters: 1 1 1 0 0 0\nFixedParameters: 0 0 0\n",
     "versor"),
])
def test_bad_multi_transform_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.tfm"
    path.write_text("#Insight Transform File V1.0\n" + text)
    with pytest.raises(InputError, match=message) as raised:
        read_transform(path)
    assert str(path) in str(raised.value)


def test_versor_rotation_is_a_rotation() -> None:
    """A versor about z by θ has vector part (0, 0, sin θ/2)."""
    from mitk.io.transforms import _versor

    angle = 0.4
    expected = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    np.testing.assert_allclose(_versor(np.array([0.0, 0.0, math.sin(angle / 2)]), Path("x.tfm")), expected,
                               atol=1e-12)
