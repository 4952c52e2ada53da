"""Issue 20, item 3: degenerate registrations are refused, not invented.

A constant (all-zero) fixed or moving image has nothing to align, and a 2-D slice has no place in a 3-D volume
without a slice-to-volume model: ``mitk register`` and ``model.register`` refuse them in one line (in the runner,
so for every plugin), and a good case of the same batch still runs. A transform whose matrices overflow when
composed, or a ``.json`` matrix whose bottom row is not ``(0, 0, 0, 1)``, is refused by ``mitk warp`` and
``mitk evaluate register`` instead of warping through NaN into an all-zero image.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke

from mitk import hookimpl
from mitk.errors import InputError
from mitk.image import Image
from mitk.tasks import RegistrationPlugin


class Identity(RegistrationPlugin):
    """Returns the identity: counts its calls, so a test can see that a refused pair never reached it."""

    needs_weights = False
    trainable = False
    calls = 0

    def register(self, fixed: Image, moving: Image, model: Any, config: dict[str, Any]
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
        Identity.calls += 1
        return np.eye(4), None


@pytest.fixture(scope="module", autouse=True)
def identity_plugin() -> Iterator[None]:
    from mitk.plugin_manager import use_plugins

    class Plugin:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register: Any) -> None:
            register("identity", task="register", factory=Identity)

    with use_plugins(Plugin()):
        yield


@pytest.fixture(scope="module")
def images(brain_mr: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real MR brain, and from it: an all-zero volume, a constant one, and one 2-D slice (same affine)."""
    folder = tmp_path_factory.mktemp("degenerate")
    source = nib.load(brain_mr)
    data = np.asarray(source.dataobj)
    made = {"zero": np.zeros(data.shape, np.float32), "constant": np.full(data.shape, 7, np.int16),
            "slice": data[:, :, 12].astype(np.float32)}
    paths = {"brain": brain_mr}
    for name, array in made.items():
        paths[name] = folder / f"{name}.nii.gz"
        nib.Nifti1Image(array, source.affine).to_filename(paths[name])
    return paths


def test_constant_and_2d_moving_images_are_refused_and_the_good_case_runs(images: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    out = tmp_path / "out"
    Identity.calls = 0
    code, stdout, stderr = invoke(["register", str(images["brain"]), str(images["zero"]), str(images["constant"]),
                                   str(images["slice"]), str(images["brain"]), "-p", "identity", "-d", str(out),
                                   "--json"])
    assert code == 3, stderr
    errors = {Path(r["input"]).name: r["error"] for r in json.loads(stdout)["cases"] if r["status"] == "failed"}
    assert errors == {
        "zero.nii.gz": f"{images['zero']}: the moving image is constant (every voxel is 0.0): nothing to register",
        "constant.nii.gz": f"{images['constant']}: the moving image is constant (every voxel is 7): nothing to "
                           "register",
        "slice.nii.gz": f"{images['slice']}: a 2-D image (shape (128, 128, 1)) cannot be registered to a 3-D one "
                        "(shape (128, 128, 25)); give two volumes or two slices"}
    assert Identity.calls == 1  # only the real pair reached the plugin
    assert sorted(p.name for p in out.iterdir()) == ["brain1_image_warped.nii.gz"]
    assert "internal error" not in stderr and "Traceback" not in stderr


def test_a_constant_fixed_image_is_refused_before_any_case(images: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = invoke(["register", str(images["zero"]), str(images["brain"]), "-p", "affine",
                                   "-d", str(out)])
    assert code == 1 and stdout == ""
    assert stderr.strip().splitlines()[-1] == (f"mitk: error: {images['zero']}: the fixed image is constant "
                                               "(every voxel is 0.0): nothing to register")
    assert not out.exists()


def test_a_2d_fixed_image_with_a_3d_moving_one_is_refused(images: dict[str, Path], tmp_path: Path) -> None:
    code, stdout, stderr = invoke(["register", str(images["slice"]), str(images["brain"]), "-p", "affine",
                                   "-d", str(tmp_path / "out"), "--json"])
    assert code == 1 and "internal error" not in stderr
    [record] = json.loads(stdout)["cases"]
    assert "a 2-D image (shape (128, 128, 1)) cannot be registered to a 3-D one" in record["error"]
    assert str(images["slice"]) in record["error"] and not (tmp_path / "out").exists()


def test_the_python_api_refuses_the_same_pairs(images: dict[str, Path]) -> None:
    import mitk

    for plugin in ("identity", "affine", "deformable"):  # the runner refuses, whatever the plugin
        model = mitk.load(plugin)
        with pytest.raises(InputError, match="the moving image is constant"):
            model.register(images["brain"], images["zero"])
        with pytest.raises(InputError, match="the fixed image is constant"):
            model.register(images["constant"], images["brain"])
        with pytest.raises(InputError, match=r"a 2-D image .* cannot be registered to a 3-D one"):
            model.register(images["brain"], images["slice"])
    result = mitk.load("identity").register(images["slice"], images["slice"])  # two slices register as before
    assert result.warped.array.shape == (128, 128, 1)


# -------------------------------------------------------------------------------------------------
# Transforms that overflow or are not affine
# -------------------------------------------------------------------------------------------------

SCALE = "1e200 0 0 0 1e200 0 0 0 1e200 0 0 0"


def overflowing_composite(path: Path) -> Path:
    """An ITK CompositeTransform of two finite affines whose product is infinite."""
    block = ("#Transform {n}\nTransform: AffineTransform_double_3_3\nParameters: " + SCALE
             + "\nFixedParameters: 0 0 0\n")
    path.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: CompositeTransform_double_3_3\n"
                    + block.format(n=1) + block.format(n=2))
    return path


def matrix_json(path: Path, matrix: np.ndarray) -> Path:
    path.write_text(json.dumps({"matrix_ras": matrix.tolist()}))
    return path


@pytest.fixture
def transforms(tmp_path: Path) -> dict[str, Path]:
    projective = np.eye(4)
    projective[3, 2] = 0.5
    huge = np.diag([1e200, 1e200, 1e200, 1.0])
    return {"composite": overflowing_composite(tmp_path / "composite.tfm"),
            "projective": matrix_json(tmp_path / "projective.json", projective),
            "huge": matrix_json(tmp_path / "huge.json", huge)}


def test_warp_refuses_an_overflowing_composite_and_a_non_affine_matrix(images: dict[str, Path],
                                                                        transforms: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    brain = str(images["brain"])
    output = tmp_path / "warped.nii.gz"
    expected = {
        ("composite",): f"{transforms['composite']}: the 2 transforms compose to a matrix that overflows "
                        "(not finite)",
        ("projective",): f"{transforms['projective']}: matrix_ras is not affine: its bottom row is "
                         "[0.0, 0.0, 0.5, 1.0], not [0, 0, 0, 1]",
        ("huge", "huge"): f"{transforms['huge']}: the chain of transforms up to this one overflows (not finite)"}
    for names, message in expected.items():
        chain = [argument for name in names for argument in ("-t", str(transforms[name]))]
        code, stdout, stderr = invoke(["warp", brain, *chain, "-r", brain, "-o", str(output)])
        assert code == 1 and stdout == "" and stderr == f"mitk: error: {message}\n", (names, stderr)
        assert not output.exists()


def test_evaluate_register_refuses_the_same_transforms(transforms: dict[str, Path], tmp_path: Path) -> None:
    landmarks = tmp_path / "points.csv"
    landmarks.write_text("name,x,y,z\na,1,2,3\nb,4,5,6\n")
    for name in ("composite", "projective"):
        code, stdout, stderr = invoke(["evaluate", "register", "--fixed-landmarks", str(landmarks),
                                       "--moving-landmarks", str(landmarks), "-t", str(transforms[name]),
                                       "--json"])
        assert code == 1 and stdout == "" and stderr.startswith(f"mitk: error: {transforms[name]}: "), stderr
        assert len(stderr.splitlines()) == 1
