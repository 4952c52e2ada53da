"""Warping an atlas of many labels: ``mitk warp --labels`` against SimpleITK's label interpolators.

The atlas is nilearn's MNI152 brain mask at 1 mm (197×233×189) split into 116 parcels (as many as AAL has) by
k-means on voxel coordinates; it is resampled onto its own grid through an affine (7°/−5°/4°, 3 % scale, a few
mm shift). Contenders, each in a fresh process (whole command: start-up, reading, resampling, writing):

* ``mitk warp --labels`` (label-wise linear: each label's trilinear weight, the largest wins, in one pass);
* SimpleITK ``Resample`` with ``sitkLabelGaussian`` (its label interpolator) and with ``sitkNearestNeighbor``.

In process, the resampling calls alone, interleaved. Agreement: the share of voxels where mitk and
``sitkLabelGaussian`` give the same label.

Run: ``python benchmarks/bench_label_warp.py [--repeats 3]``; writes ``benchmarks/results/label_warp.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "tests"), str(Path(__file__).parent)]

from _harness import compare, run_interleaved, save, table  # noqa: E402

SITK = """
import time, SimpleITK as sitk
started = time.perf_counter()
image = sitk.ReadImage({atlas!r})
transform = sitk.ReadTransform({transform!r})
sitk.WriteImage(sitk.Resample(image, image, transform, sitk.{interpolator}, 0), {output!r})
print('SECONDS=%f' % (time.perf_counter() - started))
"""
MITK = """
import sys, time
sys.path[:0] = [{root!r}, {plugins!r}]
started = time.perf_counter()
from mitk.cli import main
try:
    main(['warp', {atlas!r}, '-t', {transform!r}, '-r', {atlas!r}, '-o', {output!r}, '--labels', '--overwrite'])
except SystemExit as exit:
    assert not exit.code, exit.code
print('SECONDS=%f' % (time.perf_counter() - started))
"""


def main() -> None:
    import nibabel as nib
    import SimpleITK as sitk
    from test_label_warp import FLIP, moved, parcellation

    from mitk.image import Image
    from mitk.io.transforms import read_transform, write_matrix
    from mitk.runner.resample import resample_through

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    folder = Path(tempfile.mkdtemp(prefix="bench_label_warp_"))
    labels, affine = parcellation(resolution=1)
    atlas, transform = folder / "atlas.nii.gz", folder / "t.tfm"
    nib.save(nib.Nifti1Image(labels, affine), atlas)
    matrix = moved((affine @ np.append((np.array(labels.shape) - 1) / 2, 1.0))[:3])
    write_matrix(matrix, transform)
    contenders = {
        "mitk warp --labels": (MITK.format(root=str(ROOT), plugins=str(ROOT / "plugins"), atlas=str(atlas),
                                            transform=str(transform), output=str(folder / "mitk.nii.gz")), None),
        "SimpleITK sitkLabelGaussian": (SITK.format(atlas=str(atlas), transform=str(transform),
                                                    interpolator="sitkLabelGaussian",
                                                    output=str(folder / "gaussian.nii.gz")), None),
        "SimpleITK sitkNearestNeighbor": (SITK.format(atlas=str(atlas), transform=str(transform),
                                                      interpolator="sitkNearestNeighbor",
                                                      output=str(folder / "nearest.nii.gz")), None),
    }
    whole = run_interleaved(contenders, repeats=repeats)
    mine = np.asarray(nib.load(folder / "mitk.nii.gz").dataobj)
    agreement = {name: float((mine == np.asarray(nib.load(folder / f"{name}.nii.gz").dataobj)).mean())
                 for name in ("gaussian", "nearest")}

    image = Image(array=labels, affine=affine)
    step = read_transform(transform)
    itk_image = sitk.ReadImage(str(atlas))
    itk_transform = sitk.ReadTransform(str(transform))
    in_process = compare(lambda: sitk.Resample(itk_image, itk_image, itk_transform, sitk.sitkLabelGaussian, 0),
                         lambda: resample_through(image, image, step.apply, mode="labels"), repeats=repeats)
    assert np.allclose(FLIP @ matrix @ FLIP, FLIP @ step.matrix @ FLIP)
    rows = [{"contender": name, **result,
             "ratio_to_label_gaussian": round(result["best_s"] / whole["SimpleITK sitkLabelGaussian"]["best_s"], 2)}
            for name, result in whole.items()]
    document = {"labels": int(len(np.unique(labels)) - 1), "shape": list(labels.shape), "whole_process": rows,
                "in_process_ms": in_process, "agreement_with_label_gaussian": agreement["gaussian"],
                "agreement_with_nearest": agreement["nearest"]}
    print(table(rows, ["contender", "best_s", "median_s", "peak_rss_mib", "ratio_to_label_gaussian"]))
    print(json.dumps({"in_process_ms": in_process, **agreement}, indent=1))
    print(save("label_warp", document))


if __name__ == "__main__":
    main()
