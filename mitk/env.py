"""The ``MITK_*`` environment switches, read one way (light: no third-party imports)."""

from __future__ import annotations

import os
import re

from mitk.errors import UsageError

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def env_flag(name: str, default: bool = False) -> bool:
    """``1/true/yes/on`` → True, ``0/false/no/off`` → False (any case); unset or anything else → ``default``."""
    value = os.environ.get(name, "").strip().lower()
    return True if value in TRUE else False if value in FALSE else default


def env_size(name: str, default: int) -> int:
    """A size in bytes: ``1073741824``, ``512M``, ``1.5G``, ``2GiB``, ``1T`` (binary units, any case).

    Unset or empty → ``default``; anything else that is not a size is a :class:`~mitk.errors.UsageError`
    (a mistyped limit must not silently become no limit).
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    match = _SIZE.fullmatch(value)
    if match is None:
        raise UsageError(f"{name}={value!r} is not a size in bytes (e.g. 512M, 32G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
