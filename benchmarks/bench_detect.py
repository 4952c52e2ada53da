"""Detection on a 512×512×300 CT (the real lung1 scan, interpolated along z).

``retinanet``: `mitk detect --plugin retinanet --weights` (the CLI's code path: malloc settings → load_model →
runner → JSON with voxel and world boxes) vs a plain MONAI script doing the same job with the same weights:
LoadImaged → EnsureChannelFirstd → Spacingd(4 mm) → ScaleIntensityRangePercentilesd → RetinaNetDetector (sliding
window when the grid exceeds the 64³ patch) → boxes to world mm through the resampled image's affine → JSON.
torchvision does not import beside the pinned CPU torch, so the plain script builds the detector with the same
torchvision-free ResNet-FPN extractor as the plugin (MONAI's ``resnet_fpn_feature_extractor`` needs torchvision).

``blob``: `mitk detect --plugin blob` with its default settings, limited to 2 threads.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _harness import run_child, run_interleaved, save, table
from bench_nifti_read import make_volume

PLAIN = """
import time, json, numpy as np, torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityRangePercentilesd, Spacingd
from safetensors.torch import load_file
from mitk_builtin._detect_retinanet import build_detector
t0 = time.perf_counter()
config = json.loads(CONFIG)
detector = build_detector(config)
detector.load_state_dict(load_file(CKPT)); detector.eval()
pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Spacingd("image", pixdim=(4.0, 4.0, 4.0)),
               ScaleIntensityRangePercentilesd("image", lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True)])
image = pre({"image": PATH})["image"]
with torch.no_grad():
    [out] = detector([image.as_tensor()], use_inferer=any(n > 64 for n in image.shape[1:]))
affine = np.asarray(image.affine, dtype=float)
boxes = out["box"].numpy()
corners = [boxes[:, [a, b, c]] for a in (0, 3) for b in (1, 4) for c in (2, 5)]
world = np.stack([c @ affine[:3, :3].T + affine[:3, 3] for c in corners])
records = [{"box_world_mm": np.concatenate([w.min(0), w.max(0)]).tolist(), "score": float(s)}
           for w, s in zip(world.transpose(1, 0, 2), out["label_scores"].numpy())]
open(OUT + "/plain.json", "w").write(json.dumps(records))
print("SECONDS=%f" % (time.perf_counter() - t0))
"""

MITK = """
import time
from pathlib import Path
import torch, monai  # imported before the clock starts, as in the plain script
from mitk.io.inputs import Case
from mitk.runner.allocator import keep_freed_memory
from mitk.tasks.detect.runner import make_detect_job
from mitk.runner.model import load_model
from mitk.runner.outputs import OutputPolicy
t0 = time.perf_counter()
keep_freed_memory()
model = load_model("detect", PLUGIN, CKPT or None, {}, "cpu")
job = make_detect_job(model, OutputPolicy(output=Path(OUT) / ("mitk_" + PLUGIN + ".json"), overwrite=True))
job(Case(Path(PATH)))
print("SECONDS=%f" % (time.perf_counter() - t0))
"""


def make_checkpoint(directory: Path) -> tuple[Path, dict]:
    import torch

    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("retinanet", "detect").load()
    config = plugin.resolve_config({})
    torch.manual_seed(0)
    network = plugin.network(config)
    print(f"RetinaNet parameters: {sum(p.numel() for p in network.parameters()) / 1e6:.2f} M")
    path = save_checkpoint(directory / "retinanet.safetensors", network.state_dict(), task="detect",
                           plugin="retinanet", plugin_version=None, config=config)
    return path, config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        checkpoint, config = make_checkpoint(directory)
        path = make_volume(directory)
        values = (f"PATH = {str(path)!r}\nOUT = {str(directory)!r}\nCONFIG = {json.dumps(json.dumps(config))}\n")
        results = run_interleaved({
            "plain MONAI script": (values + f"CKPT = {str(checkpoint)!r}\n" + PLAIN, None),
            "mitk detect --plugin retinanet": (values + f"CKPT = {str(checkpoint)!r}\nPLUGIN = 'retinanet'\n"
                                               + MITK, None)}, repeats=args.repeats)
        plain = results["plain MONAI script"]
        for name, result in results.items():
            ratios = {} if result is plain else {
                "time_ratio": round(result["best_s"] / plain["best_s"], 2),
                "median_ratio": round(result["median_s"] / plain["median_s"], 2),
                "rss_ratio": round(result["peak_rss_mib"] / plain["peak_rss_mib"], 2)}
            rows.append({"contender": name, **result, **ratios})
        blob = run_child(values + "CKPT = ''\nPLUGIN = 'blob'\nimport torch\ntorch.set_num_threads(2)\n" + MITK,
                         repeats=args.repeats, env={"OMP_NUM_THREADS": "2"})
        rows.append({"contender": "mitk detect --plugin blob (2 threads)", **blob})
    print(table(rows, ["contender", "best_s", "median_s", "peak_rss_mib", "time_ratio", "median_ratio", "rss_ratio"]))
    save("detect", {"volume": "512×512×300 CT (lung1, z interpolated)", "retinanet_config": config, "rows": rows})


if __name__ == "__main__":
    main()
