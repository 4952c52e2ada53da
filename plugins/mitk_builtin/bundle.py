"""``monai-bundle-*``: MONAI Model Zoo bundles, one plugin per output format (see mitk.bundles)."""

from __future__ import annotations

from mitk import hookimpl
from mitk.registry import PluginRegistrar


@hookimpl
def mitk_register_plugins(register: PluginRegistrar) -> None:
    register("monai-bundle-segmentation", task="segment", factory="mitk_builtin._bundle_segment:BundleSegmenter",
             summary="a MONAI bundle folder whose output is a segmentation (--weights BUNDLE_FOLDER)")
    register("monai-bundle-classes", task="classify", factory="mitk_builtin._bundle_classify:BundleClassifier",
             summary="a MONAI bundle folder whose output is class probabilities (--weights BUNDLE_FOLDER)")
