"""``nnunet``: an nnU-Net v2 model folder under mitk's runner (folds as an ensemble, nnU-Net's own steps).

The folder's JSON files and the chosen folds' checkpoints arrive as this plugin's settings and weights, read
by :mod:`mitk.nnunet` (weights-only loading, allow-listed architecture); the network is one module per fold
(``fold_0`` …). The preprocessing and inferer are nnunetv2's, see :mod:`mitk_builtin._nnunet_predict`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mitk.errors import PluginError
from mitk.nnunet.architecture import build_network
from mitk.nnunet.loading import label_names, parse_folds
from mitk.tasks import SegmentationPlugin
from mitk_builtin._nnunet_predict import NnunetPipeline, managers

DEFAULTS: dict[str, Any] = {"plans": {}, "dataset": {}, "configuration": "", "trainer": "", "folds": [],
                            "mirror_axes": None, "checkpoint": "auto", "mirroring": True, "tile_step_size": 0.5}
SCHEMA: dict[str, tuple[type | None, ...]] = {
    "plans": (dict,), "dataset": (dict,), "configuration": (str,), "trainer": (str,), "folds": (list, str, int),
    "mirror_axes": (list, None), "checkpoint": (str,), "mirroring": (bool,), "tile_step_size": (float, int)}
HELP = {"plans": "the model folder's plans.json (read from --weights FOLDER)",
        "dataset": "the model folder's dataset.json",
        "configuration": "the nnU-Net configuration the checkpoints were trained for (3d_fullres …)",
        "trainer": "the nnU-Net trainer that made the checkpoints",
        "folds": "the folds to ensemble: 0, 0,1, all (fold_all); default every numbered fold present",
        "mirror_axes": "the axes the checkpoint allows for test-time mirroring",
        "checkpoint": "final (checkpoint_final.pth), best (checkpoint_best.pth), or auto: final where present",
        "mirroring": "test-time mirroring, as nnU-Net (false: nnUNetv2_predict --disable_tta)",
        "tile_step_size": "sliding-window step as a fraction of the patch (nnU-Net's tile_step_size, 0.5)"}


class NnunetSegmenter(SegmentationPlugin):
    """An nnU-Net v2 model folder (``--weights DatasetXXX/TRAINER__PLANS__CONFIGURATION``)."""

    trainable = False
    cpu_kernels = False

    def __init__(self) -> None:
        super().__init__()
        self._pipelines: dict[int, NnunetPipeline] = {}

    def default_config(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return {"labels": (dict,), **SCHEMA}

    def settings_help(self) -> dict[str, str]:
        return {**HELP, "labels": "label value → name (default: dataset.json's labels)"}

    def _pipeline(self, config: dict[str, Any]) -> NnunetPipeline:
        """One pipeline per config, so the preprocessing and the inferer the runner builds share it."""
        if not config.get("plans"):
            raise PluginError("this plugin runs nnU-Net model folders: give --weights FOLDER")
        key = id(config)
        if key not in self._pipelines:
            self._pipelines = {key: NnunetPipeline(config)}
        return self._pipelines[key]

    def network(self, config: dict[str, Any]) -> Any:
        if not config.get("plans"):
            raise PluginError("this plugin runs nnU-Net model folders: give --weights FOLDER")
        _, configuration = managers(config)
        dataset = config["dataset"]
        channels = len(dataset.get("channel_names") or dataset.get("modality") or {})
        outputs = len(label_names(dataset))
        return torch.nn.ModuleDict({
            f"fold_{fold}": build_network(configuration.network_arch_class_name,
                                          configuration.network_arch_init_kwargs,
                                          configuration.network_arch_init_kwargs_req_import, channels, outputs)
            for fold in parse_folds(config["folds"])})

    def labels(self, config: dict[str, Any]) -> dict[int, str]:
        if config.get("labels"):
            return super().labels(config)
        return label_names(config["dataset"]) if config.get("dataset") else super().labels(config)

    def inference_transforms(self, config: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return self._pipeline(config).preprocess

    def inferer(self, config: dict[str, Any]) -> Any:
        return self._pipeline(config)
