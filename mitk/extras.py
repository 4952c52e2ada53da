"""Optional extras (``pip install "mitk[EXTRA]"``): a feature that needs one fails up front, naming it.

A plain ``pip install mitk`` runs every command; these features need an extra (see ``pyproject.toml``).
"""

from __future__ import annotations

import importlib

from mitk.errors import UsageError

EXTRA_OF_MODULE = {"matplotlib": "preview", "highdicom": "dicom", "nilearn": "sample",
                   "dicomanonymizer": "dicom", "SimpleITK": "itk", "tensorboard": "tensorboard", "mlflow": "mlflow",
                   "yaml": "yaml", "nnunetv2": "nnunet", "rt_utils": "rtstruct", "torchio": "augment"}
"""The extra that installs each optional module mitk imports (the pylibjpeg decoders: see io/dicom/pixels)."""


def install_hint(extra: str) -> str:
    """The command that installs an extra, e.g. ``pip install "mitk[preview]"``."""
    return f'pip install "mitk[{extra}]"'


def require_module(module: str, feature: str) -> None:
    """Raise a one-line :class:`UsageError` naming the extra to install when ``module``, which ``feature``
    needs, does not import. Call it before any slow work, e.g. before a model loads."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{feature} needs {module}, which is not installed; install it with: "
                         f"{install_hint(EXTRA_OF_MODULE[module])}") from None


def require_segment_extras(preview: bool = False, dicom_seg: bool = False) -> None:
    """``mitk segment``'s optional outputs: ``--preview`` needs matplotlib, ``--format dicom-seg`` highdicom."""
    if preview:
        require_module("matplotlib", "--preview")
    if dicom_seg:
        require_module("highdicom", "--format dicom-seg")
