"""Classification end to end: `mitk classify` vs a plain MONAI script doing the same job, same network and weights.

Inputs are real anatomy: 2-D axial slices (256², NIfTI) and volumes (64³, NIfTI) cut from nilearn's MNI152 T1
template by `mitk sample classify`. Each run classifies every input and writes one CSV row per input (input,
predicted class, probability per class).

Plain script: LoadImage → EnsureChannelFirst (→ SqueezeDim for slices) → Resize(image_size, "area") →
NormalizeIntensity(channel_wise) → network under no_grad → softmax → CSV.
mitk: the same plugin settings through the CLI's code path (load_model → make_classify_job per case → CSV).
Both are timed from after the imports to the written CSV, in fresh processes taking turns (A B A B …).

Also measured in one process: mitk's per-image overhead after the model is loaded — the time of the whole job
for one 256² slice (read, preprocess, network, record) minus the network's own forward pass on that input.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _harness import run_interleaved, save, table

PLAIN = """
import csv, time, torch
from monai.networks.nets import DenseNet, ResNet
from monai.transforms import (Compose, EnsureChannelFirst, LoadImage, NormalizeIntensity, Resize, SqueezeDim)
from safetensors.torch import load_file
torch.set_num_threads(THREADS)
t0 = time.perf_counter()
if KIND == "densenet":
    net = DenseNet(spatial_dims=DIMS, in_channels=1, out_channels=len(CLASSES), init_features=64, growth_rate=32,
                   block_config=(6, 12, 24, 16))
else:
    net = ResNet(block="basic", layers=[2, 2, 2, 2], block_inplanes=[64, 128, 256, 512], spatial_dims=DIMS,
                 n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, num_classes=len(CLASSES))
net.load_state_dict(load_file(CKPT)); net.eval()
steps = [LoadImage(image_only=True), EnsureChannelFirst()]
if DIMS == 2:
    steps.append(SqueezeDim(dim=-1))
pre = Compose(steps + [Resize(SIZE, mode="area"), NormalizeIntensity(channel_wise=True)])
rows = []
with torch.no_grad():
    for path in PATHS:
        probabilities = torch.softmax(net(pre(path)[None]), dim=1)[0].tolist()
        rows.append([path, CLASSES[max(range(len(CLASSES)), key=probabilities.__getitem__)], *probabilities])
with open(OUT + "/plain.csv", "w", newline="") as handle:
    writer = csv.writer(handle); writer.writerow(["input", "predicted", *("prob_" + c for c in CLASSES)])
    writer.writerows(rows)
print("SECONDS=%f" % (time.perf_counter() - t0))
"""

MITK = """
import time
from pathlib import Path
import torch, monai  # imported before the clock starts, as in the plain script
from mitk.cli.classify import _write_csv
from mitk.io.inputs import Case
from mitk.runner.allocator import keep_freed_memory
from mitk.tasks.classify.runner import make_classify_job
from mitk.runner.model import load_model
from mitk.runner.outputs import OutputPolicy
torch.set_num_threads(THREADS)
t0 = time.perf_counter()
keep_freed_memory()  # as the CLI does before loading a model
model = load_model("classify", None, CKPT, None, "cpu")
rows = []
def collect(case, details):
    rows.append({"input": str(case.path), "predicted": details["predicted"],
                 **{"prob_" + name: p for name, p in details["probabilities"].items()}})
job = make_classify_job(model, OutputPolicy(), on_result=collect)
for path in PATHS:
    job(Case(Path(path)))
_write_csv(rows, Path(OUT) / "mitk.csv", overwrite=True)
print("SECONDS=%f" % (time.perf_counter() - t0))
"""


def make_inputs(directory: Path, images: int, volumes: int) -> tuple[list[str], list[str]]:
    from mitk.sample import make_classification_sample

    make_classification_sample(directory / "slices", cases=max(images, 9), size=256, seed=0, dims=2)
    make_classification_sample(directory / "volumes", cases=max(volumes, 6), size=64, seed=0, dims=3)
    slices = sorted(str(p) for p in (directory / "slices" / "images").iterdir())[:images]
    cubes = sorted(str(p) for p in (directory / "volumes" / "images").iterdir())[:volumes]
    return slices, cubes


def make_checkpoint(directory: Path, plugin_name: str, dims: int, classes: list[str], size: list[int]) -> Path:
    import torch

    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get(plugin_name, "classify").load()
    config = plugin.resolve_config({"class_names": classes, "spatial_dims": dims, "in_channels": 1,
                                    "image_size": size})
    torch.manual_seed(0)
    network = plugin.network(config)
    return save_checkpoint(directory / f"{plugin_name}_{dims}d.safetensors", network.state_dict(), task="classify",
                           plugin=plugin_name, plugin_version=None, config=config)


def overhead(checkpoint: Path, paths: list[str], threads: int) -> dict[str, float]:
    """mitk's per-image cost besides the network (ms): the whole job (read, preprocess, record) with the network
    swapped for one that returns fixed logits, and, for scale, the network's own forward pass."""
    import torch

    from mitk.io.inputs import Case
    from mitk.io.reader import load_image
    from mitk.runner.model import load_model
    from mitk.runner.outputs import OutputPolicy
    from mitk.tasks.classify.runner import ClassificationRunner, make_classify_job

    class FixedLogits(torch.nn.Module):
        def __init__(self, classes: int) -> None:
            super().__init__()
            self.logits = torch.linspace(-1.0, 1.0, classes)[None]

        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            return self.logits.expand(batch.shape[0], -1)

    torch.set_num_threads(threads)
    model = load_model("classify", None, checkpoint, None, "cpu")
    network = model.network
    assert network is not None
    batch = ClassificationRunner(model).prepare(load_image(paths[0])).as_tensor()[None]
    with torch.inference_mode():
        classes = int(network(batch).shape[1])
        times = []
        for _ in range(10):
            started = time.perf_counter()
            network(batch)
            times.append(time.perf_counter() - started)
    model.network = FixedLogits(classes)
    job = make_classify_job(model, OutputPolicy())
    for path in paths[:3]:
        job(Case(Path(path)))
    per_image = []
    for path in paths:
        started = time.perf_counter()
        job(Case(Path(path)))
        per_image.append(time.perf_counter() - started)
    return {"overhead_ms_median": round(sorted(per_image)[len(per_image) // 2] * 1000, 1),
            "overhead_ms_mean": round(sum(per_image) / len(per_image) * 1000, 1),
            "network_ms_median": round(sorted(times)[len(times) // 2] * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--volumes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every contender")
    parser.add_argument("--plugin", default="densenet121", choices=["densenet121", "resnet"])
    args = parser.parse_args()
    kind = "densenet" if args.plugin == "densenet121" else "resnet"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        slices, cubes = make_inputs(directory, args.images, args.volumes)
        jobs = [(f"{len(slices)} slices 256² → 224²", slices, 2, ["cerebellum", "ventricles", "vertex"],
                 [224, 224]),
                (f"{len(cubes)} volumes 64³ → 64³", cubes, 3, ["normal", "lesion"], [64, 64, 64])]
        costs = {}
        for label, paths, dims, classes, size in jobs:
            if not paths:
                continue
            checkpoint = make_checkpoint(directory, args.plugin, dims, classes, size)
            values = (f"PATHS = {json.dumps(paths)}\nCKPT = {str(checkpoint)!r}\nOUT = {str(directory)!r}\n"
                      f"CLASSES = {json.dumps(classes)}\nDIMS = {dims}\nSIZE = {tuple(size)!r}\n"
                      f"KIND = {kind!r}\nTHREADS = {args.threads}\n")
            contenders: dict[str, tuple[str, dict[str, str] | None]] = {
                "plain MONAI script": (values + PLAIN, None), "mitk classify": (values + MITK, None)}
            results = run_interleaved(contenders, repeats=args.repeats)
            plain = results["plain MONAI script"]
            for name, result in results.items():
                ratios = {} if result is plain else {
                    "time_ratio": round(result["best_s"] / plain["best_s"], 2),
                    "median_ratio": round(result["median_s"] / plain["median_s"], 2)}
                rows.append({"inputs": label, "contender": name, **result, **ratios})
            import csv

            mine = list(csv.DictReader((directory / "mitk.csv").open()))
            theirs = list(csv.DictReader((directory / "plain.csv").open()))
            differences = [abs(float(a[f"prob_{c}"]) - float(b[f"prob_{c}"]))
                           for a, b in zip(mine, theirs, strict=True) for c in classes]
            costs[label] = {"max_probability_difference": max(differences),
                            "same_predictions": all(a["predicted"] == b["predicted"]
                                                    for a, b in zip(mine, theirs, strict=True))}
            if dims == 2:
                costs[label].update(overhead(checkpoint, paths[:20], args.threads))
    print(table(rows, ["inputs", "contender", "best_s", "median_s", "peak_rss_mib", "time_ratio", "median_ratio"]))
    print(json.dumps(costs, indent=2))
    save("classify", {"network": args.plugin, "threads": args.threads, "rows": rows, "agreement_and_overhead": costs})


if __name__ == "__main__":
    main()
