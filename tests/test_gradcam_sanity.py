"""Grad-CAM sanity checks (Adebayo et al., 2018, "Sanity checks for saliency maps"): the map of a classifier
whose decision depends on a bright square planted in a real MR slice points at that square, it changes when
the weights are randomised, and a last feature map of 1×1 (a constant map) is said, not drawn silently.

The "bright-square" network is built by hand so that its evidence is known exactly: a 5×5 mean filter minus a
threshold, a ReLU (the Grad-CAM layer), a global max pool and a linear layer that says "square" the more the
strongest response exceeds the threshold. Its preprocessing resizes 128² to 64², so the map also has to come
back through the inverse resize onto the input's own grid, without a transpose or a flip.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import invoke, load

from mitk import hookimpl
from mitk.checkpoint import save_checkpoint
from mitk.errors import MitkWarning
from mitk.io.reader import load_image
from mitk.runner.model import load_model
from mitk.tasks import ClassificationPlugin, Transform
from mitk.tasks.classify.runner import ClassificationRunner

PLUGIN = "bright-square"
SQUARE = (slice(20, 36), slice(80, 96))
"""Where the square is planted in the 128×128 slice: off-centre and off the diagonal, so that a transposed or
flipped map misses it."""


class BrightSquareClassifier(ClassificationPlugin):
    """``square`` when some 5×5 neighbourhood of the 0..1-scaled image is brighter than ``threshold``."""

    cam_layer_name = "1"

    def default_config(self) -> dict[str, Any]:
        return {"class_names": ["clear", "square"], "spatial_dims": 2, "in_channels": 1}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(1, 1, 5, padding=2), torch.nn.ReLU(),
                                   torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2))

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        from monai.transforms import Compose, Resized, ScaleIntensityd

        return Compose([Resized(keys="image", spatial_size=[64, 64], mode="area"),
                        ScaleIntensityd(keys="image", minv=0.0, maxv=1.0)])

    def cam_layer(self, config: dict[str, Any]) -> str:
        return self.cam_layer_name


def detector_weights(network: torch.nn.Module, threshold: float = 0.6) -> dict[str, torch.Tensor]:
    state = network.state_dict()
    state["0.weight"] = torch.full((1, 1, 5, 5), 1 / 25)
    state["0.bias"] = torch.tensor([-threshold])
    state["4.weight"] = torch.tensor([[-10.0], [10.0]])
    state["4.bias"] = torch.tensor([0.5, -0.5])
    return state


@pytest.fixture
def bright_square(mitk_plugins: Callable[..., Any]) -> None:
    class Plugin:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register: Any) -> None:
            register(PLUGIN, task="classify", factory=BrightSquareClassifier)

    mitk_plugins(Plugin())


@pytest.fixture
def planted(brain_mr: Path, tmp_path: Path) -> Path:
    """Slice 12 of the real MR (128×128, LAS) with a 16×16 square at twice the slice's maximum."""
    mr = load(brain_mr)
    plane = np.asarray(mr.get_fdata(dtype=np.float32))[:, :, 12:13].copy()
    plane[SQUARE[0], SQUARE[1], 0] = 2 * plane.max()
    affine = mr.affine.copy()
    affine[:3, 3] = mr.affine[:3, :3] @ [0, 0, 12] + mr.affine[:3, 3]  # the slice where it lies in the volume
    path = tmp_path / "mr_square.nii.gz"
    nib.save(nib.Nifti1Image(plane, affine), path)
    return path


def checkpoint(tmp_path: Path, name: str, state: dict[str, torch.Tensor]) -> Path:
    return save_checkpoint(tmp_path / name, state, task="classify", plugin=PLUGIN, plugin_version="0",
                           config=BrightSquareClassifier().default_config())


def grad_cam(weights: Path, image: Path) -> tuple[str, np.ndarray]:
    runner = ClassificationRunner(load_model("classify", None, weights, device="cpu"))
    result, heat = runner.explain(load_image(image), class_index=1)
    return result.predicted, heat[:, :, 0]


@pytest.mark.usefixtures("bright_square")
def test_the_map_points_at_the_planted_square_and_changes_with_random_weights(planted: Path,
                                                                              tmp_path: Path) -> None:
    network = BrightSquareClassifier().network({})
    trained = checkpoint(tmp_path, "detector.safetensors", detector_weights(network))
    predicted, heat = grad_cam(trained, planted)
    assert predicted == "square" and heat.shape == (128, 128)
    inside = np.zeros(heat.shape, dtype=bool)
    inside[SQUARE] = True
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    assert inside[peak], (peak, SQUARE)  # the hottest pixel is on the square (not transposed, not flipped)
    assert heat.max() == 1.0 and heat[inside].mean() > 0.3  # largest where the evidence is (MONAI's own
    assert heat[~inside].mean() < 0.01                        # normaliser would show it as the smallest)
    # Model randomisation (Adebayo et al.): the same architecture with random weights must give another map.
    torch.manual_seed(0)
    randomised = checkpoint(tmp_path, "random.safetensors",
                            {k: torch.randn_like(v) for k, v in network.state_dict().items()})
    _, random_heat = grad_cam(randomised, planted)
    assert np.corrcoef(heat.ravel(), random_heat.ravel())[0, 1] < 0.5
    # Cascading randomisation from the top: a random output layer alone changes the map as well.
    top = detector_weights(network)
    top["4.weight"], top["4.bias"] = torch.tensor([[0.7], [-0.3]]), torch.tensor([0.1, 0.2])
    with pytest.warns(MitkWarning, match="zero everywhere"):  # this output layer votes against "square"
        _, top_heat = grad_cam(checkpoint(tmp_path, "top.safetensors", top), planted)
    assert not top_heat.any()


@pytest.mark.usefixtures("bright_square")
def test_explain_writes_the_overlay_of_the_map_on_the_command_line(planted: Path, tmp_path: Path) -> None:
    """``mitk classify --explain``: the overlay PNG is reddest on the square, in the picture's orientation."""
    from PIL import Image as PillowImage

    trained = checkpoint(tmp_path, "detector.safetensors", detector_weights(BrightSquareClassifier().network({})))
    code, _, stderr = invoke(["classify", str(planted), "--weights", str(trained), "--explain", "-d",
                              str(tmp_path / "out")])
    assert code == 0, stderr
    picture = np.asarray(PillowImage.open(tmp_path / "out" / "mr_square_gradcam.png").convert("RGB"), np.int16)
    redness = picture[..., 0] - picture[..., 2]
    # The slice is LAS: i runs towards patient left, so the picture shows it as stored; j runs anterior, so
    # rows run from the last j to the first (anterior at the top).
    rows, columns = np.unravel_index(int(np.argmax(redness)), redness.shape)
    assert SQUARE[0].start <= columns < SQUARE[0].stop and 127 - SQUARE[1].stop < rows <= 127 - SQUARE[1].start


def built_in_checkpoint(tmp_path: Path, plugin_name: str, size: int, seed: int = 0) -> Path:
    """A built-in 2-D classifier with seeded random weights (what a first training epoch starts from)."""
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get(plugin_name, "classify").load()
    config = plugin.resolve_config({"class_names": ["a", "b"], "spatial_dims": 2, "in_channels": 1,
                                    "image_size": [size, size]})
    torch.manual_seed(seed)
    network = plugin.network(config)
    return save_checkpoint(tmp_path / f"{plugin_name}_{size}_{seed}.safetensors", network.state_dict(),
                           task="classify", plugin=plugin_name, plugin_version="0", config=config)


def test_a_one_by_one_feature_map_is_warned_about_on_the_command_line(planted: Path, tmp_path: Path) -> None:
    """ResNet at 32² ends in a 1×1 feature map: Grad-CAM of it is one constant, and the CLI says so."""
    weights = built_in_checkpoint(tmp_path, "resnet", 32)
    code, _, stderr = invoke(["classify", str(planted), "--weights", str(weights), "--explain", "-d",
                              str(tmp_path / "out")])
    assert code == 0, stderr
    lines = [line for line in stderr.splitlines() if "Grad-CAM" in line]
    assert len(lines) == 1 and lines[0].startswith("mitk: warning: mr_square.nii.gz: Grad-CAM layer 'layer4'")
    assert "1×1 feature map" in lines[0] and "image_size" in lines[0]
    # At 64² the same network's last map is 2×2: no warning.
    code, _, stderr = invoke(["classify", str(planted), "--weights", str(built_in_checkpoint(tmp_path, "resnet", 64)),
                              "--explain", "-d", str(tmp_path / "out64")])
    assert code == 0 and "Grad-CAM" not in stderr, stderr


SEEDS = {"densenet121": (0, 2), "resnet": (0, 1)}


@pytest.mark.parametrize("plugin_name", ["densenet121", "resnet"])
def test_built_in_maps_depend_on_the_weights(plugin_name: str, planted: Path, tmp_path: Path) -> None:
    """Model randomisation on the built-in networks: two weight draws give different maps (and no warning
    at 64², whose last feature maps are larger than 1×1)."""
    maps = []
    for seed in SEEDS[plugin_name]:
        runner = ClassificationRunner(load_model("classify", None, built_in_checkpoint(tmp_path, plugin_name, 64, seed),
                                                 device="cpu"))
        with warnings.catch_warnings():
            warnings.simplefilter("error", MitkWarning)
            _, heat = runner.explain(load_image(planted))
        assert heat.shape == (128, 128, 1) and heat.min() >= 0.0 and heat.max() <= 1.0
        maps.append(heat.ravel())
    assert maps[0].max() == maps[1].max() == 1.0  # neither is the all-zero map of no positive evidence
    assert np.corrcoef(maps[0], maps[1])[0, 1] < 0.9


def test_an_all_zero_map_is_warned_about(planted: Path, tmp_path: Path) -> None:
    """DenseNet121 drawn with seed 1 finds no positive evidence for its class at 64²: the map is all zero,
    and ``--explain`` says so instead of writing a blank overlay silently."""
    weights = built_in_checkpoint(tmp_path, "densenet121", 64, seed=1)
    code, _, stderr = invoke(["classify", str(planted), "--weights", str(weights), "--explain", "-d",
                              str(tmp_path / "out")])
    assert code == 0, stderr
    lines = [line for line in stderr.splitlines() if "Grad-CAM" in line]
    assert len(lines) == 1 and "zero everywhere" in lines[0] and lines[0].startswith("mitk: warning: mr_square")
