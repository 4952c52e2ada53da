"""mitk: plugin-based medical image analysis on MONAI.

This module stays light: importing :mod:`mitk` must not import torch, monai, nibabel or pydicom.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

PROJECT_NAME = "mitk"
ENTRY_POINT_GROUP = "mitk.plugins"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Decorator that marks a function as an implementation of a mitk hook."""

__all__ = ["ENTRY_POINT_GROUP", "PROJECT_NAME", "__version__", "hookimpl"]
