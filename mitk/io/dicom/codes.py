"""Coded concepts (SNOMED CT) for what an image region is: a label name → its DICOM category and type.

Shared by the DICOM writers of label maps (SEG) and of findings (SR).
"""

from __future__ import annotations

import re

from pydicom.sr.codedict import codes as dicom_codes
from pydicom.sr.coding import Code

from mitk.errors import UsageError
from mitk.extras import install_hint

try:
    import highdicom as hd
except ImportError:  # the dicom extra; `mitk segment --format dicom-seg` checks for it before the model loads
    raise UsageError(f"DICOM SEG output needs highdicom, which is not installed; install it with: "
                     f"{install_hint('dicom')}") from None

CodePair = tuple[Code | hd.sr.CodedConcept, Code | hd.sr.CodedConcept]

ANATOMY = Code("91723000", "SCT", "Anatomical Structure")
TISSUE = Code("85756007", "SCT", "Tissue")
ABNORMAL = Code("49755003", "SCT", "Morphologically Altered Structure")

_ANATOMY_NAMES = {
    "brain": "Brain", "liver": "Liver", "lung": "Lung", "lungs": "Lung", "kidney": "Kidney", "kidneys": "Kidney",
    "spleen": "Spleen", "heart": "Heart", "pancreas": "Pancreas", "prostate": "Prostate", "aorta": "Aorta",
    "stomach": "Stomach", "gallbladder": "Gallbladder", "esophagus": "Esophagus", "colon": "Colon",
    "bone": "Bone", "vertebra": "Vertebra", "white matter": "WhiteMatter", "gray matter": "GrayMatter",
    "grey matter": "GrayMatter",
}
_TISSUE_NAMES = {"muscle": "Muscle", "fat": "Fat", "csf": "CerebrospinalFluid",
                 "cerebrospinal fluid": "CerebrospinalFluid"}
_ABNORMAL_NAMES = {"tumor": "Neoplasm", "tumour": "Neoplasm", "neoplasm": "Neoplasm", "lesion": "Lesion",
                   "mass": "Mass", "nodule": "Nodule", "edema": "Edema", "oedema": "Edema",
                   "necrosis": "Necrosis"}


def _known_codes() -> dict[str, CodePair]:
    table: dict[str, CodePair] = {}
    for category, names in ((ANATOMY, _ANATOMY_NAMES), (TISSUE, _TISSUE_NAMES), (ABNORMAL, _ABNORMAL_NAMES)):
        for name, keyword in names.items():
            table[name] = (category, getattr(dicom_codes.SCT, keyword))
    return table


SEGMENT_CODES: dict[str, CodePair] = _known_codes()
"""Label name (lower case, ``_``/``-`` read as spaces) → (SegmentedPropertyCategory, SegmentedPropertyType)."""


def property_codes(name: str) -> CodePair:
    """The coded category and type of a segment named ``name``: a known SNOMED CT concept, else "Tissue"."""
    key = re.sub(r"[\s_\-]+", " ", name.strip().lower())
    return SEGMENT_CODES.get(key, (TISSUE, TISSUE))
