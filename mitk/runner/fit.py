"""Does this model fit this image? The model's expectations against what an input is.

A model's **expectations** are a small JSON document: what it was trained on (a mitk checkpoint records it at
training time, from the training images: :func:`training_expectations`) or what it declares (a MONAI bundle's
``network_data_format``: :func:`bundle_expectations`; a plugin's ``expects`` attribute)::

    {"source": "training", "cases": 12,
     "modality": ["CR"], "photometric": ["MONOCHROME1"], "colour": false,
     "channels": 1, "spatial_dims": 2,
     "spacing": {"min": [0.5, 0.5, 1.0], "max": [0.9, 0.9, 1.0]},     # each image's spacings, sorted
     "intensity": {"p1": [lo, hi], "p99": [lo, hi]},                 # per-image 1st/99th percentiles, range
     "hounsfield": false}

Every key may be missing or null (unknown). :func:`assess` compares an :class:`~mitk.image.Image` with them and
returns :class:`Finding` s: a **refusal** where the network cannot run the input as it is (another number of
channels than colour↔grey, a 2-D image for a 3-D model or the reverse), a **warning** where it runs but its answer
may mean nothing (an MR given to a CT model, a colour photograph given to a radiograph model, a spacing or an
intensity range far from training's). :func:`check_fit` is what the task jobs and the Python API call for every
input: refusals raise :class:`~mitk.errors.InputError`, warnings become one :class:`~mitk.errors.MitkWarning`
line each and are returned for the case's record. A model without expectations (an older checkpoint) is not
checked. This module names no task.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mitk.errors import InputError, MitkWarning
from mitk.image import Image

FORMAT = 1
RADIOGRAPH = frozenset({"CR", "DX", "DR", "RG", "PX", "MG", "IO"})
"""DICOM modalities that are projection radiographs: one kind of image for a model (CR and DX alike)."""
COLOUR_PHOTOMETRIC = ("RGB", "YBR", "PALETTE")
SPACING_TOLERANCE = 1.5
"""A spacing up to this factor beyond the range seen in training passes without a word."""
INTENSITY_TOLERANCE = 0.25
"""A percentile up to this fraction of training's intensity span beyond training's range passes."""
SAMPLE_VALUES = 1_000_000
"""Percentiles are taken on at most about this many evenly strided values of an image."""


@dataclass(frozen=True)
class Finding:
    """One way the input does not fit: ``level`` is ``refuse`` or ``warn``; ``aspect`` what was compared."""

    level: str
    aspect: str
    message: str


def profile(image: Image) -> dict[str, Any]:
    """What an image is, in the terms of the expectations: modality and photometric interpretation (DICOM),
    colour, channels, spatial dimensions, spacing (None when the file does not state it) and the 1st/99th
    intensity percentiles."""
    summary = dict(image.meta.get("dicom_summary") or {})
    photo = dict(image.meta.get("photo") or {})
    channels = int(image.array.shape[3]) if image.array.ndim == 4 else 1
    photometric = summary.get("PhotometricInterpretation")
    if photometric:
        colour: bool | None = str(photometric).upper().startswith(COLOUR_PHOTOMETRIC)
    elif photo:
        colour = channels >= 3
    else:
        colour = False if channels == 1 else None
    source = str(summary.get("spacing_source") or photo.get("spacing_source") or "")
    spacing = None if source.startswith("unknown") else sorted(round(float(s), 6) for s in image.spacing)
    low, high = _percentiles(image.array)
    return {"modality": summary.get("Modality"), "photometric": photometric, "photo": bool(photo),
            "colour": colour, "channels": channels, "spatial_dims": 2 if image.spatial_shape[2] == 1 else 3,
            "spacing": spacing, "p1": low, "p99": high}


def _percentiles(array: np.ndarray) -> tuple[float | None, float | None]:
    flat = np.asarray(array).reshape(-1)
    flat = flat[:: max(1, flat.size // SAMPLE_VALUES)]
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    if flat.size == 0 or flat.dtype.kind not in "biuf":
        return None, None
    if flat.dtype.kind == "b":
        flat = flat.astype(np.uint8)
    low, high = np.percentile(flat, (1.0, 99.0))
    return float(low), float(high)


def training_expectations(images: Iterable[Image]) -> dict[str, Any]:
    """The expectations a checkpoint keeps: the profile of every training image, summarised."""
    profiles = [profile(image) for image in images]
    if not profiles:
        return {}

    def same(key: str) -> Any:
        values = {p[key] for p in profiles}
        return values.pop() if len(values) == 1 else None

    def seen(key: str) -> list[str] | None:
        values = {str(p[key]) for p in profiles if p[key]}
        # a modality counts only when every training image states it: a mixed set says nothing
        return sorted(values) if values and all(p[key] for p in profiles) else None

    spacings = [p["spacing"] for p in profiles if p["spacing"] is not None]
    lows = [p["p1"] for p in profiles if p["p1"] is not None]
    highs = [p["p99"] for p in profiles if p["p99"] is not None]
    return {
        "format": FORMAT, "source": "training", "cases": len(profiles),
        "modality": seen("modality"), "photometric": seen("photometric"), "colour": same("colour"),
        "channels": same("channels"), "spatial_dims": same("spatial_dims"),
        "spacing": {"min": [round(float(v), 6) for v in np.min(spacings, axis=0)],
                    "max": [round(float(v), 6) for v in np.max(spacings, axis=0)]} if spacings else None,
        "intensity": {"p1": [min(lows), max(lows)], "p99": [min(highs), max(highs)]} if lows and highs else None,
    }


def bundle_expectations(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a MONAI bundle's ``network_data_format.inputs`` declares (None when it declares nothing)."""
    inputs = (metadata.get("network_data_format") or {}).get("inputs") or {}
    declared = dict(inputs.get("image") or next(iter(inputs.values()), {}))
    if not declared:
        return None
    modality = str(declared.get("modality") or "").strip()
    rgb = str(declared.get("format") or "").upper() == "RGB"
    shape = declared.get("spatial_shape")
    channels = declared.get("num_channels")
    medical = modality.upper() not in ("", "REGULAR", "NONE", "UNKNOWN")
    return {
        "format": FORMAT, "source": "bundle",
        "modality": [modality.upper()] if medical else None,
        "colour": True if rgb else (False if medical and channels == 1 else None),
        "channels": int(channels) if isinstance(channels, int) else None,
        "channel_names": [str(v) for v in (declared.get("channel_def") or {}).values()],
        "spatial_dims": len(shape) if isinstance(shape, list) and len(shape) in (2, 3) else None,
        "hounsfield": modality.upper() == "CT",
    }


def model_expectations(config: Mapping[str, Any], stored: Mapping[str, Any] | None,
                       plugin: Any = None) -> dict[str, Any] | None:
    """A loaded model's expectations: a bundle's declaration (its metadata is in ``config``), else those the
    checkpoint stored at training time, else the plugin's own ``expects`` (a pretrained plugin's); None when
    nothing is known (an older checkpoint: not checked)."""
    metadata = config.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("network_data_format"):
        return bundle_expectations(metadata)
    if stored:
        return dict(stored)
    declared = getattr(plugin, "expects", None)
    return dict(declared) if isinstance(declared, Mapping) else None


def assess(expects: Mapping[str, Any] | None, image: Image) -> list[Finding]:
    """How ``image`` does not fit a model with expectations ``expects``: refusals first, then warnings."""
    if not expects:
        return []
    given = profile(image)
    findings = [*_shape_findings(expects, given), *_kind_findings(expects, given),
                *_range_findings(expects, given)]
    return sorted(findings, key=lambda finding: finding.level != "refuse")


def _shape_findings(expects: Mapping[str, Any], given: dict[str, Any]) -> list[Finding]:
    found = []
    dims = expects.get("spatial_dims")
    if dims in (2, 3) and given["spatial_dims"] != dims:
        kind = "a 2-D image" if given["spatial_dims"] == 2 else "a 3-D volume"
        found.append(Finding("refuse", "dims", f"is {kind} but the model takes {dims}-D inputs"))
    channels = expects.get("channels")
    if isinstance(channels, int) and given["channels"] != channels:
        names = ", ".join(expects.get("channel_names") or [])
        what = f"{channels} channel(s){f' ({names})' if names else ''}"
        if {channels, given["channels"]} == {1, 3}:  # colour ↔ grey: the runner converts; said below if known
            if given["colour"] is None or expects.get("colour") is None:
                found.append(Finding("warn", "channels", f"has {given['channels']} channels; the model was made "
                                                         f"for {what}"))
        else:
            found.append(Finding("refuse", "channels", f"has {given['channels']} channel(s) but the model "
                                                       f"expects {what}"))
    return found


def _kind(modalities: list[str] | None, photometric: list[str] | None, colour: Any) -> str:
    """How a model's training images are named in a message: ``greyscale CR radiographs (MONOCHROME1)``."""
    shade = {True: "colour ", False: "greyscale "}.get(colour, "")
    if modalities:
        noun = "radiographs" if set(modalities) <= RADIOGRAPH else "images"
        text = f"{shade}{'/'.join(modalities)} {noun}"
    else:
        text = f"{shade}images"
    return text + (f" ({'/'.join(photometric)})" if photometric else "")


def _kind_findings(expects: Mapping[str, Any], given: dict[str, Any]) -> list[Finding]:
    modalities = expects.get("modality")
    trained = _kind(modalities, expects.get("photometric"), expects.get("colour"))
    colour = expects.get("colour")
    if colour is not None and given["colour"] is not None and bool(given["colour"]) != bool(colour):
        what = ("a colour photograph" if given["photo"] else "a colour image") if given["colour"] else \
            f"a greyscale {given['modality'] + ' ' if given['modality'] else ''}image"
        return [Finding("warn", "colour", f"{what} given to a model trained on {trained}: its answer may mean "
                                          "nothing")]
    if modalities and given["modality"]:
        wanted = {("radiograph" if m in RADIOGRAPH else m) for m in modalities}
        if ("radiograph" if given["modality"] in RADIOGRAPH else given["modality"]) not in wanted:
            return [Finding("warn", "modality", f"a {given['modality']} image given to a model trained on "
                                                f"{trained}: its answer may mean nothing")]
        return []
    if modalities and given["photo"]:
        return [Finding("warn", "modality", f"a photograph given to a model trained on {trained}: its answer "
                                            "may mean nothing")]
    return []


def _range_findings(expects: Mapping[str, Any], given: dict[str, Any]) -> list[Finding]:
    found = []
    spacing = expects.get("spacing")
    if spacing and given["spacing"] is not None:
        low, high = spacing["min"], spacing["max"]
        if any(v < lo / SPACING_TOLERANCE or v > hi * SPACING_TOLERANCE
               for v, lo, hi in zip(given["spacing"], low, high, strict=False)):
            found.append(Finding("warn", "spacing", f"voxel spacing {_mm(given['spacing'])} mm is far from "
                                                    f"training's ({_mm(low)} to {_mm(high)} mm)"))
    intensity = expects.get("intensity")
    if intensity and given["p1"] is not None:
        (low_1, high_1), (low_99, high_99) = intensity["p1"], intensity["p99"]
        margin = INTENSITY_TOLERANCE * max(high_99 - low_1, 1e-6)
        if not (low_1 - margin <= given["p1"] <= high_1 + margin and
                low_99 - margin <= given["p99"] <= high_99 + margin):
            found.append(Finding("warn", "intensity", f"intensities (1st–99th percentile {_value(given['p1'])} "
                                                      f"to {_value(given['p99'])}) are unlike training's "
                                                      f"({_value(low_1)} to {_value(high_99)})"))
    elif expects.get("hounsfield") and not given["modality"] and given["p1"] is not None:
        minimum = given["p1"]
        if minimum >= -100:
            found.append(Finding("warn", "intensity", "the model was trained on CT (Hounsfield units) but this "
                                                      "image has almost no value below -100 (no air): is it CT?"))
    return found


def _mm(values: Iterable[float]) -> str:
    return "×".join(f"{v:.3g}" for v in values)


def _value(value: float) -> str:
    return f"{value:.4g}"


def check_fit(expects: Mapping[str, Any] | None, image: Image) -> list[str]:
    """Refuse ``image`` (:class:`InputError` naming its file) where the model cannot run it; warn once per
    finding (a :class:`MitkWarning`: one line on stderr) where it runs but may not fit. Returns the warnings,
    for the case's record (``"fit"``)."""
    findings = assess(expects, image)
    refusals = [finding for finding in findings if finding.level == "refuse"]
    if refusals:
        raise InputError(refusals[0].message, image.path)
    messages = [finding.message for finding in findings]
    for message in messages:
        # once per image, not once per process: a fresh registry keeps the default filter from deduplicating
        warnings.warn_explicit(MitkWarning(f"{image.name}: {message}"), MitkWarning, __file__, 0, registry={})
    return messages
