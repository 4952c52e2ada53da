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
TINY_DENSENET = ["--set", "image_size=[32,32]", "--set", "network.block_config=[2,2]",
                 "--set", "network.init_features=8", "--set", "network.growth_rate=8"]


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


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("nilearn")
    from mitk.sample import make_classification_sample

    folder = tmp_path_factory.mktemp("sample")
    make_classification_sample(folder, cases=15, size=32, seed=0, dims=2)
    return folder


def train(sample: Path, run: Path, *extra: str) -> tuple[int, str, str]:
    return invoke(["train", "classify", "--plugin", "densenet121", "--data", str(sample / "train.csv"), "-d",
                   str(run), "--epochs", "1", "--batch-size", "8", "--device", "cpu", *TINY_DENSENET, *extra])


def test_fold_jobs_share_one_split_and_ensemble(sample: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, _, stderr = train(sample, run, "--folds", "2", "--fold", "1")
    assert code == 0, stderr
    assert (run / "fold_1" / "best.safetensors").is_file() and not (run / "fold_0").exists()
    document = json.loads((run / "folds.json").read_text())
    assert document["folds"] == 2 and document["seed"] == 0 and len(document["cases"]) == 2
    split = json.loads((run / "fold_1" / "split.json").read_text())
    assert sorted(Path(c["image"]).name for c in split["validation"]) == \
        sorted(Path(name).name for name in document["cases"][1])
    code, _, stderr = invoke(["classify", str(sample / "images" / "case_000.nii.gz"), "-w", str(run)])
    assert code != 0 and "fold_0" in stderr  # an unfinished run is not an ensemble
    code, _, stderr = train(sample, run, "--folds", "2", "--fold", "0", "--seed", "1")
    assert code != 0 and "another cross-validation split" in stderr
    code, stdout, stderr = train(sample, run, "--folds", "2", "--fold", "0", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["runs"][0]["output_dir"].endswith("fold_0")
    assert json.loads((run / "folds.json").read_text()) == document  # the second job drew the same split
    tests = [sample / row["image"] for row in csv.DictReader((sample / "test.csv").open())]
    table = tmp_path / "pred.csv"
    code, stdout, stderr = invoke(["classify", *map(str, tests), "-w", str(run), "--tta", "--uncertainty",
                                   "--csv", str(table), "--json"])
    assert code == 0, stderr
    records = json.loads(stdout)["cases"]
    assert all(r["passes"] == {"members": 2, "flips": 2, "total": 4} for r in records)
    assert all(r["uncertainty"]["passes"] == 4 and r["uncertainty"]["mutual_information"] >= 0 for r in records)
    rows = list(csv.DictReader(table.open()))
    assert list(rows[0])[-2:] == ["predictive_entropy", "mutual_information"]


def test_fold_options_are_checked_first(tmp_path: Path) -> None:
    code, _, stderr = invoke(["train", "classify", "-d", str(tmp_path / "run"), "--fold", "1"])
    assert code == 2 and "--fold I needs --folds K" in stderr
    code, _, stderr = invoke(["train", "classify", "-d", str(tmp_path / "run"), "--folds", "2", "--fold", "2"])
    assert code == 2 and "--fold must be 0 to 1" in stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "best.safetensors").write_bytes(b"")
    code, _, stderr = invoke(["train", "classify", "-d", str(tmp_path / "other"), "--folds", "2"])
    assert code != 0 and "not a fold run" in stderr
