"""Detection cross-validation end to end on ``mitk sample detect`` (spheres planted in the real MNI152):
``mitk train detect --folds 2 --fold I`` as a job array, the fold ensemble with ``--tta`` from the CLI and from
``mitk.load``, each fold with its own anchors, ``mitk evaluate crossval --predict`` scored as ``mitk evaluate
detect`` scores the same files, and the same scan under two names kept in one fold."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke

pytestmark = pytest.mark.usefixtures("single_threaded_torch")



@pytest.fixture(scope="module")
def fold_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """docs/precision.md's detection example up to the training: a sample and a 2-fold run trained one fold per
    command (a job array, in reverse order); the sample and the run folder."""
    from test_boxes_docs import docs_commands

    folder = tmp_path_factory.mktemp("detect_folds")
    sample_command, fold_0, fold_1, _, _ = docs_commands("precision.md", "precision-detect")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for command in (sample_command, fold_1, fold_0):
            code, _, stderr = invoke(command)
            assert code == 0, f"{command}: {stderr}"
    return folder / "boxes", folder / "boxrun"


def test_fold_ensemble_with_tta_fuses_every_member_with_its_own_settings(fold_run: tuple[Path, Path]) -> None:
    import mitk
    from mitk.tasks.detect.fusion import weighted_boxes_fusion

    sample, run = fold_run
    document = json.loads((run / "folds.json").read_text())
    assert document["folds"] == 2 and sum(len(cases) for cases in document["cases"]) == 5
    configs = [mitk.load(weights=run / f"fold_{k}").settings for k in (0, 1)]
    assert configs[0]["anchors"] != configs[1]["anchors"]  # each fold found its anchors from its own boxes
    [scan] = sorted((sample / "imagesTs").iterdir())
    ensemble = mitk.load(weights=run)
    plain = ensemble.detect(scan)
    members = [mitk.load(weights=run / f"fold_{k}").detect(scan) for k in (0, 1)]
    expected = weighted_boxes_fusion([m.boxes_voxel for m in members], [m.scores for m in members],
                                     [m.labels for m in members])
    assert plain.record()["passes"] == {"members": 2, "flips": 1, "total": 2}
    np.testing.assert_allclose(plain.boxes_voxel, expected.boxes, atol=1e-9)
    np.testing.assert_allclose(plain.scores, expected.scores, atol=1e-12)
    flipped = ensemble.detect(scan, tta=True).record()
    assert flipped["passes"] == {"members": 2, "flips": 8, "total": 16}  # 3 world axes: nnU-Net's 8 mirrorings
    assert flipped["uncertainty"]["passes"] == 16 and flipped["uncertainty"]["boxes"] == len(flipped["boxes"])
    spreads = [box["uncertainty"]["score_std"] for box in flipped["boxes"]]
    assert spreads and flipped["uncertainty"]["max_score_std"] == pytest.approx(max(spreads), abs=1e-6)
    from test_boxes_docs import docs_commands

    command = docs_commands("precision.md", "precision-detect")[3]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(sample.parent)
        code, stdout, stderr = invoke([*command, "--json"])
    assert code == 0, stderr
    [record] = json.loads(stdout)["cases"]
    assert record["passes"] == flipped["passes"] and len(record["boxes"]) == len(flipped["boxes"])
    saved = json.loads((sample.parent / "boxpred" / f"{scan.name.split('.')[0]}_boxes.json").read_text())
    assert saved["uncertainty"] == record["uncertainty"]


def test_crossval_predict_scores_the_out_of_fold_boxes_as_evaluate_detect(fold_run: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    from test_boxes_docs import docs_commands

    sample, run = fold_run
    command = docs_commands("precision.md", "precision-detect")[4]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(sample.parent)
        code, stdout, stderr = invoke(command)
        assert code == 0 and "out of fold (5 cases" in stdout, stderr
        code, stdout, stderr = invoke([*command, "--json"])
    assert code == 0, stderr
    document = json.loads(stdout)
    pooled = document["out_of_fold"]
    assert pooled["cases"] == 5 and pooled["tta"] and pooled["passes_per_case"]["flips"] == 8
    assert {"mAP", "mAR", "froc", "uncertainty_auc"} <= set(pooled["scores"])
    assert {fold["fold"] for fold in document["folds"]} == {0, 1} and "mAP" in document["summary"]
    cases = json.loads((run / "folds.json").read_text())["cases"]
    for fold, names in enumerate(cases):  # the same predictions made file by file, scored by evaluate detect
        code, _, stderr = invoke(["detect", *(str(sample / name) for name in names), "--weights",
                                  str(run / f"fold_{fold}"), "--tta", "-d", str(tmp_path / "pred")])
        assert code == 0, stderr
    code, stdout, stderr = invoke(["evaluate", "detect", "--pred", str(tmp_path / "pred"), "--ref",
                                   str(sample / "boxesTr"), "--json"])
    assert code == 0, stderr
    reference = json.loads(stdout)
    assert pooled["scores"]["reference_boxes"] > 0
    for key in ("mAP", "mAR", "AP_0.1", "AR_0.1"):
        assert pooled["scores"][key] == pytest.approx(reference[key], abs=1e-9), key
    assert pooled["scores"]["froc"] == pytest.approx(reference["froc"]["score"], abs=1e-9)


def test_the_same_scan_under_two_names_lands_in_one_fold(fold_run: tuple[Path, Path], tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    from mitk.tasks.detect.recipe import DetectionRecipe
    from mitk.training.folds import fold_split

    sample, _ = fold_run
    data = tmp_path / "data"
    shutil.copytree(sample, data)
    dataset = json.loads((data / "dataset.json").read_text())
    first = dataset["training"][0]
    shutil.copy(data / first["image"], data / "imagesTr" / "again.nii.gz")  # one scan, another file
    dataset["training"].append({**first, "image": "imagesTr/again.nii.gz"})
    (data / "dataset.json").write_text(json.dumps(dataset))
    datalist = DetectionRecipe().read_datalist(data, seed=0, validation_fraction=0.2)
    with caplog.at_level(logging.WARNING, logger="mitk.training"):
        _, document = fold_split(datalist, 2, seed=0)
    assert "show the same picture" in caplog.text and document["grouping"] == "same-content"
    pair = {Path(first["image"]).as_posix(), "imagesTr/again.nii.gz"}
    assert sum(1 for cases in document["cases"] if pair <= set(cases)) == 1
