"""``mitk preview IMAGE LABELS``: any label map over its image, with a legend that stays readable for an atlas."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke, load
from PIL import Image as Picture

from mitk.preview import label_colour

DATA = Path(__file__).resolve().parent / "data"
pytest.importorskip("matplotlib")


@pytest.fixture
def atlas(tmp_path: Path) -> Path:
    """116 parcels of the real CT's body (as many labels as the AAL atlas): the body cut into 4 × 29 blocks."""
    image = load(DATA / "lung1_image.nii.gz")
    body = np.asarray(image.dataobj) > -300
    rows = np.digitize(np.arange(body.shape[0]), np.linspace(0, body.shape[0], 5)[1:-1])
    columns = np.digitize(np.arange(body.shape[1]), np.linspace(0, body.shape[1], 30)[1:-1])
    parcels = (rows[:, None] * 29 + columns[None, :] + 1)[:, :, None] * body
    path = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(parcels.astype(np.int16), image.affine), path)
    return path


def test_an_atlas_of_116_labels_gets_a_legend_entry_and_a_distinct_colour_each(tmp_path: Path, atlas: Path
                                                                               ) -> None:
    names = tmp_path / "atlas.txt"
    names.write_text("".join(f"{value} Region_{value}_with_a_long_atlas_name\n" for value in range(1, 117)))
    one = tmp_path / "one.png"
    code, _, err = invoke(["preview", str(DATA / "lung1_image.nii.gz"), str(DATA / "lung1_label.nii.gz"),
                           "-o", str(one)])
    assert code == 0, err
    code, _, err = invoke(["preview", str(DATA / "lung1_image.nii.gz"), str(atlas), "-o",
                           str(tmp_path / "atlas.png"), "--names", str(names)])
    assert code == 0, err
    assert "116 label(s)" in err
    small, large = (np.asarray(Picture.open(path).convert("RGB")) for path in (one, tmp_path / "atlas.png"))
    assert small.shape[1] == large.shape[1] and large.shape[0] > small.shape[0] + 300  # the legend has rows
    colours = np.array([label_colour(value) for value in range(1, 117)]) * 255
    assert len({tuple(np.round(colour).astype(int)) for colour in colours}) == 116
    nearest = min(float(np.abs(colours[a] - colours[b]).max()) for a, b in itertools.combinations(range(116), 2)
                  if abs(a - b) <= 3)
    assert nearest > 40  # neighbouring label values never look alike
    legend = large[-(large.shape[0] - small.shape[0]) - 40:]
    found = sum(np.any(np.all(np.abs(legend.astype(int) - colour.astype(int)) <= 2, axis=-1)) for colour in colours)
    assert found >= 110


def test_json_names_and_refusals(tmp_path: Path) -> None:
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"1": "lesion"}))
    image, labels = str(DATA / "lung1_image.nii.gz"), str(DATA / "lung1_label.nii.gz")
    code, _, err = invoke(["preview", image, labels, "-o", str(tmp_path / "a.png"), "--names", str(names)])
    assert code == 0, err
    code, _, err = invoke(["preview", image, labels, "-o", str(tmp_path / "a.png")])
    assert code != 0 and "exists" in err
    code, _, err = invoke(["preview", image, str(DATA / "brain1_label.nii.gz"), "-o", str(tmp_path / "b.png")])
    assert code == 1 and "not on the image's grid" in err and "brain1_label" in err
    assert not (tmp_path / "b.png").exists()
    code, _, err = invoke(["preview", image, labels, "-o", str(tmp_path / "c.jpg")])
    assert code == 2 and ".png" in err
    code, _, err = invoke(["preview", image, image, "-o", str(tmp_path / "d.png")])
    assert code == 1 and "not a label map" in err and "distinct values" in err  # a CT holds integers too


def test_preview_imports_neither_torch_nor_monai(tmp_path: Path) -> None:
    from test_startup import imported_heavy_modules

    assert imported_heavy_modules(tmp_path, "-q", "preview", str(DATA / "lung1_image.nii.gz"),
                                  str(DATA / "lung1_label.nii.gz"), "-o", str(tmp_path / "p.png")) == []
