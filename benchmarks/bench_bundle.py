"""A MONAI bundle end to end: `mitk segment --weights BUNDLE` vs `python -m monai.bundle run`, whole processes.

The real spleen_ct_segmentation configs (tests/data/bundles) with weights from a seed, on copies of the real
lung1 CT (512×512×48, pyradiomics; the 128×128×48 test crop when the shared data is absent). Each contender is
one whole command (start-up, imports, model load, every case, writing), in turns (A B A B …); peak RSS is the
command's own (``RUSAGE_CHILDREN`` of a fresh parent per run). MONAI runs on the CPU without worker processes
(``--dataloader#num_workers 0``) and without AMP, as mitk does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _harness import SHARED, save, table, whole_process

ROOT = Path(__file__).resolve().parents[1]



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from bundle_factory import make_bundle

    source = SHARED / "pyradiomics" / "lung1_image.nii.gz"
    if not source.is_file():
        source = ROOT / "tests" / "data" / "lung1_image.nii.gz"
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        bundle = make_bundle("spleen_ct_segmentation", work)
        images = work / "data" / "imagesTs"
        images.mkdir(parents=True)
        for n in range(arguments.cases):
            shutil.copy(source, images / f"case{n}.nii.gz")
        contenders = {
            "mitk segment --weights BUNDLE": [sys.executable, "-m", "mitk", "segment", str(images), "--weights",
                                              str(bundle), "-d", str(work / "mitk"), "--overwrite"],
            "python -m monai.bundle run": [sys.executable, "-m", "monai.bundle", "run", "--config_file",
                                           str(bundle / "configs/inference.json"), "--bundle_root", str(bundle),
                                           "--dataset_dir", str(work / "data"), "--output_dir", str(work / "monai"),
                                           "--dataloader#num_workers", "0", "--evaluator#amp", "False"]}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        for _ in range(arguments.repeats):
            for name, command in contenders.items():
                runs[name].append(whole_process(command))
    rows = []
    reference = min(r["seconds"] for r in runs["python -m monai.bundle run"])
    reference_peak = max(r["peak_mib"] for r in runs["python -m monai.bundle run"])
    for name, results in runs.items():
        best = min(r["seconds"] for r in results)
        peak = max(r["peak_mib"] for r in results)
        rows.append({"command": name, "best_s": round(best, 2), "peak_rss_mib": round(peak),
                     "time_vs_monai": round(best / reference, 2), "memory_vs_monai": round(peak / reference_peak, 2)})
    print(table(rows, ["command", "best_s", "peak_rss_mib", "time_vs_monai", "memory_vs_monai"]))
    save("bundle", {"input": str(source.name), "cases": arguments.cases, "repeats": arguments.repeats,
                    "threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows})


if __name__ == "__main__":
    main()
