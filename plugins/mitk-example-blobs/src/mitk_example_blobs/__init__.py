"""mitk-example-blobs: registers the ``blobs`` detector with mitk.

This module is what the ``mitk.plugins`` entry point names. It stays light: it imports neither torch nor
monai nor scipy; the detector class lives in :mod:`mitk_example_blobs._detector` and is imported only when
someone runs ``mitk detect --plugin blobs``.
"""

from __future__ import annotations

from mitk import hookimpl
from mitk.registry import PluginRegistrar

__version__ = "0.1.0"


@hookimpl
def mitk_register_plugins(register: PluginRegistrar) -> None:
    register("blobs", task="detect", factory="mitk_example_blobs._detector:BlobDetector",
             summary="Bright blobs by Gaussian smoothing, a contrast threshold and connected components")
