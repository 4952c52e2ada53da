"""The ``MITK_*`` environment switches, read one way (light: no third-party imports)."""

from __future__ import annotations

import os

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def env_flag(name: str, default: bool = False) -> bool:
    """``1/true/yes/on`` → True, ``0/false/no/off`` → False (any case); unset or anything else → ``default``."""
    value = os.environ.get(name, "").strip().lower()
    return True if value in TRUE else False if value in FALSE else default
