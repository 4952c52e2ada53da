"""The model given with ``--weights`` (or ``weights=``) is an input: no output of any verb (``-o``, the files of
``-d``, ``--manifest``, ``--csv``) and no ``result.save`` may name it, by its own name, a symbolic link or a hard
link, with or without ``--overwrite``: one usage line naming the file, exit 2, nothing written, the model intact.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from helpers import invoke

import mitk
from mitk.checkpoint import save_checkpoint
from mitk.errors import UsageError
from mitk.testing import run_mitk

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def unet_weights(tmp_path: Path) -> Path:
    """A tiny seeded unet as ``mitk train`` saves it, in its run folder."""
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    config = plugin.resolve_config({"patch_size": [32, 32, 32], "spacing": [4.0, 4.0, 4.0],
                                    "network": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}})
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "run" / "best.safetensors", plugin.network(config).state_dict(),
                           task="segment", plugin="unet", plugin_version=None, config=config)


@pytest.fixture
def resnet_weights(tmp_path: Path) -> Path:
    """A narrow untrained 2-D ResNet classifier as a mitk checkpoint."""
    from mitk_builtin._classify_networks import ResNetClassifier

    plugin = ResNetClassifier()
    config = plugin.resolve_config({"class_names": ["normal", "lesion"], "spatial_dims": 2,
                                    "image_size": [32, 32], "network": {"widen_factor": 0.25}})
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "classifier" / "best.safetensors", plugin.network(config).state_dict(),
                           task="classify", plugin="resnet", plugin_version="0", config=config)


def assert_refused(code: int, stderr: str, weights: Path, before: str) -> None:
    assert code == 2, stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("mitk: error:") and "refusing to write over the input" in line
    assert str(weights) in line and "Traceback" not in stderr
    assert digest(weights) == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
@pytest.mark.parametrize("option", ["--manifest", "-o"])
def test_segment_never_writes_over_its_weights(unet_weights: Path, anatomical_t1: Path, tmp_path: Path,
                                               option: str, overwrite: list[str]) -> None:
    before, out = digest(unet_weights), tmp_path / "out"
    target = ["-d", str(out), "--manifest", str(unet_weights)] if option == "--manifest" else [
        "-o", str(unet_weights)]
    code, _, stderr = invoke(["segment", str(anatomical_t1), "--weights", str(unet_weights), *target, *overwrite])
    assert_refused(code, stderr, unet_weights, before)
    assert not out.exists()
    assert sorted(path.name for path in unet_weights.parent.iterdir()) == ["best.safetensors"]


def test_a_link_to_the_weights_is_the_weights(unet_weights: Path, anatomical_t1: Path, tmp_path: Path) -> None:
    """A symbolic link and a hard link name the same file: refused as the manifest and as ``-o``."""
    before = digest(unet_weights)
    symbolic, hard = tmp_path / "manifest.jsonl", tmp_path / "hard.nii.gz"
    symbolic.symlink_to(unet_weights)
    os.link(unet_weights, hard)
    code, _, stderr = invoke(["segment", str(anatomical_t1), "--weights", str(unet_weights), "-d",
                              str(tmp_path / "out"), "--manifest", str(symbolic)])
    assert_refused(code, stderr, unet_weights, before)
    code, _, stderr = invoke(["segment", str(anatomical_t1), "--weights", str(unet_weights), "-o", str(hard),
                              "--overwrite"])
    assert_refused(code, stderr, unet_weights, before)


def test_the_files_of_a_model_folder_are_inputs(unet_weights: Path, anatomical_t1: Path) -> None:
    """``--weights FOLDER`` (a bundle or model folder): every file in it is an input, refused before the model
    loads."""
    notes = unet_weights.parent / "configs" / "metadata.json"
    notes.parent.mkdir()
    notes.write_text("{}")
    before = digest(notes)
    code, _, stderr = invoke(["segment", str(anatomical_t1), "--weights", str(unet_weights.parent), "-o",
                              str(notes), "--overwrite"])
    assert_refused(code, stderr, notes, before)


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_classify_csv_never_writes_over_its_weights(resnet_weights: Path, tmp_path: Path,
                                                    overwrite: list[str]) -> None:
    from PIL import Image
    from skimage import data

    picture = tmp_path / "retina.png"
    Image.fromarray(data.microaneurysms()).save(picture)
    before = digest(resnet_weights)
    code, _, stderr = invoke(["classify", str(picture), "--weights", str(resnet_weights), "-d",
                              str(tmp_path / "out"), "--csv", str(resnet_weights), *overwrite])
    assert_refused(code, stderr, resnet_weights, before)
    assert not (tmp_path / "out").exists()
    # The same command with another CSV runs: the refusal is about the name, not the model.
    code, _, stderr = invoke(["classify", str(picture), "--weights", str(resnet_weights), "-d",
                              str(tmp_path / "out"), "--csv", str(tmp_path / "classes.csv")])
    assert code == 0, stderr
    assert (tmp_path / "classes.csv").is_file() and digest(resnet_weights) == before


def test_the_real_command_refuses_the_manifest_on_the_weights(unet_weights: Path, anatomical_t1: Path,
                                                              tmp_path: Path) -> None:
    """The case of the report, as a user runs it: ``python -m mitk`` in a subprocess."""
    before = digest(unet_weights)
    done = run_mitk("segment", "--weights", unet_weights, anatomical_t1, "-d", tmp_path / "out", "--manifest",
                    unet_weights, timeout=300)
    assert_refused(done.returncode, done.stderr, unet_weights, before)
    assert not (tmp_path / "out").exists()


def test_api_save_never_writes_over_the_weights(unet_weights: Path, resnet_weights: Path, anatomical_t1: Path,
                                                tmp_path: Path) -> None:
    """``result.save`` of a segmentation (through a link named like NIfTI) and of a classification record (the
    checkpoint's own name), with ``overwrite=True``."""
    from PIL import Image
    from skimage import data

    before = digest(unet_weights)
    segmentation = mitk.load(weights=unet_weights, device="cpu").segment(anatomical_t1)
    link = tmp_path / "link.nii.gz"
    link.symlink_to(unet_weights)
    with pytest.raises(UsageError, match="refusing to write over the input") as refused:
        segmentation.save(link, overwrite=True)
    assert str(unet_weights) in str(refused.value) and "--" not in str(refused.value)  # no CLI flags in the API
    assert digest(unet_weights) == before and link.is_symlink()

    before = digest(resnet_weights)
    picture = tmp_path / "retina.png"
    Image.fromarray(data.microaneurysms()).save(picture)
    record = mitk.load(weights=resnet_weights, device="cpu").classify(picture)
    with pytest.raises(UsageError, match="refusing to write over the input"):
        record.save(resnet_weights, overwrite=True)
    assert digest(resnet_weights) == before
    assert segmentation.save(tmp_path / "seg.nii.gz").is_file() and record.save(tmp_path / "c.json").is_file()
