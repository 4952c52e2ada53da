"""Rebuild tests/data from the pyradiomics test cases: in-plane crops around each lesion, geometry kept exact.

    python tests/data/make_test_data.py /path/to/pyradiomics/data

Each crop keeps every slice and the voxel values as stored (int16 images, the original label dtype); its
affine is the original affine with the translation moved to the crop's first voxel, so every kept voxel
lies at the same world point (RAS mm) as in the original. ``crops.json`` records the source file, its
SHA-256, the crop offset, the original affine and (labels) foreground voxel count, which
tests/test_data_files.py checks the crops against.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
# case: (first voxel i, j of the in-plane crop, side in voxels); every slice is kept.
CROPS = {
    "brain1": ((120, 56), 128),  # MR brain with a tumour: 256×256×25 LAS → 128×128×25
    "lung1": ((154, 296), 128),  # CT chest with a lesion, ribs and outside air: 512×512×48 LPS → 128×128×48
}


def crop_affine(affine: np.ndarray, offset: tuple[int, int, int]) -> np.ndarray:
    """The affine of ``array[i0:, j0:, k0:]``: voxel (0, 0, 0) of the crop is voxel ``offset`` of the original."""
    cropped = np.array(affine, dtype=np.float64)
    cropped[:3, 3] = affine[:3, :3] @ np.asarray(offset, dtype=np.float64) + affine[:3, 3]
    return cropped


def crop_file(source: Path, target: Path, offset: tuple[int, int, int], side: int) -> dict[str, object]:
    image = nib.load(source)
    assert isinstance(image, nib.Nifti1Image)
    array = np.asanyarray(image.dataobj)
    i0, j0, k0 = offset
    region = np.ascontiguousarray(array[i0:i0 + side, j0:j0 + side, k0:])
    header = image.header.copy()
    affine = crop_affine(image.affine, offset)
    cropped = nib.Nifti1Image(region, affine, header)
    cropped.set_qform(affine, code=int(header["qform_code"]))
    cropped.set_sform(affine, code=int(header["sform_code"]))
    cropped.set_data_dtype(image.get_data_dtype())
    cropped.header["descrip"] = f"pyradiomics {source.name} cropped at {list(offset)}".encode()[:80]
    nib.save(cropped, target)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    record: dict[str, object] = {
        "source": source.name, "source_sha256": digest,
        "source_shape": [int(n) for n in array.shape], "source_affine": np.asarray(image.affine).tolist(),
        "offset": list(offset), "shape": [int(n) for n in region.shape], "dtype": str(region.dtype)}
    if "label" in source.name:  # the whole lesion must lie inside the crop
        record["source_foreground_voxels"] = int(np.count_nonzero(array))
    return record


def main(source_dir: Path) -> None:
    manifest: dict[str, object] = {}
    for case, ((i0, j0), side) in CROPS.items():
        for part in ("image", "label"):
            name = f"{case}_{part}.nii.gz"
            manifest[name] = crop_file(source_dir / name, HERE / name, (i0, j0, 0), side)
    (HERE / "crops.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/make_test_data.py PYRADIOMICS_NIFTI_FOLDER (the pyradiomics 3.0.1 "
                 "test cases as NIfTI)")
    main(Path(sys.argv[1]))
