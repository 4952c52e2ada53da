"""UIDs that anonymised public series lack (StudyInstanceUID, FrameOfReferenceUID, …), minted instead of refusing.

A SEG or an SR must reference a study, a frame of reference, a series and instances. A de-identified series may
have had some of these removed; :func:`complete_uids` gives copies of its headers the missing ones, derived
from what the series still has (its SeriesInstanceUID or its geometry), so that the same series always gets the
same minted UIDs, and says which were minted: the caller warns and records it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

SERIES_LEVEL = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def _seed(headers: Sequence[Any]) -> list[str]:
    first = headers[0]
    known = [str(first.get(k) or "") for k in SERIES_LEVEL]
    geometry = [str(list(h.get("ImagePositionPatient") or [])) for h in headers[:3]]
    return [*known, str(list(first.get("ImageOrientationPatient") or [])), *geometry, str(len(headers))]


def complete_uids(headers: Sequence[Any], instances: bool = True) -> tuple[list[Any], list[str]]:
    """Copies of ``headers`` (one series) with missing series-level UIDs (and, with ``instances``, missing
    SOPInstanceUIDs) minted; and the keywords minted. Headers that have every UID come back as they are."""
    from pydicom.uid import generate_uid

    missing = [k for k in SERIES_LEVEL if any(not h.get(k) for h in headers)]
    no_instance = instances and any(not h.get("SOPInstanceUID") for h in headers)
    if not missing and not no_instance:
        return list(headers), []
    seed = _seed(headers)
    minted = {k: generate_uid(entropy_srcs=["mitk", k, *seed]) for k in missing}
    completed = []
    for index, header in enumerate(headers):
        copied = copy.deepcopy(header)
        for keyword in missing:
            if not copied.get(keyword):
                setattr(copied, keyword, minted[keyword])
        if no_instance and not copied.get("SOPInstanceUID"):
            copied.SOPInstanceUID = generate_uid(entropy_srcs=["mitk", "SOPInstanceUID", str(index), *seed])
            meta = getattr(copied, "file_meta", None)
            if meta is not None:
                meta.MediaStorageSOPInstanceUID = copied.SOPInstanceUID
        completed.append(copied)
    return completed, [*missing, *(["SOPInstanceUID"] if no_instance else [])]
