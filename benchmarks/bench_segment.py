"""End-to-end segmentation: `mitk segment` vs the plain MONAI script doing the same job, same weights.

Plain script: LoadImaged → EnsureChannelFirstd → Orientationd(RAS) → intensity → sliding_window_inference
(roi 96³, overlap 0.25, gaussian, sw_batch_size 4) → Invertd → argmax → SaveImaged.
mitk: the `unet` plugin with the same settings, run through the CLI's code path (malloc settings → load_model →
runner → writer).
Both use a 4.8 M-parameter MONAI UNet with identical (randomly initialised, saved) weights. The plain script
uses sw_batch_size 4 (the MONAI tutorials' value); mitk uses its default "auto" (2 on this 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _harness import SHARED, run_interleaved, save, table
from bench_nifti_read import make_volume

SETTINGS = {"spacing": "keep", "orientation": "RAS", "patch_size": [96, 96, 96], "overlap": 0.25,
            "mode": "gaussian", "labels": {"0": "background", "1": "foreground"}}

PLAIN = """
import time, numpy as np, torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from monai.transforms import (AsDiscreted, Compose, EnsureChannelFirstd, Invertd, LoadImaged,
                              NormalizeIntensityd, Orientationd, SaveImaged, ScaleIntensityRanged)
from safetensors.torch import load_file
t0 = time.perf_counter()
net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256),
           strides=(2, 2, 2, 2), num_res_units=2, norm="instance")
net.load_state_dict(load_file(CKPT)); net.eval()
intensity = (ScaleIntensityRanged("image", a_min=-1000, a_max=1000, b_min=0, b_max=1, clip=True) if MODE == "ct"
             else NormalizeIntensityd("image", nonzero=True, channel_wise=True))
pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="RAS"), intensity])
data = pre({"image": PATH})
with torch.no_grad():
    data["pred"] = sliding_window_inference(data["image"][None], (96, 96, 96), 4, net, overlap=0.25,
                                            mode="gaussian")[0]
post = Compose([Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False),
                AsDiscreted("pred", argmax=True),
                SaveImaged("pred", output_dir=OUT, output_postfix="seg", separate_folder=False,
                           output_dtype=np.uint8, resample=False)])
post(data)
print("SECONDS=%f" % (time.perf_counter() - t0))
"""

MITK = """
import time, json
from pathlib import Path
import torch, monai  # imported before the clock starts, as in the plain script
from mitk.io.inputs import Case
from mitk.runner.allocator import keep_freed_memory
from mitk.runner.model import load_model
from mitk.runner.outputs import OutputPolicy
from mitk.tasks.segment.runner import make_segment_job
t0 = time.perf_counter()
keep_freed_memory()  # as the CLI does before loading a model
settings = json.loads(SETTINGS); settings["intensity"] = {"mode": MODE, "a_min": -1000, "a_max": 1000}
model = load_model("segment", None, CKPT, settings, "cpu")
job = make_segment_job(model, OutputPolicy(output=Path(OUT) / "mitk_seg.nii.gz", overwrite=True))
job(Case(Path(PATH)))
print("SECONDS=%f" % (time.perf_counter() - t0))
"""


def make_mr_volume(directory: Path) -> Path:
    """256×256×160 MR from the real MNI152 T1 template (nilearn), interpolated; else brain1 from shared data."""
    import nibabel as nib
    import numpy as np
    from scipy.ndimage import zoom

    try:
        from nilearn.datasets import load_mni152_template

        image = load_mni152_template(resolution=1)
        array = np.asanyarray(image.dataobj, dtype=np.float32)
        affine = image.affine.copy()
    except ImportError:
        image = nib.load(SHARED / "pyradiomics" / "brain1_image.nii.gz")
        array, affine = np.asanyarray(image.dataobj, dtype=np.float32), image.affine.copy()
    factors = [t / s for t, s in zip((256, 256, 160), array.shape, strict=True)]
    array = zoom(array, factors, order=1)
    affine[:3, :3] = affine[:3, :3] @ np.diag([1 / f for f in factors])
    path = directory / "mr_256x256x160.nii.gz"
    nib.save(nib.Nifti1Image((array * 1000 / max(array.max(), 1)).astype(np.int16), affine), path)
    return path


def make_checkpoint(directory: Path) -> Path:
    import torch

    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    config = plugin.resolve_config(SETTINGS)
    torch.manual_seed(0)
    network = plugin.network(config)
    parameters = sum(p.numel() for p in network.parameters())
    print(f"UNet parameters: {parameters / 1e6:.2f} M")
    return save_checkpoint(directory / "unet.safetensors", network.state_dict(), task="segment", plugin="unet",
                           plugin_version=None, config=config)


def make_mr_1mm(directory: Path) -> Path:
    """The real MNI152 T1 template at its own 1 mm grid (197×233×189, nilearn), as an int16 brain MR."""
    import nibabel as nib
    import numpy as np
    from nilearn.datasets import load_mni152_template

    image = load_mni152_template(resolution=1)
    array = np.asanyarray(image.dataobj, dtype=np.float32)
    path = directory / "mr_1mm.nii.gz"
    nib.save(nib.Nifti1Image((array * 1000 / max(array.max(), 1)).astype(np.int16), image.affine), path)
    return path


PLAIN_NAME = "plain MONAI script (python -c)"


def whole_process(repeats: int, name: str = "segment_whole_process") -> None:
    """Cold whole process on a 1 mm brain MR: `mitk segment` (a fresh Python: start-up, imports, reading,
    inference, writing) against `python -c` of the plain MONAI script (its imports inside the clock too), and
    `mitk segment` with MITK_TORCH_INFERENCE=0 (MONAI's UNet, transforms and inferer: MONAI imported)."""
    import os
    import statistics
    import subprocess
    import sys
    import time

    load_before = os.getloadavg()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "plugins"),
                                                        os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        checkpoint, path = make_checkpoint(directory), make_mr_1mm(directory)
        values = (f"PATH = {str(path)!r}\nCKPT = {str(checkpoint)!r}\nOUT = {str(directory)!r}\nMODE = 'mr'\n")
        cli = [sys.executable, "-m", "mitk", "segment", str(path), "--weights", str(checkpoint), "--set",
               "intensity.mode=mr", "--device", "cpu", "--overwrite", "-o"]
        contenders: dict[str, tuple[list[str], dict[str, str]]] = {
            PLAIN_NAME: ([sys.executable, "-c", values + PLAIN], {}),
            "mitk segment (CLI)": ([*cli, str(directory / "cli_seg.nii.gz")], {}),
            "mitk segment (CLI), MITK_TORCH_INFERENCE=0": ([*cli, str(directory / "cli_monai_seg.nii.gz")],
                                                          {"MITK_TORCH_INFERENCE": "0"}),
        }
        times: dict[str, list[float]] = {contender: [] for contender in contenders}
        cpu: dict[str, list[float]] = {contender: [] for contender in contenders}
        for _ in range(repeats):
            for contender, (command, extra) in contenders.items():
                used = _children_cpu()
                started = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, env={**env, **extra})
                times[contender].append(time.perf_counter() - started)
                cpu[contender].append(_children_cpu() - used)
        same = _same_labels(directory / "cli_seg.nii.gz", directory / "cli_monai_seg.nii.gz")
    plain = times[PLAIN_NAME]
    rows = [{"volume": "197×233×189 MR 1 mm (MNI152 T1)", "contender": contender, "best_s": round(min(v), 2),
             "median_s": round(statistics.median(v), 2), "runs_s": [round(t, 2) for t in v],
             "best_ratio": round(min(v) / min(plain), 2),
             "median_ratio": round(statistics.median(v) / statistics.median(plain), 2),
             "cpu_median_s": round(statistics.median(cpu[contender]), 2),
             "cpu_median_ratio": round(statistics.median(cpu[contender]) / statistics.median(cpu[PLAIN_NAME]), 2)}
            for contender, v in times.items()]
    load = {"before": [round(v, 1) for v in load_before], "after": [round(v, 1) for v in os.getloadavg()]}
    print(table(rows, list(rows[0])))
    print("load average (1, 5, 15 min) before", load["before"], "after", load["after"])
    print("label maps of the MONAI-free and the MONAI path identical:", same)
    save(name, {"network": "MONAI UNet (16,32,64,128,256), 2 res units, 4.8 M parameters",
                "settings": SETTINGS, "rows": rows, "load_average": load, "same_labels_as_monai_path": same})


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (less sensitive to load than wall time)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _same_labels(first: Path, second: Path) -> bool:
    import nibabel as nib
    import numpy as np

    a, b = nib.load(first), nib.load(second)
    return bool(np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)) and
                np.array_equal(a.affine, b.affine))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true", help="only the 256×256×160 case")
    parser.add_argument("--whole-process", action="store_true",
                        help="only the cold whole-process comparison on a 1 mm brain MR (imports in the clock)")
    parser.add_argument("--name", default="segment_whole_process",
                        help="--whole-process: results file name (benchmarks/results/NAME.json)")
    args = parser.parse_args()
    if args.whole_process:
        whole_process(args.repeats, args.name)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        checkpoint = make_checkpoint(directory)
        volumes = [("256×256×160 MR", make_mr_volume(directory), "mr")]
        if not args.skip_large:
            volumes.append(("512×512×300 CT", make_volume(directory), "ct"))
        for label, path, mode in volumes:
            values = (f"PATH = {str(path)!r}\nCKPT = {str(checkpoint)!r}\nOUT = {str(directory)!r}\n"
                      f"MODE = {mode!r}\nSETTINGS = {json.dumps(json.dumps(SETTINGS))}\n")
            contenders: dict[str, tuple[str, dict[str, str] | None]] = {
                "plain MONAI script": (values + PLAIN, None), "mitk segment": (values + MITK, None)}
            if mode == "mr":  # what the CPU kernel rewrites contribute, end to end
                contenders["mitk segment, MITK_CPU_KERNELS=0"] = (values + MITK, {"MITK_CPU_KERNELS": "0"})
            results = run_interleaved(contenders, repeats=args.repeats)
            plain = results["plain MONAI script"]
            for name, result in results.items():
                ratios = {} if result is plain else {
                    "time_ratio": round(result["best_s"] / plain["best_s"], 2),
                    "median_ratio": round(result["median_s"] / plain["median_s"], 2),
                    "rss_ratio": round(result["peak_rss_mib"] / plain["peak_rss_mib"], 2)}
                rows.append({"volume": label, "contender": name, **result, **ratios})
    print(table(rows, ["volume", "contender", "best_s", "median_s", "peak_rss_mib", "time_ratio", "median_ratio",
                       "rss_ratio"]))
    save("segment", {"network": "MONAI UNet (16,32,64,128,256), 2 res units, 4.8 M parameters",
                     "settings": SETTINGS, "rows": rows})


if __name__ == "__main__":
    main()
