"""The options every task verb shares, declared once as data (:class:`mitk.taskspec.Option`).

The CLI builds each verb's parser from these plus the task's own options (:attr:`TaskSpec.options`); a task
option of the same name replaces a shared one (e.g. classify's wording of ``--output``).
"""

from __future__ import annotations

from pathlib import Path

from mitk.taskspec import Option

INPUTS = Option("inputs", type=list[str], argument=True, required=True,
                help="Images: NIfTI files, DICOM files/folders/zips, folders of NIfTI files, or quoted globs.")

PLUGIN = Option("plugin", ("--plugin", "-p"), str | None, None, "Plugin to use (see `mitk plugins list`).")
WEIGHTS = Option("weights", ("--weights", "-w"), Path | None, None,
                 "Checkpoint file (.safetensors); its plugin is used when --plugin is omitted.")
OUTPUT = Option("output", ("--output", "-o"), Path | None, None, "Output file (one input only).")
OUTPUT_DIR = Option("output_dir", ("--output-dir", "-d"), Path | None, None,
                    "Directory for outputs, named <input>_<suffix>.")
MODEL_OPTIONS = (PLUGIN, WEIGHTS, OUTPUT, OUTPUT_DIR)
"""Which model, and where its outputs go: the first options of every task verb."""

SERIES = Option("series", ("--series",), str | None, None,
                "DICOM series to use: index or SeriesInstanceUID (see `mitk info DIR`).")
ALLOW_RESAMPLE = Option("allow_resample", ("--allow-resample",), bool, False,
                        "Resample an irregular or gantry-tilted DICOM series onto a regular grid (with a warning) "
                        "instead of refusing it.")
SETTINGS = Option("settings", ("--set",), list[str] | None, None,
                  "Override a plugin setting (value parsed as JSON, else text; dots reach nested keys). Repeatable.",
                  metavar="KEY=VALUE")
DEVICE = Option("device", ("--device",), str, "auto", "auto, cpu, cuda or cuda:N.")
OVERWRITE = Option("overwrite", ("--overwrite",), bool, False, "Replace existing outputs.")
SKIP_EXISTING = Option("skip_existing", ("--skip-existing",), bool, False,
                       "Skip inputs whose output exists (status 'skipped').")
MANIFEST = Option("manifest", ("--manifest",), Path | None, None,
                  "Append one JSON line per input to this file as each finishes.")
SHARD = Option("shard", ("--shard",), str | None, None,
               "Run only shard I (from 0) of N: a stable split of the inputs (see --shard-by), for job arrays "
               "(e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT). Merge the manifests with "
               "`mitk manifest merge`.", metavar="I/N")
SHARD_BY = Option("shard_by", ("--shard-by",), str, "hash",
                  "How --shard splits the inputs: hash (default; a case keeps its shard when files are added) or "
                  "order (sorted paths dealt out in turn: shards within one case of each other; every shard must "
                  "see the same inputs).", metavar="hash|order")
EXECUTOR = Option("executor", ("--executor",), str, "local",
                  "Where the cases run: local (this process, the default), dask, or an executor a plugin adds "
                  "(`mitk plugins list`).")
SCHEDULER = Option("scheduler", ("--scheduler",), str | None, None,
                   "--executor dask: the address of a running Dask scheduler (tcp://HOST:PORT).")
WORKERS = Option("workers", ("--workers",), int | None, None,
                 "--executor dask: start a local cluster of N worker processes, one thread each (default: one per "
                 "CPU).")
JSON = Option("as_json", ("--json",), bool, False, "Print one JSON document on stdout (messages go to stderr).")

BATCH_OPTIONS = (SERIES, ALLOW_RESAMPLE, SETTINGS, DEVICE, OVERWRITE, SKIP_EXISTING, MANIFEST, SHARD, SHARD_BY,
                 EXECUTOR, SCHEDULER, WORKERS, JSON)
"""The batch options of every task verb, after the task's own: input reading, the model's settings and device,
the output rules, the manifest, sharding, the executor, and JSON output."""
