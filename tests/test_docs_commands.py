"""Every shell command shown in docs/*.md runs, as written, in order, in an empty folder (tests/docs_pages.py).

Each page is one test: its own earlier commands make the data later ones use (``mitk sample …``); ``stage`` puts in
place only the files a user is assumed to have (real images from tests/data, pydicom's and scikit-image's files).
All pages run in one subprocess (tests/docs_driver.py), so torch and MONAI are imported once.
A command is left out only with a reason written here (``skip``), or when the test named in ``ELSEWHERE`` reads the
page itself, or when it sits in a ``<!-- docs-test: X -->`` block that another test reads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from docs_pages import ROOT, PageRun, check_pages, page_commands, plan_page, unrun_pages

DATA = ROOT / "tests" / "data"
DOCS = ROOT / "docs"

ELSEWHERE = {
    "formats.md": "test_formats_docs.py",
    "reports.md": "test_reports_docs.py",
    "deidentify.md": "test_deidentify.py",
    "pretrained-models.md": "test_bundle_docs.py",
    "serve.md": "test_serve.py",
    "precision.md": "test_folds.py",
    "calibration.md": "test_calibration_docs.py",
}
"""Pages whose every command a test runs by reading the page itself (the test file names the page)."""

NOT_HERE = {
    "pip install": "installs packages (no network in tests); the extras are installed by CI's `.[test]`",
    "torchrun": "several processes; tests/test_distributed_training.py runs 2-rank CPU training",
}
"""Command starts that are never run here, on any page, and why."""
HDBET = ("needs the mitk-hdbet plugin installed: tests/test_hdbet.py installs plugins/mitk-hdbet with pip into a "
         "private folder and runs these commands (the README's, one fold and five)")
BLOBS = ("needs the tutorial's package installed: tests/test_example_plugin.py builds plugins/mitk-example-blobs "
         "with pip into a private folder and runs `plugins list` and `detect --plugin blobs` through it")


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)


def dicom_file(name: str) -> Path:
    import pydicom.data

    return Path(pydicom.data.get_testdata_file(name))


def save_picture(array: np.ndarray, target: Path) -> None:
    from PIL import Image as Picture

    Picture.fromarray(array).save(target)


def stage_classification(folder: Path) -> None:
    import nibabel as nib
    import skimage.data

    copy(dicom_file("RG1_UNCR.dcm"), folder / "chest.dcm")
    copy(dicom_file("RG3_UNCR.dcm"), folder / "knee" / "knee.dcm")
    copy(dicom_file("RG1_UNCI.dcm"), folder / "xr.dcm")
    save_picture(skimage.data.retina()[::8, ::8], folder / "fundus.jpg")
    save_picture(skimage.data.camera()[::4, ::4], folder / "photo.png")
    volume = nib.load(DATA / "lung1_image.nii.gz")
    middle = volume.shape[2] // 2
    nib.Nifti1Image(np.asarray(volume.dataobj)[:, :, middle:middle + 1], volume.affine).to_filename(
        folder / "ct_slice.nii.gz")


def stage_detection(folder: Path) -> None:
    from dicom_factory import series_from_nifti

    copy(DATA / "brain1_image.nii.gz", folder / "scan.nii.gz")
    for case in ("brain1", "lung1"):
        copy(DATA / f"{case}_image.nii.gz", folder / "scans" / f"{case}.nii.gz")
    (folder / "tests").mkdir()
    (folder / "tests" / "data").symlink_to(DATA, target_is_directory=True)
    series_from_nifti(DATA / "brain1_image.nii.gz", folder / "dicom_series", modality="MR")


def moved(source: Path, target: Path, shift: int = 3, step: int = 1) -> None:
    """``source`` with its voxels shifted along the first axis (a misaligned follow-up); ``step`` > 1 keeps every
    step-th voxel in-plane (a coarser grid, same field of view)."""
    import nibabel as nib

    image = nib.load(source)
    array = np.roll(np.asanyarray(image.dataobj), shift, axis=0)[::step, ::step]
    affine = image.affine @ np.diag([step, step, 1, 1])
    nib.save(nib.Nifti1Image(array, affine), target)


def stage_registration(folder: Path) -> None:
    import json

    import nibabel as nib

    for source, name in (("image", ""), ("label", "_labels")):  # a 64 × 64 × 25 grid: seconds, not minutes
        moved(DATA / f"brain1_{source}.nii.gz", folder / f"fixed{name}.nii.gz", shift=0, step=2)
        moved(DATA / f"brain1_{source}.nii.gz", folder / f"moving{name}.nii.gz", shift=4, step=2)
    for name in ("fixed", "moving"):
        image = nib.load(folder / f"{name}.nii.gz")
        array = np.asanyarray(image.dataobj)
        brain = (array > np.percentile(array, 40)).astype(np.uint8)
        nib.Nifti1Image(brain, image.affine).to_filename(folder / f"{name}_brain.nii.gz")
    pair = {"fixed": "fixed.nii.gz", "moving": "moving.nii.gz", "fixed_label": "fixed_labels.nii.gz",
            "moving_label": "moving_labels.nii.gz"}
    (folder / "pairs.json").write_text(json.dumps({"labels": {"0": "background", "1": "tumour"},
                                                   "training": [pair], "validation": [pair]}))


def stage_dicom(folder: Path) -> None:
    import zipfile

    from dicom_factory import series_from_nifti

    series_from_nifti(DATA / "lung1_image.nii.gz", folder / "study" / "ct", modality="CT", series_number=1)
    series_from_nifti(DATA / "brain1_image.nii.gz", folder / "study" / "flair", modality="MR", series_number=2,
                      description="FLAIR axial")
    series_from_nifti(DATA / "nibabel" / "someones_anatomy.nii.gz", folder / "study" / "t1", modality="MR",
                      series_number=3, description="T1 axial")
    with zipfile.ZipFile(folder / "ct.zip", "w") as archive:
        for path in sorted((folder / "study" / "ct").iterdir()):
            archive.write(path, f"ct/{path.name}")


def stage_cohort(folder: Path) -> None:
    for case in ("brain1", "lung1"):
        copy(DATA / f"{case}_image.nii.gz", folder / "cohort" / f"{case}.nii.gz")
        moved(DATA / f"{case}_image.nii.gz", folder / "cohort" / f"{case}_moved.nii.gz")


def stage_readme(folder: Path) -> None:
    from dicom_factory import series_from_nifti

    copy(DATA / "brain1_image.nii.gz", folder / "scan.nii.gz")
    stage_registration(folder)
    for number in range(20):  # a cohort of 20 scans: shard 3 of 10 holds some of them
        (folder / "cohort").mkdir(exist_ok=True)
        shutil.copy(folder / "fixed.nii.gz", folder / "cohort" / f"case_{number:03d}.nii.gz")
    series_from_nifti(DATA / "lung1_image.nii.gz", folder / "dicom_folder", modality="CT")


def check_shard(folder: Path) -> None:
    """The shard's manifest lists the cases it segmented (the README's shard is not an empty one)."""
    import json

    rows = [json.loads(line) for line in (folder / "m3.jsonl").read_text().splitlines()]
    done = [row for row in rows if row.get("status") == "ok"]
    assert done and len(done) == len(rows[0]["inputs"]), f"shard 3/10 of 20 scans segmented {len(done)}: {rows}"
    assert all((folder / "out" / f"{Path(row['input']).name[:-7]}_seg.nii.gz").exists() for row in done)


def check_evaluation(folder: Path) -> None:
    """What the page says of its example: label 2 (white matter) is missing from every threshold prediction."""
    import json

    cases = json.loads((folder / "scores.json").read_text())["cases"]
    rows = {(case["case"], row["label"]): row for case in cases for row in case["labels"]}
    assert sorted(rows) == [("case_010", 1), ("case_010", 2), ("case_011", 1), ("case_011", 2)], sorted(rows)
    assert all(rows[case, 2]["empty"] == "prediction" for case in ("case_010", "case_011"))
    assert all(rows[case, 1]["dice"] > 0.5 for case in ("case_010", "case_011"))


TRAINED = "needs the model that the skipped training line above it makes"


PAGES: dict[str, PageRun] = {
    "classification.md": PageRun(
        stage=stage_classification,
        before={"mitk classify chest.dcm": ("mkdir scans", "cp sample/images/case_05*.nii.gz scans/"),
                "mitk evaluate classify --pred scans.csv --ref labels.csv": ("cp sample/test.csv labels.csv",)},
        files=("run/best.safetensors", "preds.csv", "scans.json", "confusion.png", "scores.csv", "scans_confusion.png",
               "out/case_050_class.json", "out/case_050_gradcam.png", "out/xr_class.json", "out/xr_gradcam.png"),
        printed=("sample classify (2-D; cerebellum, ventricles, vertex): 40 training, 10 validation, 10 test cases"
                 " → sample/train.csv, sample/test.csv",)),
    "detection.md": PageRun(
        stage=stage_detection,
        files=("boxes/brain1_boxes.json", "boxes/brain1_boxes.csv", "boxes/brain1_boxes_preview.png",
               "run/best.safetensors", "pred/case_010_boxes.json", "froc.png", "out/dicom_series_boxes.dcm",
               "out/dicom_series_boxes.json")),
    "dicom.md": PageRun(stage=stage_dicom, files=("t1.nii.gz", "t1.json", "ct.nii.gz", "ct.json")),
    "evaluation.md": PageRun(files=("out/case_010_seg.nii.gz", "scores.csv", "scores.json", "means.csv"),
                             check=check_evaluation),
    "python-api.md": PageRun(files=("sample/dataset.json", "run/best.safetensors")),
    "registration.md": PageRun(
        stage=stage_registration,
        skip={"mitk register anatomical.nii mni152_t1_2mm.nii.gz": "run as written by "
              "tests/test_registration_intersubject.py (the MNI152 template is made there from nilearn)",
              "mitk register fixed.nii.gz moving.nii.gz --plugin syn": "run as written by "
              "tests/test_registration_intersubject.py on nibabel's anatomical.nii against MNI152",
              "mitk warp INPUT --transform T": "a synopsis (INPUT, T, FIXED are placeholders), not a command"},
        files=("warped.nii.gz", "t.tfm", "labels_on_fixed.nii.gz", "warped_dense.nii.gz", "field.nii.gz",
               "warped_masked.nii.gz", "t_masked.tfm", "run/best.safetensors", "warped_learned.nii.gz")),
    "sample-data.md": PageRun(files=("sample/dataset.json", "sample/imagesTs/case_010.nii.gz"),
                              printed=("sample brain: 8 training, 2 validation, 2 test cases → sample/dataset.json",)),
    "scale-out.md": PageRun(
        stage=stage_cohort,
        before={"mitk manifest merge": ("mkdir -p derivatives/mitk-seg/runs", *(
            f"mitk segment cohort/ --plugin threshold -d derivatives/mitk-seg --shard {k}/3 "
            f"--manifest derivatives/mitk-seg/runs/seg-{k}.jsonl" for k in range(3)))},
        files=("derivatives/mitk-seg/runs.jsonl",)),
    "training.md": PageRun(
        files=("run/best.safetensors", "run/last.safetensors", "run/log.csv", "pred/case_010_seg.nii.gz"),
        printed=("sample brain: 8 training, 2 validation, 2 test cases → sample/dataset.json",)),
    "hdbet.md": PageRun(skip={"mitk segment t1.nii.gz --plugin hdbet": HDBET}),
    "../README.md": PageRun(
        stage=stage_readme,
        skip={"mitk train segment --plugin unet --data dataset.json": "the defaults (100 epochs of 96³ patches) on "
              "the user's own scans take hours on a CPU; the same verb runs as written in docs/training.md",
              "mitk segment ct_folder/ --weights run/best.safetensors": TRAINED,
              "mitk evaluate segment --pred out --ref labels": TRAINED,
              "mitk train classify --plugin resnet --data labels.csv": "the defaults (100 epochs) on the user's "
              "own images; the same verb runs as written in docs/classification.md",
              "mitk classify xrays/ --weights cls/best.safetensors": TRAINED,
              "mitk segment cohort/ --plugin threshold -d out --executor dask": "needs a Dask cluster at "
              "tcp://head:8786 (tests/test_dask_interrupt_records.py runs a local one)",
              "mitk segment t1.nii.gz --plugin hdbet": HDBET},
        files=("scan_seg.nii.gz", "out/scan_boxes.json", "out/scan_boxes.csv", "warped.nii.gz", "t.tfm",
               "m3.jsonl"),
        check=check_shard),
    "writing-plugins.md": PageRun(
        skip={"mitk plugins list": BLOBS, "mitk plugins info blobs": BLOBS, "mitk detect --plugin blobs": BLOBS}),
}


def covered_blocks(page: Path) -> set[str]:
    """Labels of the page's ``<!-- docs-test: X -->`` blocks that another test module names (and so reads)."""
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py")
                        if p.name != Path(__file__).name)
    labels = {c.block for c in page_commands(page) if c.block is not None}
    return {label for label in labels if f'"{label}"' in sources or f"<!-- {label}:start -->" in sources}


def test_every_page_runs_as_written(tmp_path: Path) -> None:
    """All pages in one process (torch and MONAI imported once: about 40 s of CPU less than a process per page),
    each in its own empty folder; the failure names the page, the command and its error."""
    plans = []
    for name in sorted(PAGES):
        folder = tmp_path / Path(name).stem
        folder.mkdir()
        plans.append(plan_page(DOCS / name, PAGES[name], folder, covered_blocks(DOCS / name), NOT_HERE))
    check_pages(plans, timeout=800)  # below the test's own limit (pyproject: 900 s)


def test_every_page_with_commands_is_run() -> None:
    """A page that shows commands has an entry here, or a test that reads it (named in ELSEWHERE)."""
    missing = unrun_pages(DOCS, PAGES, ELSEWHERE)
    assert not missing, f"docs pages whose commands no test runs: {missing}"
    for name, module in ELSEWHERE.items():
        assert name in (ROOT / "tests" / module).read_text(encoding="utf-8"), f"{module} does not read {name}"
