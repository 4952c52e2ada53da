"""`mitk convert` of a DICOM series to NIfTI against a SimpleITK read-and-write script, whole process.

Two CT series are written from real anatomy (the lung1 CT of ../shared/data, or of tests/data without it,
interpolated to 362×434×120 and to 512×512×300, one int16 file per slice, RescaleIntercept -1024). Each
contender is a fresh Python process timed end to end (start-up, imports, finding the series, reading, writing
a compressed .nii.gz), run alternately so that machine load hits both alike:

- ``mitk convert SERIES OUT.nii.gz`` (also writes the JSON sidecar);
- ``python -c`` SimpleITK: ``ImageSeriesReader.GetGDCMSeriesFileNames``, ``Execute``, ``WriteImage(OUT.nii.gz)``;

and the same two writing an uncompressed ``OUT.nii`` (compression is most of SimpleITK's time for .nii.gz: it
uses zlib, mitk uses ISA-L's igzip).

mitk's own modules are byte-compiled first (``compileall`` into the git-ignored ``__pycache__`` folders), as
``pip install`` does: this machine sets PYTHONDONTWRITEBYTECODE, so without it every call would compile mitk's
sources again (about 0.3 s), a cost no installed mitk pays. ``--no-compile`` skips that step.

A plain series like these is read without importing pydicom and written without importing nibabel (see
``mitk.io.dicom.native`` and ``mitk.io.nifti_plain``); after the timings, each of mitk's outputs is checked
against SimpleITK's (the same voxels, affines within 1e-4 mm) and the result recorded.

Best and median of ``--repeats`` runs, their ratio, and the load average go to ``benchmarks/results/convert.json``.
Run: ``python benchmarks/bench_convert.py [--repeats 5] [--sizes 362x434x120,512x512x300] [--suffixes .nii]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import SHARED, save, table

ROOT = Path(__file__).resolve().parents[1]
SIMPLEITK = ("import sys, SimpleITK as sitk\n"
             "reader = sitk.ImageSeriesReader()\n"
             "reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(sys.argv[1]))\n"
             "sitk.WriteImage(reader.Execute(), sys.argv[2])\n")


def make_series(shape: tuple[int, int, int], directory: Path) -> Path:
    """The lung1 CT interpolated to ``shape`` (linear), written as a DICOM series into ``directory``."""
    sys.path.insert(0, str(ROOT / "tests"))
    import nibabel as nib
    import numpy as np
    from dicom_factory import write_series
    from scipy.ndimage import zoom

    source = SHARED / "pyradiomics" / "lung1_image.nii.gz"
    image: Any = nib.load(source if source.exists() else ROOT / "tests" / "data" / "lung1_image.nii.gz")
    array = np.asarray(image.dataobj).astype(np.float32)
    factors = [n / s for n, s in zip(shape, array.shape, strict=True)]
    array = np.rint(zoom(array, factors, order=1)).astype(np.int16)
    affine = image.affine @ np.diag([*(1.0 / f for f in factors), 1.0])
    series = directory / "x".join(str(n) for n in shape)
    write_series(array, affine, series, modality="CT", description="benchmark CT")
    return series


def same_image(mitk_output: Path, simpleitk_output: Path) -> bool:
    """Whether two NIfTI files hold the same voxels on the same grid (affines within 1e-4 mm)."""
    import nibabel as nib
    import numpy as np

    ours: Any = nib.load(mitk_output)
    theirs: Any = nib.load(simpleitk_output)
    return bool(ours.shape == theirs.shape and np.allclose(ours.affine, theirs.affine, atol=1e-4)
                and np.array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj)))


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="362x434x120,512x512x300")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--suffixes", default=".nii.gz,.nii", help="output formats, each measured for both")
    args = parser.parse_args()
    if not args.no_compile:
        import compileall

        for folder in ("mitk", "plugins"):
            compileall.compile_dir(ROOT / folder, quiet=1)
    shapes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for shape in shapes:
            subprocess.run([sys.executable, __file__, "--write", "x".join(map(str, shape)), tmp], check=True)
            series = directory / "x".join(str(n) for n in shape)
            contenders = {}
            for suffix in args.suffixes.split(","):
                contenders[f"mitk convert → {suffix}"] = [
                    sys.executable, "-m", "mitk", "convert", str(series), str(directory / f"mitk{suffix}"),
                    "--overwrite"]
                contenders[f"SimpleITK script → {suffix}"] = [sys.executable, "-c", SIMPLEITK, str(series),
                                                              str(directory / f"sitk{suffix}")]
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(args.repeats):
                for name, command in contenders.items():
                    times[name].append(timed(command))
            for name, values in times.items():
                suffix = name.split(" → ")[1]
                reference = times["SimpleITK script → " + suffix]
                same = same_image(directory / f"mitk{suffix}", directory / f"sitk{suffix}") \
                    if name.startswith("mitk") else None
                rows.append({"series": "×".join(map(str, shape)), "contender": name,
                             "best_s": round(min(values), 2), "median_s": round(statistics.median(values), 2),
                             "best_vs_simpleitk": round(min(values) / min(reference), 2),
                             "median_vs_simpleitk": round(statistics.median(values) / statistics.median(reference),
                                                          2), "same_as_simpleitk": same})
    load = {"before": [round(v, 1) for v in load_before], "after": [round(v, 1) for v in os.getloadavg()]}
    print(table(rows, list(rows[0])))
    print("load average (1, 5, 15 min) before", load["before"], "after", load["after"])
    save("convert", {"rows": rows, "repeats": args.repeats, "load_average": load})


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--write":
        make_series(tuple(int(n) for n in sys.argv[2].split("x")), Path(sys.argv[3]))  # type: ignore[arg-type]
    else:
        main()
