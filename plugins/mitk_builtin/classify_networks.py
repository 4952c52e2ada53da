"""``densenet121`` and ``resnet``: trainable MONAI classification networks for 2-D and 3-D images.

Registration only: the plugin classes (and torch/monai) load from :mod:`mitk_builtin._classify_networks`
when a plugin is first used.
"""

from __future__ import annotations

from mitk import hookimpl
from mitk.registry import PluginRegistrar

_MODULE = "mitk_builtin._classify_networks"


@hookimpl
def mitk_register_plugins(register: PluginRegistrar) -> None:
    register("densenet121", task="classify", factory=f"{_MODULE}:DenseNet121Classifier",
             summary="MONAI DenseNet121, 2-D or 3-D; train with `mitk train classify --plugin densenet121`")
    register("resnet", task="classify", factory=f"{_MODULE}:ResNetClassifier",
             summary="MONAI ResNet (network.depth 18, 34 or 50), 2-D or 3-D; train with `mitk train classify`")
