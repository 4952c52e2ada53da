"""Training data: datalists (Medical Segmentation Decathlon JSON or nnU-Net-style folders) and case loading.

A *datalist* is two lists of cases, ``{"image": path or [paths], "label": path}``, one for training and
one for validation. Images are read with mitk's own readers, so a case may be NIfTI or DICOM, and turned
into channel-first MONAI ``MetaTensor`` objects carrying their RAS affine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

from mitk.errors import GeometryError, InputError
from mitk.image import Image
from mitk.io.atomic import split_suffix
from mitk.io.nifti import is_nifti
from mitk.io.reader import load_image, require_volume
from mitk.runner.tensors import to_meta_tensor

VALIDATION_FRACTION = 0.2
AFFINE_TOLERANCE_MM = 1e-3
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class Datalist:
    """Training and validation cases, with label names when the datalist gives them."""

    source: Path
    training: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    labels: dict[int, str] | None = None
    held_out: bool = False
    """True when the validation cases were held out of the training list (no validation list given)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"source": str(self.source), "training_cases": len(self.training),
                "validation_cases": len(self.validation), "held_out": self.held_out}


def case_name(path: str | Path) -> str:
    """A case's name from its image file: the stem without the nnU-Net ``_0000`` channel suffix."""
    stem = split_suffix(Path(path))[0]
    match = _CHANNEL_SUFFIX.match(stem)
    return match["case"] if match else stem


def read_datalist(source: str | Path, seed: int = 0, validation_fraction: float = VALIDATION_FRACTION
                  ) -> Datalist:
    """Read a Decathlon datalist JSON, or a folder with ``imagesTr/`` and ``labelsTr/`` (or a ``dataset.json``).

    Without a ``validation`` list, a seeded ``validation_fraction`` of the training cases (at least one)
    is held out, keeping the cases of a ``group`` (or ``patient``) together.
    """
    source = Path(source)
    if not source.exists():
        raise InputError("no such datalist file or folder", source)
    if source.is_dir():
        if (source / "dataset.json").is_file() and _has_training_list(source / "dataset.json"):
            datalist = _read_decathlon(source / "dataset.json")
        else:
            datalist = _read_folder(source)
    else:
        datalist = _read_decathlon(source)
    for case in datalist.training + datalist.validation:
        check_case_paths(case, datalist.source)
    if not datalist.validation:
        datalist.training, datalist.validation = hold_out(datalist.training, seed, validation_fraction,
                                                          datalist.source)
        datalist.held_out = True
    else:
        from mitk.training.splits import warn_shared_groups

        warn_shared_groups(datalist.training, datalist.validation, datalist.source)
    return datalist


def hold_out(cases: list[dict[str, Any]], seed: int, fraction: float, source: Path
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split ``cases`` into (training, validation) with a seeded shuffle; at least one of each. Cases that name a
    ``group`` or ``patient`` stay together (:mod:`mitk.training.splits`)."""
    from mitk.training.splits import split_by_groups

    return split_by_groups(cases, seed, fraction, source)


def _has_training_list(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")).get("training"), list)
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def read_datalist_document(path: Path) -> dict[str, Any]:
    """A datalist JSON's document; one-line errors for an unreadable file or a missing ``training`` list."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"not a readable datalist JSON ({error})", path) from None
    except RecursionError:
        raise InputError("not a readable datalist JSON (nested too deeply)", path) from None
    if not isinstance(document, dict) or not isinstance(document.get("training"), list):
        raise InputError('datalist JSON needs a "training" list of {"image": ..., "label": ...}', path)
    return document


def _read_decathlon(path: Path) -> Datalist:
    from monai.data import load_decathlon_datalist

    document = read_datalist_document(path)
    lists: dict[str, list[dict[str, Any]]] = {}
    for key in ("training", "validation"):
        if key not in document:
            lists[key] = []
            continue
        try:
            lists[key] = load_decathlon_datalist(path, is_segmentation=True, data_list_key=key)
        except (TypeError, ValueError) as error:
            raise InputError(f"bad {key!r} list in datalist ({error})", path) from None
    return Datalist(source=path, training=lists["training"], validation=lists["validation"],
                    labels=_label_names(document.get("labels"), path))


def _label_names(raw: Any, path: Path) -> dict[int, str] | None:
    """MSD ``{"0": "background"}`` or nnU-Net v2 ``{"background": 0}`` label names."""
    if not raw:
        return None
    if not isinstance(raw, dict):
        raise InputError('"labels" must be an object of label value → name', path)
    try:
        if all(isinstance(v, int) for v in raw.values()):  # nnU-Net v2: name → value
            return {int(v): str(k) for k, v in raw.items()}
        return {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise InputError(f'"labels" keys must be label values, got {list(raw)}', path) from None


def _entries(folder: Path) -> list[Path]:
    """Image entries of a folder: NIfTI files, DICOM files or zips, and DICOM series folders."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")
                  and (p.is_dir() or is_nifti(p) or p.suffix.lower() in (".dcm", ".zip")))


def _read_folder(folder: Path) -> Datalist:
    images_dir, labels_dir = folder / "imagesTr", folder / "labelsTr"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise InputError("a training folder needs imagesTr/ and labelsTr/ (or give a datalist .json)", folder)
    channels: dict[str, list[Path]] = {}
    for path in _entries(images_dir):
        channels.setdefault(case_name(path), []).append(path)
    labels = {split_suffix(p)[0]: p for p in _entries(labels_dir)}
    missing = sorted(set(channels) - set(labels))
    if missing:
        raise InputError(f"no label in labelsTr/ for {len(missing)} image(s), e.g. {missing[0]!r}", images_dir)
    cases = []
    for name in sorted(channels):
        paths = [str(p) for p in channels[name]]
        cases.append({"image": paths[0] if len(paths) == 1 else paths, "label": str(labels[name]),
                      "name": name})
    if not cases:
        raise InputError("no images in imagesTr/", images_dir)
    names = None
    if (folder / "dataset.json").is_file():
        try:
            names = _label_names(json.loads((folder / "dataset.json").read_text("utf-8")).get("labels"),
                                 folder / "dataset.json")
        except (OSError, ValueError, AttributeError):
            names = None
    return Datalist(source=folder, training=cases, validation=[], labels=names)


def check_case_paths(case: dict[str, Any], source: Path) -> None:
    """Refuse a case without an image and a label, or whose files are missing; name it if unnamed."""
    if not isinstance(case, dict) or "image" not in case or "label" not in case:
        raise InputError(f"every case needs an image and a label, got {case!r}", source)
    images = case["image"] if isinstance(case["image"], list) else [case["image"]]
    for path in [*images, case["label"]]:
        if not Path(path).exists():
            raise InputError(f"listed in {source.name} but missing", path)
    case.setdefault("name", case_name(images[0]))


# -------------------------------------------------------------------------------------------------
# Loading cases into MetaTensors
# -------------------------------------------------------------------------------------------------


def read_case_image(paths: str | list[str]) -> Image:
    """Read one case's image; a list of paths (one per channel) is stacked on a shared grid."""
    paths = paths if isinstance(paths, list) else [paths]
    images = [require_volume(load_image(p), channels=True) for p in paths]
    first = images[0]
    for other in images[1:]:
        _require_same_grid(other, first, "channel image")
    if len(images) == 1:
        return first
    arrays = [np.asarray(i.array, dtype=np.float32) for i in images]
    stacked = np.concatenate([a if a.ndim == 4 else a[..., None] for a in arrays], axis=-1)
    return Image(array=stacked, affine=first.affine, path=first.path)


def read_case_input(paths: str | list[str], in_channels: int) -> Image:
    """:func:`read_case_image`, refusing an image whose channel count is not the network's ``in_channels``."""
    image = read_case_image(paths)
    if channel_count(image) != in_channels:
        raise InputError(f"has {channel_count(image)} channel(s) but the model takes {in_channels}", image.path)
    return image


def channel_count(image: Image) -> int:
    return int(image.array.shape[3]) if image.array.ndim == 4 else 1


def _require_same_grid(image: Image, reference: Image, what: str) -> None:
    if image.spatial_shape != reference.spatial_shape:
        raise GeometryError(f"{what} shape {image.spatial_shape} differs from the image's "
                            f"{reference.spatial_shape} ({reference.name})", image.path)
    difference = float(np.max(np.abs(image.affine - reference.affine)))
    if difference > AFFINE_TOLERANCE_MM:
        raise GeometryError(f"{what} is not on the image's grid ({reference.name}): affines differ by up to "
                            f"{difference:.4g} mm", image.path)


class LoadCased(MapTransform):
    """Read ``image`` and ``label`` paths into MetaTensors, checking the label against the image.

    Deterministic, so a ``CacheDataset`` caches it together with the plugin's preprocessing.
    """

    def __init__(self, num_labels: int, in_channels: int) -> None:
        super().__init__(keys=("image", "label"))
        self.num_labels = num_labels
        self.in_channels = in_channels

    def __call__(self, case: dict[str, Any]) -> dict[str, Any]:
        image = read_case_input(case["image"], self.in_channels)
        label = require_volume(load_image(case["label"]))
        _require_same_grid(label, image, "label")
        values = np.unique(np.asarray(label.array))
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise InputError("label map holds non-integer values (was it resampled with interpolation?)",
                             label.path)
        if values.min() < 0 or values.max() >= self.num_labels:
            raise InputError(f"label values {values.min():g}..{values.max():g} fall outside the "
                             f"{self.num_labels} labels 0..{self.num_labels - 1} (name them with --labels)",
                             label.path)
        return {"image": to_meta_tensor(image), "label": to_meta_tensor(label),
                "name": case.get("name") or case_name(image.path or "case")}


def first_case_channels(datalist: Datalist) -> int:
    """The channel count of the first training image (the network's ``in_channels``)."""
    return channel_count(read_case_image(datalist.training[0]["image"]))


def pipeline(loader: Callable[[dict[str, Any]], dict[str, Any]], transform: Any) -> Any:
    """``Compose([loader, *transform])`` flattened, so that caching stops at the first random step."""
    from monai.transforms import Compose

    steps = list(transform.flatten().transforms) if isinstance(transform, Compose) else [transform]
    return Compose([loader, *steps])


def make_dataset(cases: list[dict[str, Any]], transform: Any, cache: bool, workers: int = 1) -> Any:
    """A ``CacheDataset`` (deterministic steps computed once) or a plain ``Dataset``."""
    from monai.data import CacheDataset, Dataset

    if cache:
        return CacheDataset(cases, transform, cache_rate=1.0, num_workers=max(1, workers), progress=False)
    return Dataset(cases, transform)


def tensor_of(value: Any) -> torch.Tensor:
    """A plain tensor (MetaTensor metadata dropped), for the network."""
    return value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
