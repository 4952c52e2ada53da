"""``blob`` and ``retinanet``: the built-in detectors.

Registration only: the plugin classes (and scipy, torch, monai) load from ``mitk_builtin._detect_*`` when a
plugin is first used.
"""

from __future__ import annotations

from mitk import hookimpl
from mitk.registry import PluginRegistrar


@hookimpl
def mitk_register_plugins(register: PluginRegistrar) -> None:
    register("blob", task="detect", factory="mitk_builtin._detect_blob:BlobDetector",
             summary="bright or dark roundish lesions by multi-scale Laplacian of Gaussian in mm; no weights")
    register("retinanet", task="detect", factory="mitk_builtin._detect_retinanet:RetinaNetDetectorPlugin",
             summary="MONAI RetinaNet (ResNet-FPN, ATSS, hard negatives), no torchvision; `mitk train detect`")
