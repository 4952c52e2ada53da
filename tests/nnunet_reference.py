"""nnU-Net's own prediction of a model folder, as ``nnUNetv2_predict_from_modelfolder`` makes it: the reference.

Run as a script (``python tests/nnunet_reference.py MODEL_FOLDER OUTPUT_FOLDER IMAGE... [--folds 0 1]
[--no-mirroring] [--step 0.5] [--checkpoint checkpoint_final.pth]``); each image's labels are written as
``OUTPUT_FOLDER/NAME`` (the image's file name). It is nnunetv2's ``nnUNetPredictor`` —
``initialize_from_trained_model_folder`` and ``predict_from_files_sequential``, exactly what the command line
runs — with one difference: the trainer class is named directly instead of found by importing every trainer
module, because one of them imports timm, and timm torchvision, whose compiled operators do not match the CPU
torch pinned here (``operator torchvision::nms does not exist``; the command itself fails on that import).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("output")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--folds", nargs="+", default=None)
    parser.add_argument("--no-mirroring", action="store_true")
    parser.add_argument("--step", type=float, default=0.5)
    parser.add_argument("--checkpoint", default="checkpoint_final.pth")
    args = parser.parse_args(argv)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(key, tempfile.gettempdir())

    import nnunetv2.inference.predict_from_raw_data as predict
    import torch
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as base
    from nnunetv2.training.nnUNetTrainer.variants.training_length import nnUNetTrainer_Xepochs

    trainers = {name: getattr(module, name) for module in (base, nnUNetTrainer_Xepochs) for name in dir(module)
                if name.startswith("nnUNetTrainer")}
    predict.recursive_find_trainer_class_by_name = lambda name: trainers[name]  # type: ignore[attr-defined]

    predictor = predict.nnUNetPredictor(tile_step_size=args.step, use_mirroring=not args.no_mirroring,
                                        device=torch.device("cpu"), allow_tqdm=False)
    folds = [f if f == "all" else int(f) for f in args.folds] if args.folds else None
    predictor.initialize_from_trained_model_folder(args.model, folds, checkpoint_name=args.checkpoint)
    work = Path(tempfile.mkdtemp(prefix="nnunet-ref-"))
    try:
        ending = predictor.dataset_json["file_ending"]
        sources = [work / f"case{n:03d}_0000{ending}" for n in range(len(args.images))]
        for image, source in zip(args.images, sources, strict=True):
            shutil.copy(image, source)
        (work / "out").mkdir()
        predictor.predict_from_files_sequential([[str(s)] for s in sources], str(work / "out"),
                                                save_probabilities=False, overwrite=True,
                                                folder_with_segs_from_prev_stage=None)
        Path(args.output).mkdir(parents=True, exist_ok=True)
        for n, image in enumerate(args.images):
            shutil.copy(work / "out" / f"case{n:03d}{ending}", Path(args.output) / Path(image).name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
