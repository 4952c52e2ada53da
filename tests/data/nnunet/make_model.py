"""Build the tiny nnU-Net v2 model folder the nnU-Net tests run, with nnU-Net's own planner and trainer.

Run once (``python tests/data/nnunet/make_model.py``, a few minutes on two CPU cores); the folder it writes,
``Dataset990_LungCrop/nnUNetTrainer_1epoch__nnUNetPlans__3d_fullres``, is committed. The data: eight crops of
``tests/data/lung1_*`` (pyradiomics' lung1 CT and its lesion label, BSD-3, see tests/data/LICENSE.txt), flipped
and shifted so that the lesion sits in different places. nnU-Net fingerprints and plans them as it would any
data set; only the network is made small (features 4-8-16, three stages) so that the folder stays well under
2 MB. Two folds of ``nnUNetTrainer_1epoch`` with 3 iterations: the model is barely trained, which makes a
demanding equality test (lesion and background both predicted, with many boundaries), and the checkpoints
are nnU-Net's own files, pickles and all.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
DATA = HERE.parent
NAME = "Dataset990_LungCrop"
TRAINER = "nnUNetTrainer_1epoch"
FOLDER = f"{TRAINER}__nnUNetPlans__3d_fullres"
CROP = (64, 64, 16)  # x, y, z (SimpleITK order)
OFFSETS = [(20, 30, 24), (40, 20, 22), (10, 10, 26), (30, 40, 20), (0, 25, 25), (50, 35, 23), (25, 0, 21),
           (35, 50, 27)]
FOLDS = 2


def make_raw(raw: Path) -> None:
    image = sitk.ReadImage(str(DATA / "lung1_image.nii.gz"))
    label = sitk.ReadImage(str(DATA / "lung1_label.nii.gz"))
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for n, offset in enumerate(OFFSETS):
        crop_image = sitk.RegionOfInterest(image, CROP, offset)
        crop_label = sitk.RegionOfInterest(label, CROP, offset)
        if n % 2:
            crop_image, crop_label = sitk.Flip(crop_image, [True, False, False]), sitk.Flip(crop_label,
                                                                                           [True, False, False])
        sitk.WriteImage(crop_image, str(raw / "imagesTr" / f"lung_{n:03d}_0000.nii.gz"))
        sitk.WriteImage(sitk.Cast(crop_label, sitk.sitkUInt8), str(raw / "labelsTr" / f"lung_{n:03d}.nii.gz"))
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}, "numTraining": len(OFFSETS),
        "file_ending": ".nii.gz", "licence": "BSD-3-Clause (pyradiomics lung1 crops)"}, indent=1))


def small_network(plans_file: Path) -> None:
    plans = json.loads(plans_file.read_text())
    config = plans["configurations"]["3d_fullres"]
    arch = config["architecture"]["arch_kwargs"]
    stages = 3
    arch["n_stages"] = stages
    arch["features_per_stage"] = [4, 8, 16]
    for key in ("kernel_sizes", "strides"):
        arch[key] = arch[key][:stages]
    arch["n_conv_per_stage"] = [2] * stages
    arch["n_conv_per_stage_decoder"] = [1] * (stages - 1)
    config["batch_size"] = 2
    plans["configurations"] = {"3d_fullres": config}
    plans_file.write_text(json.dumps(plans, indent=1))


def main() -> None:
    torch_threads = os.environ.setdefault("OMP_NUM_THREADS", "2")
    work = Path(tempfile.mkdtemp(prefix="nnunet-build-"))
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[key] = str(work / key)
    os.environ["nnUNet_n_proc_DA"] = "1"  # noqa: SIM112 (nnU-Net's name; planning sets torch's threads to it)
    make_raw(work / "nnUNet_raw" / NAME)

    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess
    from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs import nnUNetTrainer_1epoch

    torch.manual_seed(0)
    torch.set_num_threads(int(torch_threads))
    extract_fingerprints([990], num_processes=1)
    plan_experiments([990])
    pre = work / "nnUNet_preprocessed" / NAME
    small_network(pre / "nnUNetPlans.json")
    preprocess([990], configurations=("3d_fullres",), num_processes=(1,))
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (work / "nnUNet_raw" / NAME / "imagesTr").iterdir())
    splits = [{"train": [c for i, c in enumerate(cases) if i % FOLDS != f],
               "val": [c for i, c in enumerate(cases) if i % FOLDS == f]} for f in range(FOLDS)]
    (pre / "splits_final.json").write_text(json.dumps(splits, indent=1))
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    dataset = json.loads((pre / "dataset.json").read_text())
    os.environ["nnUNet_n_proc_DA"] = "0"  # noqa: SIM112 (augmentation in this process: no workers)
    for fold in range(FOLDS):
        trainer = nnUNetTrainer_1epoch({**plans, "continue_training": False}, "3d_fullres", fold, dataset,
                                       device=torch.device("cpu"))
        trainer.num_iterations_per_epoch = 3
        trainer.num_val_iterations_per_epoch = 2
        trainer.run_training()
    source = work / "nnUNet_results" / NAME / FOLDER
    target = HERE / NAME / FOLDER
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("dataset.json", "plans.json"):
        shutil.copy(source / name, target / name)
    for fold in range(FOLDS):
        (target / f"fold_{fold}").mkdir()
        shutil.copy(source / f"fold_{fold}" / "checkpoint_final.pth", target / f"fold_{fold}" / "checkpoint_final.pth")
    shutil.rmtree(work)
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
