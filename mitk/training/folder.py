"""The run folder: what a training run writes there, and the rule against mixing two runs in one folder.

Kept free of torch and monai so that ``mitk train`` can refuse a bad folder before loading them.
"""

from __future__ import annotations

from pathlib import Path

from mitk.errors import OutputExistsError, UsageError

BEST_NAME = "best.safetensors"
LAST_NAME = "last.safetensors"
STATE_NAME = "training_state.pt"
CSV_NAME = "log.csv"
JSON_NAME = "log.json"
CURVE_NAME = "training_curve.png"
SPLIT_NAME = "split.json"
RUN_FILES = (BEST_NAME, LAST_NAME, STATE_NAME, CSV_NAME, JSON_NAME, CURVE_NAME, SPLIT_NAME)
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
RUN_FOLDERS = (TENSORBOARD_DIR, MLFLOW_DIR)
"""Folders of the optional loggers (``--log tensorboard,mlflow``), removed with the files on ``--overwrite``."""


def check_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: a non-empty folder needs ``--resume`` (continue) or ``--overwrite`` (start again)."""
    output_dir = Path(output_dir)
    if resume:
        missing = [name for name in (LAST_NAME, STATE_NAME) if not (output_dir / name).is_file()]
        if missing:
            raise UsageError(f"cannot resume: no {' or '.join(missing)} in the run folder", output_dir)
        return
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError("output path exists and is not a folder", output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise OutputExistsError("run folder is not empty (use --resume to continue it or --overwrite to "
                                "start again)", output_dir)


def prepare_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Check the folder, then create it; ``--overwrite`` removes the earlier run's files (only those)."""
    output_dir = Path(output_dir)
    check_output_dir(output_dir, resume, overwrite)
    if not resume and overwrite and output_dir.is_dir():
        for name in RUN_FILES:
            (output_dir / name).unlink(missing_ok=True)
        import shutil

        for name in RUN_FOLDERS:
            if (output_dir / name).is_dir() and not (output_dir / name).is_symlink():
                shutil.rmtree(output_dir / name)
    output_dir.mkdir(parents=True, exist_ok=True)
