"""Enumerations shared by the whole package (kept free of heavy imports)."""

from __future__ import annotations

from enum import Enum


class Task(str, Enum):
    """The four things mitk does to an image."""

    SEGMENT = "segment"
    CLASSIFY = "classify"
    DETECT = "detect"
    REGISTER = "register"
