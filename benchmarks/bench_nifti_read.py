"""Reading a 512×512×300 int16 CT .nii.gz: mitk vs nibabel vs SimpleITK vs MONAI LoadImage (same run)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from _harness import SHARED, run_child, save, table

CONTENDERS = {
    "mitk read_nifti": "from mitk.io.nifti import read_nifti\nimage = read_nifti(PATH); a = image.array; a.sum()",
    "nibabel": "import nibabel as nib, numpy as np\nimg = nib.load(PATH); a = np.asanyarray(img.dataobj); a.sum()",
    "SimpleITK": "import SimpleITK as sitk\nimg = sitk.ReadImage(PATH); a = sitk.GetArrayViewFromImage(img); a.sum()",
    "MONAI LoadImage": "from monai.transforms import LoadImage\na = LoadImage(image_only=True)(PATH); a.sum()",
}


def make_volume(directory: Path) -> Path:
    """A 512×512×300 CT built from the real lung1 scan (its 48 slices interpolated along z)."""
    import nibabel as nib
    import numpy as np
    from scipy.ndimage import zoom

    source = SHARED / "pyradiomics" / "lung1_image.nii.gz"
    if source.exists():
        image = nib.load(source)
        array = np.asanyarray(image.dataobj).astype(np.float32)
        array = zoom(array, (1, 1, 300 / array.shape[2]), order=1).astype(np.int16)
        affine = image.affine.copy()
        affine[:3, 2] *= 48 / 300
    else:  # no shared data: smooth synthetic body
        grid = np.indices((512, 512, 300)).astype(np.float32)
        array = (1000 * np.exp(-((grid[0] - 256) ** 2 + (grid[1] - 256) ** 2) / 2e4) - 1000).astype(np.int16)
        affine = np.diag([0.7, 0.7, 1.0, 1.0])
    path = directory / "ct_512x512x300.nii.gz"
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = make_volume(Path(tmp))
        rows = []
        for name, body in CONTENDERS.items():
            code = (f"import time\nPATH = {str(path)!r}\nt0 = time.perf_counter()\n{body}\n"
                    "print('SECONDS=%f' % (time.perf_counter() - t0))")
            rows.append({"reader": name, **run_child(code)})
    reference = next(r for r in rows if r["reader"] == "nibabel")
    for row in rows:
        row["time_vs_nibabel"] = round(row["best_s"] / reference["best_s"], 2)
    print(table(rows, ["reader", "best_s", "median_s", "peak_rss_mib", "time_vs_nibabel"]))
    save("nifti_read", {"volume": "512x512x300 int16 .nii.gz (lung1 CT interpolated)", "rows": rows})


if __name__ == "__main__":
    main()
