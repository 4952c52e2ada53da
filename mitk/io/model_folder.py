"""Reading a model folder someone else made (a MONAI bundle, an nnU-Net model folder) without trusting its names:
every file stays inside the folder, and its JSON documents are bounded in size and must be objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mitk.errors import CheckpointError


def folder_file(root: Path, relative: str, kind: str = "model folder") -> Path:
    """``root / relative``, refused when the name or a link on the way leads out of ``root`` (the ``kind`` of
    folder names it in the message)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise CheckpointError(f"{relative} leads outside the {kind}; refused", root)
    return path


def read_json_object(root: Path, relative: str, max_bytes: int, kind: str = "model folder") -> dict[str, Any]:
    """The JSON object in ``root / relative``: refused in one line naming the file when it lies outside the
    folder, is larger than ``max_bytes``, is not JSON, or is not an object."""
    path = folder_file(root, relative, kind)
    if path.stat().st_size > max_bytes:
        raise CheckpointError(f"{relative} is larger than {max_bytes // 2**20} MiB", root)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{relative} is not readable JSON ({error})", root) from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{relative} is not a JSON object", root)
    return document
