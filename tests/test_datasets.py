"""Classification data as people keep it: class-per-folder image sets, a group/patient column that keeps a
patient's images in one split, and one radiograph under four encodings (pydicom-data's RG1 as _UNCR, _J2KR,
_J2KI, _UNCI) found and kept together."""

from __future__ import annotations

import csv
import json
import logging
import random
import shutil
from pathlib import Path

import pytest
from helpers import invoke

from mitk.training.data import hold_out

TINY_DENSENET = ["--set", "image_size=[32,32]", "--set", "network.block_config=[2,2]",
                 "--set", "network.init_features=8", "--set", "network.growth_rate=8"]
RG1 = ["RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG1_UNCI.dcm"]

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def dicom_file(name: str) -> str:
    pydicom_data = pytest.importorskip("pydicom.data")
    try:
        return str(pydicom_data.get_testdata_file(name))
    except (ValueError, OSError, TypeError):
        pytest.skip(f"{name} needs pydicom-data")


def test_hold_out_keeps_a_patient_together_and_is_unchanged_without_groups() -> None:
    cases = [{"image": f"c{i}.nii.gz", "label": f"l{i}.nii.gz", "patient": f"p{i // 3}"} for i in range(15)]
    for seed in range(20):
        training, validation = hold_out(cases, seed, 0.2, Path("data.json"))
        assert {c["patient"] for c in training}.isdisjoint({c["patient"] for c in validation})
        assert len(validation) == 3 and len(training) == 12  # one patient of five
    plain = [{"image": f"c{i}.nii.gz"} for i in range(10)]
    for seed in range(5):  # the seeded shuffle of before: the first round(0.2 n) of a shuffled order held out
        order = list(range(10))
        random.Random(seed).shuffle(order)
        assert [c["image"] for c in hold_out(plain, seed, 0.2, Path("x"))[1]] == \
            [f"c{i}.nii.gz" for i in sorted(order[:2])]
    with pytest.raises(Exception, match="two groups"):
        hold_out([{**c, "patient": "one"} for c in cases], 0, 0.2, Path("data.json"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("nilearn")
    from mitk.sample import make_classification_sample

    folder = tmp_path_factory.mktemp("sample")
    make_classification_sample(folder, cases=24, size=32, seed=0, dims=2)
    return folder


def test_train_classify_reads_an_image_folder(sample: Path, tmp_path: Path) -> None:
    """train/<class>/ and val/<class>/ of real MNI152 slices; the split is the folders'."""
    dataset = tmp_path / "xray"
    with (sample / "train.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        side = "train" if row["split"] == "training" else "val"
        target = dataset / side / row["label"] / Path(row["image"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample / row["image"], target)
    run = tmp_path / "run"
    code, stdout, stderr = invoke(["train", "classify", "--plugin", "densenet121", "--data", str(dataset), "-d",
                                   str(run), "--epochs", "1", "--batch-size", "8", "--json", *TINY_DENSENET])
    assert code == 0, stderr
    split = json.loads((run / "split.json").read_text())
    assert not split["held_out"]
    assert sorted(Path(c["image"]).name for c in split["validation"]) == \
        sorted(Path(r["image"]).name for r in rows if r["split"] == "validation")
    assert {c["label"] for c in split["training"]} == {r["label"] for r in rows}
    assert json.loads(stdout)["best_metric"]["name"] == "mean_auc"


def test_train_classify_refuses_a_folder_of_loose_files(tmp_path: Path) -> None:
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "a.png").write_bytes(b"")
    code, _, stderr = invoke(["train", "classify", "--plugin", "densenet121", "--data", str(tmp_path / "loose"),
                              "-d", str(tmp_path / "run")])
    assert code != 0 and "train/<class>/" in stderr and "Traceback" not in stderr


def test_four_encodings_of_one_radiograph_stay_in_one_split(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    from mitk.tasks.classify import recipe
    from mitk.tasks.classify.recipe import ClassificationRecipe, stratified_hold_out
    from mitk.training.splits import same_content_groups

    read_case_image = functools.lru_cache(recipe.read_case_image)  # each radiograph decoded once in this test
    monkeypatch.setattr(recipe, "read_case_image", read_case_image)

    chest = [dicom_file(name) for name in RG1]
    others = {"chest": [dicom_file("CT_small.dcm")], "ankle": [dicom_file("RG3_UNCR.dcm"), dicom_file("RG3_J2KI.dcm"),
                                                               dicom_file("MR_small.dcm")]}
    labels = tmp_path / "labels.csv"
    lines = ["image,label", *(f"{path},chest" for path in chest),
             *(f"{path},{name}" for name, paths in others.items() for path in paths)]
    labels.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="mitk.training"):
        datalist = ClassificationRecipe().read_datalist(labels, seed=0, validation_fraction=0.2)
    assert "6 images show the same picture" in caplog.text  # RG1 ×4 and RG3 ×2
    sides = {path: side for side, cases in (("t", datalist.training), ("v", datalist.validation))
             for case in cases for path in [case["image"]]}
    assert len({sides[path] for path in chest}) == 1
    cases = datalist.training + datalist.validation
    groups = same_content_groups(cases, lambda image: read_case_image(image).array, labels)
    for seed in range(1, 10):
        training, _ = stratified_hold_out(cases, seed, 0.2, labels, groups)
        assert len({"t" if c in training else "v" for c in cases if c["image"] in chest}) == 1


def test_a_given_split_that_shares_a_picture_is_warned_about(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    from mitk.tasks.classify.recipe import ClassificationRecipe

    labels = tmp_path / "labels.csv"
    labels.write_text("image,label,split\n"
                      f"{dicom_file('RG1_UNCR.dcm')},chest,training\n{dicom_file('CT_small.dcm')},ct,training\n"
                      f"{dicom_file('RG1_J2KI.dcm')},chest,validation\n{dicom_file('MR_small.dcm')},ct,validation\n")
    with caplog.at_level(logging.WARNING, logger="mitk.training"):
        ClassificationRecipe().read_datalist(labels, seed=0, validation_fraction=0.2)
    assert "in both the training and the validation list" in caplog.text
    caplog.clear()
    grouped = tmp_path / "grouped.csv"  # with a patient column the user has said what belongs together
    grouped.write_text("image,label,patient\n" + "".join(
        f"{dicom_file(name)},{label},{patient}\n" for name, label, patient in
        (("RG1_UNCR.dcm", "chest", "a"), ("RG1_J2KI.dcm", "chest", "a"), ("RG3_UNCR.dcm", "chest", "b"),
         ("CT_small.dcm", "ct", "c"), ("MR_small.dcm", "ct", "d"))))
    with caplog.at_level(logging.WARNING, logger="mitk.training"):
        datalist = ClassificationRecipe().read_datalist(grouped, seed=3, validation_fraction=0.5)
    assert "same picture" not in caplog.text
    assert {c["patient"] for c in datalist.training}.isdisjoint({c["patient"] for c in datalist.validation})
