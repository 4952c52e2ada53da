"""Reading the real lung1 CT (512×512×48 int16) as compressed NRRD and as MetaImage: mitk vs SimpleITK (same run).

mitk reads these formats through SimpleITK, so this measures what mitk adds: the copy out of the ITK image, the
LPS → RAS affine and the axis reversal (a view). Both sides touch every voxel once (a sum).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _harness import SHARED, run_interleaved, save, table

CONTENDERS = {  # (imports, timed body): start-up is bench_startup.py's business
    "mitk load_image": ("import SimpleITK\nfrom mitk.io.reader import load_image",
                        "image = load_image(PATH); a = image.array; a.sum()"),
    "SimpleITK": ("import SimpleITK as sitk",
                  "img = sitk.ReadImage(PATH); a = sitk.GetArrayViewFromImage(img); a.sum()"),
}


def main() -> None:
    import SimpleITK as sitk

    source = SHARED / "pyradiomics" / "lung1_image.nii.gz"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image = sitk.ReadImage(str(source))
        for key in image.GetMetaDataKeys():  # NIfTI header fields that MetaImage cannot hold
            image.EraseMetaData(key)
        for suffix in (".nrrd", ".mha"):
            path = Path(tmp) / f"lung1{suffix}"
            sitk.WriteImage(image, str(path), True)
            codes = {name: ((f"import time\n{imports}\nPATH = {str(path)!r}\nt0 = time.perf_counter()\n{body}\n"
                             "print('SECONDS=%f' % (time.perf_counter() - t0))"), None)
                     for name, (imports, body) in CONTENDERS.items()}
            for name, summary in run_interleaved(codes, repeats=5).items():
                rows.append({"format": suffix, "reader": name, **summary})
    for row in rows:
        reference = next(r for r in rows if r["format"] == row["format"] and r["reader"] == "SimpleITK")
        row["time_vs_simpleitk"] = round(row["best_s"] / reference["best_s"], 2)
    print(table(rows, ["format", "reader", "best_s", "median_s", "peak_rss_mib", "time_vs_simpleitk"]))
    save("itk_read", {"volume": "lung1 CT 512x512x48 int16, compressed .nrrd / .mha", "rows": rows})


if __name__ == "__main__":
    main()
