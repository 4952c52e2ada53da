"""A small finished batch of every task on real images (tests/data), for the report and replay tests.

``make_batch(root)`` runs the command line in this process: segment (two inputs and a damaged one), classify (a
seeded ResNet on a real MR slice, with Grad-CAM), detect and register, each with a manifest, and ``mitk evaluate
segment``; about 15 s of CPU.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from helpers import invoke

DATA = Path(__file__).parent / "data"


@dataclass
class Batch:
    root: Path
    out: Path
    """Every task's outputs and manifests (one folder, as a user would keep them)."""
    manifests: dict[str, Path]
    evaluation: Path
    inputs: dict[str, Path]


def classifier(path: Path) -> Path:
    """An untrained, seeded 2-D ResNet-18 checkpoint (two classes): real network, known weights."""
    import torch

    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("resnet", "classify").load()
    config = plugin.resolve_config({"class_names": ["normal", "lesion"], "spatial_dims": 2, "in_channels": 1,
                                    "image_size": [64, 64]})
    torch.manual_seed(0)
    return save_checkpoint(path, plugin.network(config).state_dict(), task="classify", plugin="resnet",
                           plugin_version="0", config=config)


def run(*arguments: object) -> None:
    code, _, stderr = invoke([str(a) for a in arguments])
    assert code in (0, 3), stderr


def shared_batch(base: Path) -> Batch:
    """The batch under ``base`` (a session's temporary folder), made by the first test module that asks."""
    root = base / "report_batch"
    if not (root / "done").exists():
        make_batch(root)
        (root / "done").write_text("")
    return batch_in(root)


def batch_in(root: Path) -> Batch:
    out = root / "out"
    inputs = root / "inputs"
    return Batch(root, out, {task: out / f"{task}.jsonl" for task in ("segment", "classify", "detect", "register")},
                 root / "evaluation", {"brain": DATA / "brain1_image.nii.gz", "lung": DATA / "lung1_image.nii.gz",
                                       "slice": inputs / "brain_slice.nii.gz", "moving": inputs / "brain_moved.nii.gz",
                                       "damaged": inputs / "damaged.nii.gz"})


def make_batch(root: Path) -> Batch:
    inputs = root / "inputs"
    inputs.mkdir(parents=True)
    brain, lung = DATA / "brain1_image.nii.gz", DATA / "lung1_image.nii.gz"
    image = nib.load(brain)
    volume = np.asanyarray(image.dataobj)
    slice_path = inputs / "brain_slice.nii.gz"
    nib.save(nib.Nifti1Image(volume[:, :, 12:13], image.affine, image.header), slice_path)
    moving = inputs / "brain_moved.nii.gz"
    nib.save(nib.Nifti1Image(np.roll(volume, 3, axis=0), image.affine, image.header), moving)
    damaged = inputs / "damaged.nii.gz"
    damaged.write_bytes(gzip.compress(brain.read_bytes()[:-1])[:4000])
    out = root / "out"
    out.mkdir()
    manifests = {task: out / f"{task}.jsonl" for task in ("segment", "classify", "detect", "register")}
    run("segment", brain, lung, damaged, "--plugin", "threshold", "--output-dir", out, "--stats",
        "--manifest", manifests["segment"])
    run("classify", slice_path, "--weights", classifier(root / "resnet.safetensors"), "--explain", "--output-dir",
        out, "--manifest", manifests["classify"])
    run("detect", brain, "--plugin", "blob", "--output-dir", out, "--manifest", manifests["detect"])
    run("register", brain, moving, "--plugin", "affine", "--set", "iterations=[20,10,5]", "--output-dir", out,
        "--manifest", manifests["register"])
    evaluation = root / "evaluation"
    evaluation.mkdir()
    run("evaluate", "segment", "--pred", out / "brain1_image_seg.nii.gz", "--ref", DATA / "brain1_label.nii.gz",
        "--csv", evaluation / "per_case.csv", "--summary-csv", evaluation / "summary.csv")
    boxes = out / "brain1_image_boxes.json"  # the blob boxes against themselves: a real FROC document, all hits
    code, stdout, stderr = invoke(["evaluate", "detect", "--pred", str(boxes), "--ref", str(boxes), "--json"])
    assert code == 0, stderr
    (evaluation / "detect.json").write_text(stdout)
    return batch_in(root)
