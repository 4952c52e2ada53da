"""nnU-Net's own inference steps, run on mitk's images: preprocessing, sliding window, fold ensemble, export.

The steps are nnunetv2's functions, called as ``nnUNetPredictor.predict_from_files`` calls them, so that the
labels are nnU-Net's: ``DefaultPreprocessor.run_case_npy`` (transpose, crop to the non-zero region, the plans'
normalisation per channel, resampling to the target spacing with the plans' resampling function),
``nnUNetPredictor.predict_sliding_window_return_logits`` per fold (padding to the patch, Gaussian-weighted
tiles at ``tile_step_size``, test-time mirroring on the axes the checkpoint allows), the mean of the folds'
logits (as ``predict_logits_from_preprocessed_data``) and ``convert_predicted_logits_to_segmentation_with_
correct_shape`` (resampling the logits back, softmax, un-cropping). What mitk adds is the axis order: nnU-Net
works on SimpleITK's array, whose axes are mitk's voxel axes reversed, with the spacing reversed likewise; the
grid is the input's, so the labels are on the input's exact grid.

mitk's runner calls the preprocessing and the inferer one after the other; the preprocessing leaves nnU-Net's
properties of the case (crop box, shapes, spacing) for the inferer in a per-thread slot.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mitk.errors import CheckpointError, InputError, PluginError

NORMALISATIONS = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization",
                  "RGBTo01Normalization")
"""nnunetv2.preprocessing.normalization classes a plans file may name (nnU-Net looks any name up)."""
RESAMPLING = ("resample_data_or_seg_to_shape", "resample_torch_simple", "resample_torch_fornnunet")
"""nnunetv2.preprocessing.resampling functions a plans file may name."""
PREPROCESSORS = ("DefaultPreprocessor",)


def quiet_import() -> Any:
    """nnunetv2's modules, imported with their start-up prints kept off stdout; a one-line error naming the
    extra when nnunetv2 is not installed."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from nnunetv2.inference import export_prediction, predict_from_raw_data
            from nnunetv2.preprocessing.preprocessors import default_preprocessor
            from nnunetv2.utilities.plans_handling import plans_handler
    except ImportError:
        raise PluginError('nnU-Net model folders need nnunetv2, which is not installed; install it with: '
                          'pip install "mitk[nnunet]"') from None
    return predict_from_raw_data, export_prediction, default_preprocessor, plans_handler


def managers(config: Mapping[str, Any]) -> tuple[Any, Any]:
    """nnunetv2's ``PlansManager`` and ``ConfigurationManager`` of the model, after checking every class or
    function name the plans make nnU-Net look up against the allow-lists above."""
    plans_handler = quiet_import()[3]
    plans = plans_handler.PlansManager(dict(config["plans"]))
    configuration = plans.get_configuration(str(config["configuration"]))
    raw = configuration.configuration
    if configuration.previous_stage_name is not None:
        raise CheckpointError(f"{config['configuration']} is a cascade stage (it needs the segmentation of "
                              f"{configuration.previous_stage_name}); mitk runs single-stage configurations")
    for name in configuration.normalization_schemes:
        if name not in NORMALISATIONS:
            raise CheckpointError(f"plans.json: normalization scheme {name!r} is not one of "
                                  f"{', '.join(NORMALISATIONS)}")
    for key in ("resampling_fn_data", "resampling_fn_probabilities", "resampling_fn_seg"):
        if raw.get(key) not in RESAMPLING:
            raise CheckpointError(f"plans.json: {key} {raw.get(key)!r} is not one of {', '.join(RESAMPLING)}")
    if configuration.preprocessor_name not in PREPROCESSORS:
        raise CheckpointError(f"plans.json: preprocessor {configuration.preprocessor_name!r} is not one of "
                              f"{', '.join(PREPROCESSORS)}")
    return plans, configuration


class NnunetPipeline:
    """The preprocessing (a dictionary transform) and the inferer of one model, sharing the case's properties."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.predict, self.export, self.preprocessing, _ = quiet_import()
        self.plans, self.configuration = managers(config)
        self.dataset = dict(config["dataset"])
        self.labels = self.plans.get_label_manager(self.dataset)
        self.channels = len(self.dataset.get("channel_names") or self.dataset.get("modality") or {}) or None
        self.mirroring = bool(config.get("mirroring", True))
        axes = config.get("mirror_axes")
        self.mirror_axes = tuple(int(a) for a in axes) if axes is not None else None
        self.step = float(config.get("tile_step_size", 0.5))
        if not 0 < self.step <= 1:
            raise PluginError(f"tile_step_size must be in (0, 1], got {self.step}")
        self.case = threading.local()

    def preprocess(self, data: dict[str, Any]) -> dict[str, Any]:
        """``{"image": MetaTensor (C, I, J, K)}`` → nnU-Net's preprocessed array (same key, the input's
        affine kept: the inferer returns scores on the input grid)."""
        from monai.data import MetaTensor

        image: Any = data["image"]
        if image.ndim != 4:
            raise InputError(f"nnU-Net model folders take 3-D images; this one has shape {tuple(image.shape)}")
        if self.channels is not None and int(image.shape[0]) != self.channels:
            names = ", ".join(str(v) for v in (self.dataset.get("channel_names") or {}).values())
            raise InputError(f"the model expects {self.channels} channel(s) ({names}), the image has "
                             f"{int(image.shape[0])}")
        affine = np.asarray(image.affine, dtype=np.float64)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        array = np.ascontiguousarray(image.as_tensor().cpu().numpy().transpose(0, 3, 2, 1), dtype=np.float32)
        properties = {"spacing": [float(s) for s in spacing[::-1]]}
        preprocessor = self.configuration.preprocessor_class(verbose=False)
        with contextlib.redirect_stdout(io.StringIO()):
            values, _, properties = preprocessor.run_case_npy(array, None, properties, self.plans,
                                                              self.configuration, self.dataset)
        self.case.properties = properties
        tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        return {**data, "image": MetaTensor(tensor, affine=torch.as_tensor(affine))}

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The folds' mean logits, exported as nnU-Net does: ``(1, C, I, J, K)`` log-probabilities on the input
        grid (mitk's runner takes their argmax, or their softmax — the probabilities — with --probabilities)."""
        properties = getattr(self.case, "properties", None)
        if properties is None:
            raise PluginError("the nnU-Net inferer runs after the nnU-Net preprocessing")
        self.case.properties = None
        device = inputs.device
        with contextlib.redirect_stdout(io.StringIO()):
            predictor = self.predict.nnUNetPredictor(tile_step_size=self.step, use_gaussian=True,
                                                     use_mirroring=self.mirroring, perform_everything_on_device=True,
                                                     device=device, verbose=False, allow_tqdm=False)
        predictor.plans_manager, predictor.configuration_manager = self.plans, self.configuration
        predictor.dataset_json, predictor.label_manager = self.dataset, self.labels
        predictor.allowed_mirroring_axes = self.mirror_axes
        data = inputs[0]
        logits: torch.Tensor | None = None
        folds = list(network.values()) if isinstance(network, torch.nn.ModuleDict) else [network]
        for fold in folds:
            predictor.network = fold
            with contextlib.redirect_stdout(io.StringIO()):
                fold_logits = predictor.predict_sliding_window_return_logits(data).to("cpu")
            logits = fold_logits if logits is None else logits + fold_logits
        assert logits is not None
        if len(folds) > 1:
            logits /= len(folds)
        threads = torch.get_num_threads()
        _, probabilities = self.export.convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, self.plans, self.configuration, self.labels, properties, return_probabilities=True,
            num_threads_torch=threads)
        probabilities = torch.from_numpy(np.ascontiguousarray(np.asarray(probabilities).transpose(0, 3, 2, 1)))
        scores = torch.log(probabilities.float().clamp_min(torch.finfo(torch.float32).tiny))
        return scores.unsqueeze(0)
