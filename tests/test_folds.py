"""Cross-validation folds: ``mitk train TASK --folds K`` / ``--fold I`` (:mod:`mitk.training.folds`).

The split keeps a group together, spreads classes over the folds, is the same in every job of an array, and
finds the same picture saved under two names when the data names no groups. Trained on real MNI152 slices
(``mitk sample classify``), one epoch of a tiny DenseNet per fold."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke

from mitk.training.data import Datalist
from mitk.training.folds import assign_folds, fold_split

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def test_groups_stay_in_one_fold_and_classes_spread() -> None:
    cases = [{"image": f"{n}.nii.gz", "label": "ab"[n % 2], "patient": f"p{n // 3}"} for n in range(18)]
    groups = [c["patient"] for c in cases]
    assigned = assign_folds(cases, 3, seed=0, groups=groups, stratum=lambda case: case["label"])
    assert assigned == assign_folds(cases, 3, seed=0, groups=groups, stratum=lambda case: case["label"])
    for patient in set(groups):
        assert len({f for f, g in zip(assigned, groups, strict=True) if g == patient}) == 1
    assert sorted(np.bincount(assigned).tolist()) == [6, 6, 6]
    plain = [{"image": f"{n}.png", "label": "ab"[n % 2]} for n in range(10)]
    spread = assign_folds(plain, 2, seed=1, groups=[None] * 10, stratum=lambda case: case["label"])
    for fold in (0, 1):  # each class split 3/2 or 2/3, never 5/0
        assert {sum(1 for f, c in zip(spread, plain, strict=True) if f == fold and c["label"] == k)
                for k in "ab"} <= {2, 3}
    with pytest.raises(Exception, match="cannot make 4 folds"):
        assign_folds(cases[:6], 4, seed=0, groups=groups[:6])


def test_the_same_picture_under_two_names_is_warned_and_kept_in_one_fold(brain_mr: Path, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    import nibabel as nib

    image = nib.load(brain_mr)
    array = np.asarray(image.dataobj)[::4, ::4, :]
    paths = []
    for n in range(6):
        path = tmp_path / f"case{n}.nii.gz"
        nib.Nifti1Image(array[..., 4 * n: 4 * n + 4], image.affine).to_filename(path)
        paths.append(path)
    shutil.copy(paths[0], tmp_path / "copy.nii.gz")  # the same pixels, another name
    cases = [{"image": str(p), "label": str(p)} for p in [*paths, tmp_path / "copy.nii.gz"]]
    datalist = Datalist(source=tmp_path / "dataset.json", training=cases, validation=[])
    with caplog.at_level(logging.WARNING, logger="mitk.training"):
        splits, document = fold_split(datalist, 3, seed=0)
    assert "show the same picture" in caplog.text
    assert document["grouping"] == "same-content"
    together = [fold for fold, ids in enumerate(document["cases"]) if {"case0.nii.gz", "copy.nii.gz"} <= set(ids)]
    assert len(together) == 1
    assert sorted(len(s.validation) for s in splits) == [2, 2, 3]
    assert all(not set(map(str, (c["image"] for c in s.training))) & set(str(c["image"]) for c in s.validation)
               for s in splits)


def test_the_documented_fold_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/precision.md's example, with the checks a job array needs between its commands."""
    pytest.importorskip("nilearn")
    from test_boxes_docs import ROOT, docs_commands

    sample_command, fold_0, fold_1, classify, crossval = docs_commands("precision.md", "precision-folds")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    for command in (sample_command, fold_1):  # the jobs of an array run in any order
        code, _, stderr = invoke(command)
        assert code == 0, stderr
    assert (run / "fold_1" / "best.safetensors").is_file() and not (run / "fold_0").exists()
    document = json.loads((run / "folds.json").read_text())
    assert document["folds"] == 2 and document["seed"] == 0 and len(document["cases"]) == 2
    split = json.loads((run / "fold_1" / "split.json").read_text())
    assert sorted(Path(c["image"]).name for c in split["validation"]) == \
        sorted(Path(name).name for name in document["cases"][1])
    code, _, stderr = invoke(classify)
    assert code != 0 and "fold_0" in stderr  # an unfinished run is not an ensemble
    code, _, stderr = invoke([*fold_0, "--seed", "1"])
    assert code != 0 and "another cross-validation split" in stderr
    code, stdout, stderr = invoke([*fold_0, "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["runs"][0]["output_dir"].endswith("fold_0")
    assert json.loads((run / "folds.json").read_text()) == document  # the second job drew the same split
    code, stdout, stderr = invoke([*classify, "--json"])
    assert code == 0, stderr
    records = json.loads(stdout)["cases"]
    assert len(records) == 2
    assert all(r["passes"] == {"members": 2, "flips": 2, "total": 4} for r in records)
    assert all(r["uncertainty"]["passes"] == 4 and r["uncertainty"]["mutual_information"] >= 0 for r in records)
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert list(rows[0])[-2:] == ["predictive_entropy", "mutual_information"]
    assert all(float(row["predictive_entropy"]) > 0 for row in rows)
    code, stdout, stderr = invoke([*crossval, "--json", "--csv", "crossval.csv"])
    assert code == 0, stderr
    document = json.loads(stdout)
    pooled = document["out_of_fold"]
    cases = sum(len(fold) for fold in json.loads((run / "folds.json").read_text())["cases"])
    assert pooled["task"] == "classify" and pooled["cases"] == pooled["scores"]["cases"] == cases
    assert pooled["scores"]["uncertainty"] == "predictive_entropy"
    assert 0 <= pooled["scores"]["ece"] <= 1 and 0 <= pooled["scores"]["accuracy"] <= 1
    fold_accuracy = [f["metrics"]["accuracy"] * f["validation_cases"] for f in document["folds"]]
    assert pooled["scores"]["accuracy"] == pytest.approx(sum(fold_accuracy) / cases)  # each case by its own fold
    pooled_rows = [r for r in csv.DictReader((tmp_path / "crossval.csv").open()) if r["fold"] == "pooled"]
    assert {"macro_auc", "ece", "accuracy"} <= {r["metric"] for r in pooled_rows}
    page = (ROOT / "docs" / "precision.md").read_text(encoding="utf-8")
    block = page.split("<!-- docs-test: precision-python -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/precision.md", "exec"), namespace)  # the documented example
    assert namespace["result"].passes["total"] == 4  # type: ignore[attr-defined]


def test_fold_options_are_checked_first(tmp_path: Path) -> None:
    code, _, stderr = invoke(["train", "classify", "-d", str(tmp_path / "run"), "--fold", "1"])
    assert code == 2 and "--fold I needs --folds K" in stderr
    code, _, stderr = invoke(["train", "classify", "-d", str(tmp_path / "run"), "--folds", "2", "--fold", "2"])
    assert code == 2 and "--fold must be 0 to 1" in stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "best.safetensors").write_bytes(b"")
    code, _, stderr = invoke(["train", "classify", "-d", str(tmp_path / "other"), "--folds", "2"])
    assert code != 0 and "not a fold run" in stderr


def test_four_encodings_of_one_radiograph_land_in_one_fold(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24's leak: pydicom-data's RG1 chest radiograph as _UNCR, _J2KR, _J2KI (lossy) and _UNCI, without a
    group column, is found and dealt into one fold, with a warning; so is RG3 under two encodings."""
    import functools

    pydicom_data = pytest.importorskip("pydicom.data")
    from mitk.tasks.classify import recipe
    from mitk.tasks.classify.recipe import ClassificationRecipe

    try:
        files = {name: str(pydicom_data.get_testdata_file(name)) for name in (
            "RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG1_UNCI.dcm", "RG3_UNCR.dcm", "RG3_J2KI.dcm",
            "CT_small.dcm", "MR_small.dcm")}
    except (ValueError, OSError, TypeError):
        pytest.skip("needs pydicom-data's radiographs")
    monkeypatch.setattr(recipe, "read_case_image", functools.lru_cache(recipe.read_case_image))  # decode once
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\n" + "".join(
        f"{path},{'xr' if name.startswith('RG') else 'other'}\n" for name, path in files.items()))
    with caplog.at_level(logging.WARNING, logger="mitk.training"):
        datalist = ClassificationRecipe().read_datalist(labels, seed=0, validation_fraction=0.2)
        _, document = fold_split(datalist, 2, seed=0, stratum=ClassificationRecipe().stratum)
    assert "6 images show the same picture" in caplog.text and document["grouping"] == "same-content"
    for stem in ("RG1", "RG3"):
        holding = [fold for fold, cases in enumerate(document["cases"]) if any(stem in case for case in cases)]
        assert len(holding) == 1, (stem, document["cases"])
