"""Issue 20, item 4: ordinary conditions are one-line errors naming the file, never ``internal error``.

A singular affine, running out of memory (``not enough memory for …``, as docs/cli.md promises), ``--device
meta``, a picture over Pillow's decompression-bomb limit, and JSON nested too deeply to parse (a transform, a
checkpoint's metadata, a line of a manifest, which ``mitk manifest merge`` skips as damaged).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import invoke, use_segmenter

from mitk.errors import CheckpointError, InputError, UsageError

DEEP = 100_000
"""Nesting depth of the hostile JSON: far past Python's recursion limit."""


def deep_json(key: str) -> str:
    return '{"' + key + '": ' + "[" * DEEP + "]" * DEEP + "}"


@pytest.fixture
def singular(brain_mr: Path, tmp_path: Path) -> Path:
    """The real MR brain with an sform whose third column is zero (slice thickness 0: a singular affine)."""
    source = nib.load(brain_mr)
    header = source.header.copy()
    header.set_qform(None, code=0)
    header["sform_code"] = 1
    header["srow_z"] = [0.0, 0.0, 0.0, 0.0]
    path = tmp_path / "singular.nii.gz"
    nib.Nifti1Image(np.asarray(source.dataobj), None, header).to_filename(path)
    assert np.linalg.matrix_rank(nib.load(path).affine[:3, :3]) == 2
    return path


def test_a_singular_affine_fails_its_case_in_one_line(singular: Path, brain_mr: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = invoke(["segment", str(singular), str(brain_mr), "-p", "threshold", "-d", str(out),
                                   "--json"])
    assert code == 3, stderr
    failed = [r for r in json.loads(stdout)["cases"] if r["status"] == "failed"]
    assert [r["error"] for r in failed] == [
        f"{singular}: the affine is singular (voxel sizes 0.78125, 0.78125, 0 mm; its voxel axes do not span 3-D "
        "space): fix the header's sform/qform"]
    assert sorted(p.name for p in out.iterdir()) == ["brain1_image_seg.nii.gz"]
    assert "internal error" not in stderr
    import mitk

    with pytest.raises(InputError, match="the affine is singular"):
        mitk.load("threshold").segment(singular)




def failing_forward(error: BaseException) -> type:
    """A threshold segmenter whose network raises ``error`` on its first call, then works."""
    from mitk_builtin._threshold import ThresholdSegmenter

    class RunsOut(ThresholdSegmenter):
        needs_torch = True  # its network is what the test holds, breaks or counts

        def network(self, config: dict[str, Any]) -> Any:
            network = super().network(config)
            forward, calls = network.forward, []

            def first_call_runs_out(image: Any) -> Any:
                calls.append(1)
                if len(calls) == 1:
                    raise error
                return forward(image)

            network.forward = first_call_runs_out
            return network

    return RunsOut


@pytest.mark.parametrize(("error", "message"), [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 3221225472 bytes. Error code 12 (Cannot allocate memory)"),
     "not enough memory for 3.0 GiB (torch could not allocate it)"),
    (MemoryError("Unable to allocate 8.00 GiB for an array with shape (1024, 1024, 1024) and data type float64"),
     "not enough memory for an array of 8.00 GiB (shape (1024, 1024, 1024), float64)"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.1 "
                            "GiB of which 1.2 GiB is free."), "not enough GPU memory for 2.00 GiB"),
])
def test_running_out_of_memory_says_not_enough_memory(error: BaseException, message: str, brain_mr: Path,
                                                      tmp_path: Path, mitk_plugins: Callable[..., Any]) -> None:
    """torch's CPU allocator raises a RuntimeError, numpy a MemoryError: both are the documented line, the case
    fails and the next one runs."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.nii.gz").write_bytes(brain_mr.read_bytes())
    use_segmenter(mitk_plugins, "runs-out", failing_forward(error))
    code, stdout, stderr = invoke(["segment", "-p", "runs-out", str(folder), "-d", str(tmp_path / "out"), "--json"])
    assert code == 3, stderr
    first, second = json.loads(stdout)["cases"]
    assert first["error"] == f"{folder / 'a.nii.gz'}: {message}" and second["status"] == "ok"
    assert "internal error" not in stderr


def test_a_cpu_out_of_memory_outside_a_batch_is_an_ordinary_error(brain_mr: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import mitk.runner.resample

    def runs_out(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1073741824 bytes.")

    monkeypatch.setattr(mitk.runner.resample, "resample_through", runs_out)
    transform = tmp_path / "identity.json"
    transform.write_text(json.dumps({"matrix_ras": np.eye(4).tolist()}))
    code, _, stderr = invoke(["warp", str(brain_mr), "-t", str(transform), "-r", str(brain_mr),
                              "-o", str(tmp_path / "w.nii.gz")])
    assert code == 1 and stderr == "mitk: error: not enough memory for 1.0 GiB (torch could not allocate it)\n"


def test_device_meta_is_a_usage_error(brain_mr: Path, tmp_path: Path) -> None:
    import mitk

    code, stdout, stderr = invoke(["segment", str(brain_mr), "-p", "threshold", "--device", "meta",
                                   "-d", str(tmp_path / "out")])
    assert code == 2 and stdout == ""
    assert stderr == "mitk: error: device 'meta' cannot run a model (use auto, cpu or cuda)\n"
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match=r"^device 'meta' cannot run a model"):
        mitk.load("threshold", device="meta")
    with pytest.raises(UsageError, match=r"^invalid device 'gpu0'"):
        mitk.load("threshold", device="gpu0")


def test_a_picture_over_pillows_bomb_limit_is_refused_in_one_line(brain_mr: Path, tmp_path: Path) -> None:
    """A 14000×14000 one-bit PNG is 24 kB on disk and 196 Mpx: over twice Pillow's limit, where Pillow raises
    instead of warning."""
    from PIL import Image as Picture

    bomb = tmp_path / "bomb.png"
    Picture.new("1", (14000, 14000)).save(bomb)
    assert bomb.stat().st_size < 100_000
    code, _, stderr = invoke(["info", str(bomb)])
    assert code == 1 and stderr.splitlines()[0] == (
        f"mitk: error: {bomb}: picture is too large (over twice Pillow's decompression-bomb limit of "
        f"{Picture.MAX_IMAGE_PIXELS:,} pixels; mitk reads up to 100,000,000)")
    code, stdout, stderr = invoke(["segment", str(bomb), str(brain_mr), "-p", "threshold", "-d",
                                   str(tmp_path / "out"), "--json"])
    assert code == 3 and "internal error" not in stderr
    assert "picture is too large" in json.loads(stdout)["cases"][0]["error"]


def test_deeply_nested_json_is_an_ordinary_error(brain_mr: Path, tmp_path: Path) -> None:
    transform = tmp_path / "deep.json"
    transform.write_text(deep_json("matrix_ras"))
    output = tmp_path / "w.nii.gz"
    code, _, stderr = invoke(["warp", str(brain_mr), "-t", str(transform), "-r", str(brain_mr), "-o", str(output)])
    assert code == 1 and stderr == f"mitk: error: {transform}: not a mitk transform record (JSON nested too deeply)\n"
    assert not output.exists()


def test_a_checkpoint_with_deeply_nested_metadata_is_refused(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from mitk.checkpoint import FORMAT_VERSION, load_checkpoint

    path = tmp_path / "deep.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"mitk_format": FORMAT_VERSION, "task": "segment",
                                                          "plugin": "unet", "config": deep_json("labels")})
    with pytest.raises(CheckpointError, match="checkpoint metadata is nested too deeply to read"):
        load_checkpoint(path)
    code, _, stderr = invoke(["segment", str(path), "--weights", str(path), "-d", str(tmp_path / "out")])
    assert code == 1 and stderr.splitlines()[-1] == (
        f"mitk: error: {path}: checkpoint metadata is nested too deeply to read")


def test_manifest_merge_skips_a_deeply_nested_line_as_damaged(tmp_path: Path) -> None:
    manifest = tmp_path / "shard0.jsonl"
    header = {"mitk_manifest": 1, "task": "segment", "shard": 0, "shards": 1, "by": "hash", "total": 2,
              "inputs": ["a", "b"]}
    records = [{"input": name, "output": f"{name}_seg.nii.gz", "status": "ok", "error": None, "seconds": 0.1,
                "shard": 0} for name in ("a", "b")]
    manifest.write_text("\n".join([json.dumps(header), json.dumps(records[0]), deep_json("input"),
                                   json.dumps(records[1])]) + "\n")
    code, stdout, stderr = invoke(["manifest", "merge", str(manifest), "--json"])
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["damaged_lines"] == [f"{manifest}:3"] and report["summary"]["ok"] == 2
    assert "1 damaged line(s) skipped" in stderr and "internal error" not in stderr


@pytest.mark.parametrize(("task", "plugin"), [("segment", "unet"), ("classify", "densenet121")])
def test_a_deeply_nested_datalist_is_refused_by_name(task: str, plugin: str, tmp_path: Path) -> None:
    datalist = tmp_path / "dataset.json"
    datalist.write_text(deep_json("training"))
    run = tmp_path / "run"
    code, _, stderr = invoke(["train", task, "--plugin", plugin, "--data", str(datalist), "--epochs", "1",
                              "-d", str(run)])
    assert code == 1 and stderr.splitlines()[0] == (
        f"mitk: error: {datalist}: not a readable datalist JSON (nested too deeply)")
    assert not run.exists()
