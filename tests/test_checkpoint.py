"""The one checkpoint format: self-describing safetensors, and loading that never runs pickled code."""

from __future__ import annotations

import json
import pathlib
from pathlib import Path

import pytest
import torch
from conftest import run_mitk

from mitk.checkpoint import load_checkpoint, save_checkpoint
from mitk.errors import CheckpointError


class CodeOnLoad:
    """A pickle payload that creates a file when unpickled — what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def malicious(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": CodeOnLoad(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_pickle_payload_is_refused_and_never_runs(malicious: tuple[Path, Path]) -> None:
    path, marker = malicious
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_cli_refuses_malicious_checkpoint_in_one_line(malicious: tuple[Path, Path], anatomical_t1: Path,
                                                      tmp_path: Path) -> None:
    path, marker = malicious
    output = tmp_path / "seg.nii.gz"
    result = run_mitk("segment", str(anatomical_t1), "--plugin", "unet", "--weights", str(path), "-o", str(output))
    assert result.returncode == 1
    assert "refused" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not output.exists()


def test_self_describing_round_trip(tmp_path: Path) -> None:
    state = {"layer.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "layer.bias": torch.ones(2)}
    config = {"labels": {"0": "background", "1": "brain"}, "spacing": None, "network": {"channels": [4, 8]}}
    path = save_checkpoint(tmp_path / "model.safetensors", state, task="segment", plugin="unet",
                           plugin_version="0.1.0", config=config, metrics={"mean_dice": 0.9})
    loaded = load_checkpoint(path)
    assert loaded.self_describing
    assert (loaded.task, loaded.plugin, loaded.plugin_version) == ("segment", "unet", "0.1.0")
    assert loaded.config == config and loaded.metrics == {"mean_dice": 0.9}
    assert set(loaded.state_dict) == set(state)
    for name, tensor in state.items():
        assert torch.equal(loaded.state_dict[name], tensor)
    # the metadata is plain JSON text inside the safetensors header: readable without mitk
    header_length = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_length])
    assert header["__metadata__"]["plugin"] == "unet"


def test_plain_weights_load_but_describe_nothing(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = {"w": torch.ones(3)}
    save_file(state, str(tmp_path / "plain.safetensors"))
    torch.save(state, tmp_path / "plain.pt")
    for name in ("plain.safetensors", "plain.pt"):
        loaded = load_checkpoint(tmp_path / name)
        assert not loaded.self_describing and torch.equal(loaded.state_dict["w"], state["w"])


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x10\x00\x00\x00\x00\x00\x00\x00{broken"])
def test_corrupt_files_give_clear_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_checkpoint_for_another_task_or_plugin_is_refused(tmp_path: Path) -> None:
    from mitk.runner.model import load_model

    path = save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(1)}, task="classify", plugin="unet",
                           plugin_version=None, config={})
    with pytest.raises(CheckpointError, match="classify task"):
        load_model("segment", None, path)
    path = save_checkpoint(tmp_path / "s.safetensors", {"w": torch.ones(1)}, task="segment", plugin="unet",
                           plugin_version=None, config={})
    with pytest.raises(CheckpointError, match="trained with plugin 'unet'"):
        load_model("segment", "segresnet", path)
