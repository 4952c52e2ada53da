"""Temporary MONAI bundles built from the vendored Model Zoo configs (tests/data/bundles), weights from a seed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

BUNDLES = Path(__file__).parent / "data" / "bundles"


def make_bundle(name: str, folder: Path, *, seed: int = 0, weights: bool = True) -> Path:
    """Copy the vendored bundle ``name`` into ``folder`` and save ``models/model.pt``: the state dict of its
    ``network_def`` initialised with ``torch.manual_seed(seed)`` (no weights can be downloaded here)."""
    import torch

    from mitk.bundles import read_bundle
    from mitk.bundles.resolver import SafeResolver

    root = folder / name
    shutil.copytree(BUNDLES / name, root)
    if weights:
        torch.manual_seed(seed)
        network = SafeResolver(read_bundle(root).inference).build("network_def")
        (root / "models").mkdir()
        torch.save(network.state_dict(), root / "models" / "model.pt")
    return root


def edit_config(root: Path, relative: str, change: Any) -> None:
    """Apply ``change(document)`` to the JSON file ``relative`` of the bundle at ``root``."""
    path = root / relative
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=2))
