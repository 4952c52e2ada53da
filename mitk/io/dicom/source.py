"""What a DICOM-derived :class:`~mitk.image.Image` remembers about its source series.

The voxel array of a DICOM volume is indexed ``array[i, j, k]`` = column ``i``, row ``j`` of slice ``k``
(the same order as ITK/SimpleITK: x fastest along a row). ``files[k]`` / ``headers[k]`` describe slice
``k`` in that order (for an enhanced multi-frame object, ``files`` holds the one file and ``frames[k]``
the 0-based frame number of slice ``k``). Headers are read without pixel data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DicomSource:
    files: list[Path]
    headers: list[Any]
    """pydicom ``Dataset`` per slice (or the one multi-frame dataset), without pixel data."""
    series_uid: str
    frames: list[int] | None = None
    modality: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    """Non-identifying acquisition parameters (modality, manufacturer, spacing, kVp, TR/TE...)."""
    archive: Path | None = None
    """The zip archive the files came from; ``files`` are then member names inside it."""
