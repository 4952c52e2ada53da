"""``nnunet``: nnU-Net v2 model folders (``--weights DatasetXXX/TRAINER__PLANS__CONFIGURATION``), see mitk.nnunet."""

from __future__ import annotations

from mitk import hookimpl
from mitk.registry import PluginRegistrar


@hookimpl
def mitk_register_plugins(register: PluginRegistrar) -> None:
    register("nnunet", task="segment", factory="mitk_builtin._nnunet:NnunetSegmenter",
             summary="an nnU-Net v2 model folder: its folds as an ensemble, with nnU-Net's preprocessing, "
                     "mirroring and export (--weights FOLDER; extra mitk[nnunet])")
