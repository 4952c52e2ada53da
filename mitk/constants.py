"""The package's constants: its version, its name and its plugin entry-point group. Imports nothing."""

from __future__ import annotations

__version__ = "0.1.0"

PROJECT_NAME = "mitk"
"""The pluggy project name of mitk's hooks."""
ENTRY_POINT_GROUP = "mitk.plugins"
"""The entry-point group through which installed packages add plugins, executors and tasks."""
