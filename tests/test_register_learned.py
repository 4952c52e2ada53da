"""The registration runner's learned path: a network's displacement on its grid → millimetres on the fixed grid.

The fixed image is nibabel's real T1 placed with an oblique, axis-flipped affine; the plugin's transforms reorient
to RAS and resample to 3 mm, so the network grid differs from the fixed grid in axis order, direction and
spacing. The network answers a constant displacement in network voxels; its world vector is known exactly, and
SimpleITK's resampling of the moving image by that translation is the independent oracle for the warped image.
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import rotation

from mitk.enums import Task
from mitk.errors import PluginError
from mitk.io.nifti import read_nifti
from mitk.runner.model import LoadedModel
from mitk.runner.tensors import to_meta_tensor
from mitk.tasks import RegistrationPlugin
from mitk.tasks.register.runner import RegistrationRunner

VOXELS = (2.0, 0.0, -1.0)
"""The constant displacement the test network predicts, in network-grid voxels."""


class ConstantDisplacement(torch.nn.Module):
    """Ignores its input's values; returns ``VOXELS`` at every network voxel, shaped as VoxelMorph's output."""

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        assert pair.shape[1] == 2, "moving and fixed as two channels"
        field = torch.tensor(VOXELS, dtype=pair.dtype).view(1, 3, 1, 1, 1)
        return field.expand(pair.shape[0], 3, *pair.shape[2:]).clone()


class Learned(RegistrationPlugin):
    """A learned plugin: transforms and a network, no ``register`` of its own."""

    def inference_transforms(self, config: dict[str, Any]) -> Any:
        from monai.transforms import Compose, Orientationd, Spacingd

        return Compose([Orientationd(keys="image", axcodes="RAS"),
                        Spacingd(keys="image", pixdim=(3.0, 3.0, 3.0), mode="bilinear")])

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        return ConstantDisplacement()


@pytest.fixture(scope="module")
def oblique_t1(tmp_path_factory: pytest.TempPathFactory, anatomical_t1) -> Any:
    source = nib.load(anatomical_t1)
    array = np.asarray(source.get_fdata(), np.float32)[::-1, :, ::-1]  # stored with two axes reversed
    affine = np.eye(4)
    affine[:3, :3] = rotation(8, -5, 12) @ np.diag([-2.0, 2.0, -2.0])
    affine[:3, 3] = [30.0, -40.0, 20.0]
    path = tmp_path_factory.mktemp("learned") / "fixed.nii.gz"
    nib.Nifti1Image(np.ascontiguousarray(array), affine).to_filename(path)
    return path


def _model(plugin: RegistrationPlugin) -> LoadedModel:
    return LoadedModel(name="learned", task=Task.REGISTER, plugin=plugin, config={},
                       network=plugin.network({}).eval(), device=torch.device("cpu"))


def test_learned_displacement_is_mm_on_the_fixed_grid(oblique_t1) -> None:
    fixed = read_nifti(oblique_t1)
    plugin = Learned()
    network_grid = plugin.inference_transforms({})({"image": to_meta_tensor(fixed)})["image"]
    expected_mm = np.asarray(network_grid.affine, float)[:3, :3] @ np.array(VOXELS)
    assert np.linalg.norm(expected_mm) > 5  # a real shift, along oblique world axes

    result = RegistrationRunner(_model(plugin))(fixed, fixed)

    assert result.matrix is None and result.displacement is not None
    assert result.displacement.shape == (*fixed.spatial_shape, 3)
    np.testing.assert_allclose(result.displacement, np.broadcast_to(expected_mm, result.displacement.shape),
                               atol=1e-4)
    np.testing.assert_array_equal(result.warped.affine, fixed.affine)

    # SimpleITK: the same moving image, translated by the expected vector (LPS), on the fixed grid.
    moving = sitk.ReadImage(str(oblique_t1), sitk.sitkFloat32)
    translation = sitk.TranslationTransform(3, (-expected_mm[0], -expected_mm[1], expected_mm[2]))
    oracle = sitk.Resample(moving, moving, translation, sitk.sitkLinear, 0.0)
    expected = np.transpose(sitk.GetArrayFromImage(oracle), (2, 1, 0))
    inside = np.zeros(expected.shape, bool)
    inside[3:-3, 3:-3, 3:-3] = True
    inside &= expected != 0
    assert inside.sum() > 0.3 * inside.size
    difference = np.abs(result.warped.array - expected)[inside]
    assert np.median(difference) < 1e-3 * float(np.abs(expected).max())
    assert difference.max() < 1e-2 * float(np.abs(expected).max())


def test_learned_plugin_with_a_wrong_field_shape_is_a_plugin_error(oblique_t1) -> None:
    class HalfGrid(Learned):
        def predict_displacement(self, network: Any, fixed: Any, moving: Any, config: Any) -> torch.Tensor:
            return torch.zeros(1, 3, 2, 2, 2)

    fixed = read_nifti(oblique_t1)
    with pytest.raises(PluginError, match="displacement of shape"):
        RegistrationRunner(_model(HalfGrid()))(fixed, fixed)


def test_a_plugin_with_neither_register_nor_network_is_refused() -> None:
    model = LoadedModel(name="empty", task=Task.REGISTER, plugin=RegistrationPlugin(), config={}, network=None,
                        device=torch.device("cpu"))
    with pytest.raises(PluginError, match="neither overrides register"):
        RegistrationRunner(model)


def test_a_learned_plugin_lacks_nothing_and_a_bare_one_lacks_register() -> None:
    from mitk.registry import missing_methods

    assert missing_methods(Learned()) == []
    assert missing_methods(RegistrationPlugin()) == ["network", "inference_transforms"]

    class Classical(RegistrationPlugin):
        def register(self, fixed: Any, moving: Any, model: Any, config: Any) -> Any:
            return None, None

    assert missing_methods(Classical()) == []
