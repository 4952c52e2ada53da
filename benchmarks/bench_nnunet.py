"""An nnU-Net v2 model folder end to end: `mitk segment --weights FOLDER` vs nnU-Net's predictor, whole processes.

The committed tiny model (tests/data/nnunet: two folds made by nnU-Net's own planner and trainer) on copies of the
real lung1 CT crop (128×128×48, pyradiomics, BSD-3): default settings on both sides (both folds, mirroring,
``tile_step_size`` 0.5), CPU. nnU-Net's side is ``tests/nnunet_reference.py``: ``nnUNetPredictor``'s
``initialize_from_trained_model_folder`` + ``predict_from_files_sequential``, what
``nnUNetv2_predict_from_modelfolder`` runs (the command itself fails to import here: torchvision's compiled
operators do not match the pinned CPU torch, see the script). Each contender is one whole command (start-up,
imports, model load, every case, writing), in turns (A B A B …); peak RSS is the command's own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _harness import save, table, whole_process

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "data" / "nnunet" / "Dataset990_LungCrop" / "nnUNetTrainer_1epoch__nnUNetPlans__3d_fullres"
SOURCE = ROOT / "tests" / "data" / "lung1_image.nii.gz"
NNUNET = "nnUNetPredictor (nnUNetv2_predict_from_modelfolder)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        images = work / "images"
        images.mkdir()
        for n in range(arguments.cases):
            shutil.copy(SOURCE, images / f"case{n}.nii.gz")
        contenders = {
            "mitk segment --weights FOLDER": [sys.executable, "-m", "mitk", "segment", str(images), "--weights",
                                              str(MODEL), "-d", str(work / "mitk"), "--overwrite", "--device", "cpu"],
            NNUNET: [sys.executable, str(ROOT / "tests" / "nnunet_reference.py"), str(MODEL), str(work / "nnunet"),
                     *map(str, sorted(images.iterdir()))]}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        for _ in range(arguments.repeats):
            for name, command in contenders.items():
                runs[name].append(whole_process(command))
    rows = []
    reference = min(r["seconds"] for r in runs[NNUNET])
    reference_peak = max(r["peak_mib"] for r in runs[NNUNET])
    for name, results in runs.items():
        best = min(r["seconds"] for r in results)
        peak = max(r["peak_mib"] for r in results)
        rows.append({"command": name, "best_s": round(best, 2), "peak_rss_mib": round(peak),
                     "time_vs_nnunet": round(best / reference, 2),
                     "memory_vs_nnunet": round(peak / reference_peak, 2)})
    print(table(rows, ["command", "best_s", "peak_rss_mib", "time_vs_nnunet", "memory_vs_nnunet"]))
    save("nnunet", {"input": SOURCE.name, "cases": arguments.cases, "repeats": arguments.repeats,
                    "threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows})


if __name__ == "__main__":
    main()
