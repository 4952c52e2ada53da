"""Reading a 512×512×300 int16 CT DICOM series: mitk vs SimpleITK ImageSeriesReader vs MONAI PydicomReader.

The series is written from real anatomy (the lung1 CT from ../shared/data, its 48 slices interpolated to
300) into a temporary folder. Each contender runs in its own subprocess (best of 3, interleaved so that
machine load hits all alike); the timed part includes finding the series in the folder, and peak RSS
is reported both absolute and above the process's RSS before reading. Results go to
``benchmarks/results/dicom_read.json``. Run: ``python benchmarks/bench_dicom_read.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import SHARED, save, table

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (512, 512, 300)
CONTENDERS = {
    "mitk read_dicom": ("from mitk.io.dicom import read_dicom",
                        "a = read_dicom(PATH).array"),
    "SimpleITK ImageSeriesReader": (
        "import SimpleITK as sitk",
        "names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(PATH)\n"
        "reader = sitk.ImageSeriesReader(); reader.SetFileNames(names)\n"
        "image = reader.Execute(); a = sitk.GetArrayViewFromImage(image)"),
    "MONAI LoadImage(PydicomReader)": (
        "from monai.data import PydicomReader\nfrom monai.transforms import LoadImage",
        "a = LoadImage(reader=PydicomReader(), image_only=True)(PATH)"),
}
CHILD = """
import time
{imports}


def memory_kib(field):
    # VmHWM (peak) and VmRSS belong to this process's own address space; ru_maxrss would inherit the
    # parent's high-water mark across fork+exec on Linux.
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


PATH = {path!r}
base = memory_kib('VmRSS')
t0 = time.perf_counter()
{read}
seconds = time.perf_counter() - t0
peak = memory_kib('VmHWM')
print('SECONDS=%f' % seconds)
print('BASE_KB=%d' % base)
print('PEAK_KB=%d' % peak)
print('SHAPE=%s' % (tuple(a.shape),))
"""


def make_series(directory: Path) -> Path:
    """Write the 512×512×300 CT series (int16 stored values, RescaleIntercept -1024) into ``directory``."""
    sys.path.insert(0, str(ROOT / "tests"))
    import nibabel as nib
    import numpy as np
    from dicom_factory import write_series
    from scipy.ndimage import zoom

    source = SHARED / "pyradiomics" / "lung1_image.nii.gz"
    if source.exists():
        image: Any = nib.load(source)
        array = np.asarray(image.dataobj).astype(np.float32)
        array = np.rint(zoom(array, (1, 1, SHAPE[2] / array.shape[2]), order=1)).astype(np.int16)
        affine = image.affine.copy()
        affine[:3, 2] *= image.shape[2] / SHAPE[2]
    else:  # no shared data: the MNI template, resampled to the same size
        from nilearn.datasets import load_mni152_template

        template = load_mni152_template(resolution=1)
        data = np.asarray(template.dataobj, dtype=np.float32)
        array = np.rint(zoom(data, [n / s for n, s in zip(SHAPE, data.shape, strict=True)], order=1) * 4 - 1024)
        array = array.astype(np.int16)
        affine = template.affine @ np.diag([*(s / n for n, s in zip(SHAPE, data.shape, strict=True)), 1.0])
    series = directory / "ct_series"
    write_series(array, affine, series, modality="CT", description="benchmark CT")
    return series


def run_once(name: str, series: Path) -> dict[str, float]:
    imports, read = CONTENDERS[name]
    code = CHILD.format(imports=imports, path=str(series), read=read)
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    if completed.returncode != 0:
        raise RuntimeError(f"{name} failed: {completed.stderr[-2000:]}")
    values = dict(line.split("=", 1) for line in completed.stdout.splitlines() if "=" in line)
    return {"seconds": float(values["SECONDS"]), "base_mib": int(values["BASE_KB"]) / 1024,
            "peak_mib": int(values["PEAK_KB"]) / 1024}


def main(repeats: int = 3) -> None:
    volume_mib = SHAPE[0] * SHAPE[1] * SHAPE[2] * 2 / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        # Written by a child process, so that this one stays small while the readers run.
        subprocess.run([sys.executable, __file__, "--write", tmp], check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        series = Path(tmp) / "ct_series"
        print(f"wrote {SHAPE[2]} files in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
        for _ in range(repeats):  # interleaved, so that changing machine load hits every reader alike
            for name in CONTENDERS:
                runs[name].append(run_once(name, series))
    rows: list[dict[str, Any]] = []
    for name, results in runs.items():
        times = sorted(r["seconds"] for r in results)
        peak = max(r["peak_mib"] for r in results)
        above = max(r["peak_mib"] - r["base_mib"] for r in results)
        rows.append({"reader": name, "best_s": round(times[0], 3), "median_s": round(times[len(times) // 2], 3),
                     "peak_rss_mib": round(peak, 1), "rss_above_start_mib": round(above, 1),
                     "rss_above_start_vs_volume": round(above / volume_mib, 2)})
    reference = next(r for r in rows if r["reader"].startswith("SimpleITK"))
    for row in rows:
        row["time_vs_simpleitk"] = round(row["best_s"] / reference["best_s"], 2)
    columns = ["reader", "best_s", "median_s", "time_vs_simpleitk", "peak_rss_mib", "rss_above_start_mib",
               "rss_above_start_vs_volume"]
    print(table(rows, columns))
    path = save("dicom_read", {"series": f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} int16 CT, one file per slice, "
                                         "explicit VR little endian (lung1 CT interpolated)",
                               "volume_mib": round(volume_mib, 1), "repeats": repeats, "rows": rows})
    print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        make_series(Path(sys.argv[2]))
    else:
        main()
