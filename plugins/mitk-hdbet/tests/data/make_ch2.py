"""Make ``ch2_t1_2mm.nii.gz`` and ``ch2_brain_2mm.nii.gz`` from Debian's ``mricron-data`` (BSD-3-clause).

``apt-get download mricron-data && dpkg-deb -x mricron-data_*.deb DIR``, then
``python make_ch2.py DIR/usr/share/mricron/templates``. ``ch2`` is the Colin27 T1 (a real head, skull and
scalp included, 1 mm); ``ch2bet`` is the same image after FSL's BET. The reference brain mask is ``ch2bet > 0``
with its holes filled (in 3-D, then slice by slice along each axis). Both are reduced to 2 mm by averaging
2×2×2 blocks (the mask: a block is brain when at least half of it is).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage


def blocks(values: np.ndarray) -> np.ndarray:
    even = [n // 2 * 2 for n in values.shape]
    cut = values[: even[0], : even[1], : even[2]].astype(np.float64)
    return cut.reshape(even[0] // 2, 2, even[1] // 2, 2, even[2] // 2, 2).mean(axis=(1, 3, 5))


def main(folder: Path) -> None:
    head: Any = nib.load(folder / "ch2.nii.gz")
    bet: Any = nib.load(folder / "ch2bet.nii.gz")
    brain = ndimage.binary_fill_holes(np.asarray(bet.dataobj) > 0)
    for axis in range(3):
        brain = np.moveaxis(np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(brain, axis, 0)]), 0, axis)
    affine = head.affine.copy()
    affine[:3, :3] *= 2
    affine[:3, 3] += head.affine[:3, :3] @ [0.5, 0.5, 0.5]
    here = Path(__file__).parent
    t1 = np.round(blocks(np.asarray(head.dataobj))).astype(np.uint8)
    nib.save(nib.Nifti1Image(t1, affine), here / "ch2_t1_2mm.nii.gz")
    nib.save(nib.Nifti1Image((blocks(brain) >= 0.5).astype(np.uint8), affine), here / "ch2_brain_2mm.nii.gz")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
