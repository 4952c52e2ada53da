"""``mitk train --init CHECKPOINT``: fine-tuning from trained weights, matched by layer name and shape."""

from __future__ import annotations

import pytest
import torch

from mitk.checkpoint import load_checkpoint
from mitk.errors import CheckpointError
from mitk.training.finetune import match_weights
from mitk.training.train import train

TINY = {"patch_size": [32, 32, 32], "spacing": [4.0, 4.0, 4.0], "samples_per_case": 1,
        "network": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}}
STILL = {**TINY, "optimizer": {"lr": 1e-12, "weight_decay": 0.0}}
"""A learning rate so small that one epoch leaves the starting weights where they were."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three real MR cases with three label names (the tumour is label 1; label 2 names no voxel)."""
    from test_plan import brain_cases

    return brain_cases(tmp_path_factory.mktemp("init_cases"), 3, ["background", "tumour", "oedema"])


@pytest.fixture(scope="module")
def source(data, tmp_path_factory):
    """A trained three-label run to start from."""
    run = train("segment", plugin="unet", data=data, output_dir=tmp_path_factory.mktemp("init") / "source",
                options={"epochs": 1, "device": "cpu", "seed": 1}, overrides={**TINY, "optimizer": {"lr": 0.01}})
    return run.output_dir / "last.safetensors"


class Payload:
    """Any Python object: pickling it into a checkpoint makes the file unsafe to load."""


def _run(data, output_dir, overrides, **arguments):
    return train("segment", plugin="unet", data=data, output_dir=output_dir,
                 options={"epochs": 1, "device": "cpu", "seed": 2}, overrides=overrides, **arguments)


def test_init_starts_from_the_checkpoints_weights(data, source, tmp_path, single_threaded_torch):
    start = load_checkpoint(source).state_dict
    _run(data, tmp_path / "tuned", STILL, init=source)
    tuned = load_checkpoint(tmp_path / "tuned" / "last.safetensors")
    assert tuned.config["init"] == {"checkpoint": str(source), "loaded": len(start), "reinitialised": [],
                                    "unused": 0}
    weights = [name for name in start if name.endswith("conv.weight")]
    assert weights
    for name in weights:
        torch.testing.assert_close(tuned.state_dict[name], start[name], atol=1e-6, rtol=0)
    _run(data, tmp_path / "fresh", STILL)  # the same run without --init starts elsewhere
    fresh = load_checkpoint(tmp_path / "fresh" / "last.safetensors").state_dict
    assert not torch.allclose(fresh[weights[0]], start[weights[0]])


def test_mismatched_layers_are_listed_then_refused_or_skipped(data, source, tmp_path, single_threaded_torch):
    two_labels = {**STILL, "labels": ["background", "tumour"]}  # one output class fewer than the checkpoint
    with pytest.raises(CheckpointError) as refused:
        _run(data, tmp_path / "refused", two_labels, init=source)
    message = str(refused.value)
    assert "layers do not match the network" in message and "--init-skip-mismatched" in message
    assert "checkpoint 3×" in message and "network 2×" in message
    assert not (tmp_path / "refused").exists()  # refused before the run folder is written

    _run(data, tmp_path / "skipped", two_labels, init=source, init_skip_mismatched=True)
    tuned = load_checkpoint(tmp_path / "skipped" / "last.safetensors")
    skipped = tuned.config["init"]["reinitialised"]
    start = load_checkpoint(source).state_dict
    assert skipped and all(start[name].shape != tuned.state_dict[name].shape for name in skipped)
    for name in set(start) - set(skipped):
        if name.endswith("conv.weight"):
            torch.testing.assert_close(tuned.state_dict[name], start[name], atol=1e-6, rtol=0)


def test_overwrite_never_removes_the_init_checkpoint(data, source, tmp_path):
    """``--init RUN/last.safetensors -d RUN --overwrite`` would delete the weights it starts from: refused."""
    import shutil

    from mitk.errors import UsageError

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(source, run / "last.safetensors")
    before = (run / "last.safetensors").read_bytes()
    with pytest.raises(UsageError, match="refusing to write over the input"):
        train("segment", plugin="unet", data=data, output_dir=run, overwrite=True, init=run / "last.safetensors",
              options={"epochs": 1, "device": "cpu"}, overrides=STILL)
    assert (run / "last.safetensors").read_bytes() == before


def test_unrelated_or_unsafe_weights_are_refused(tmp_path, source):
    network = {"layer.weight": torch.zeros(2, 2)}
    with pytest.raises(CheckpointError, match="no layer of the checkpoint matches"):
        match_weights(source, network)

    pickled = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": Payload()}, pickled)
    with pytest.raises(CheckpointError, match="refused"):
        match_weights(pickled, {"weight": torch.zeros(1)})
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"module.weight": torch.ones(3)}}, wrapped)  # a DataParallel-style prefix
    assert torch.equal(match_weights(wrapped, {"weight": torch.zeros(3)}).state["weight"], torch.ones(3))


def test_cli_init_options(data, run_inprocess, tmp_path):
    code, _, err = run_inprocess("train", "segment", "--plugin", "unet", "--data", data, "-d", tmp_path / "r",
                                 "--init-skip-mismatched")
    assert code == 2 and "needs --init" in err
    code, _, err = run_inprocess("train", "segment", "--plugin", "unet", "--data", data, "-d", tmp_path / "r",
                                 "--init", tmp_path / "missing.safetensors", "--no-plan")
    assert code != 0 and "missing.safetensors" in err and "Traceback" not in err


def test_a_monai_bundles_weights_start_a_plugin_network(tmp_path):
    """The spleen CT bundle's UNet (batch norm) into the unet plugin's (instance norm, no parameters): every
    convolution matches by name and shape; the bundle's norm statistics are unused."""
    from bundle_factory import make_bundle
    from mitk_builtin._segment_networks import UNetSegmenter

    bundle = make_bundle("spleen_ct_segmentation", tmp_path, seed=4)
    plugin = UNetSegmenter()
    network = plugin.network(plugin.resolve_config({"patch_size": [32, 32, 32]}))
    initial = match_weights(bundle, network.state_dict())
    saved = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert set(initial.state) == set(network.state_dict())
    assert any(name.endswith("running_mean") for name in initial.unused)  # batch-norm statistics
    for name, tensor in initial.state.items():
        assert torch.equal(tensor, saved[name])
