"""Where each case's outputs go, decided before any compute so that refusals are cheap."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitk.errors import OutputExistsError, UsageError
from mitk.io.atomic import (
    NO_INPUTS,
    InputFiles,
    check_name_length,
    check_output,
    check_writable_folder,
    refuse_inputs,
    remove_stale_partials,
    split_suffix,
)
from mitk.io.inputs import Case, output_for

if TYPE_CHECKING:
    pass


@dataclass
class OutputPolicy:
    """``-o FILE`` (one input), ``--output-dir DIR``, or beside each input; plus overwrite rules."""

    output: Path | None = None
    output_dir: Path | None = None
    overwrite: bool = False
    skip_existing: bool = False
    also_inputs: tuple[Path, ...] = ()
    """Inputs besides the cases (a registration's fixed image): never written over either."""
    model: tuple[Path, ...] = ()
    """The model's files (``--weights``: a checkpoint, or a folder's files): inputs too. ``-o`` on one of them is
    refused before anything runs, with or without ``--overwrite``."""
    inputs: InputFiles = NO_INPUTS
    """Every input of the call, set by :meth:`prepare`; no output of any case may land on one of them."""
    claimed: dict[Path, Path] = field(default_factory=dict, repr=False)
    """Output names (folder and input stem, so every suffix of a case) with the input that owns each: two inputs
    never share one. :meth:`prepare` gives them out in the order of the whole batch, so the same input loses a
    clash in a local run, in any shard and on any worker."""
    resolved_folders: dict[Path, Path] = field(default_factory=dict, repr=False)
    """Output folders as given, resolved (once per folder, not once per case)."""
    folders: dict[Path, str | None] = field(default_factory=dict, repr=False)
    """Output folders probed in this run, with why each cannot be written to (None: it can)."""

    def check_batch(self, n_inputs: int) -> None:
        if self.output is not None and self.output_dir is not None:
            raise UsageError("give either -o/--output or --output-dir, not both")
        if self.output is not None and n_inputs > 1:
            raise UsageError(f"-o/--output names one file but {n_inputs} inputs were given; use --output-dir")
        if self.overwrite and self.skip_existing:
            raise UsageError("--overwrite and --skip-existing contradict each other")

    def prepare(self, cases: list[Case]) -> None:
        """Check the command line against the expanded inputs, before any model is loaded: one output for
        one input, and the ``-o``/``--output-dir`` folder writable. (``-o`` over an input fails its case.)"""
        self.check_batch(len(cases))
        self.inputs = InputFiles.of([*(case.path for case in cases), *self.also_inputs, *self.model])
        folder = None
        if self.output is not None:
            refuse_inputs(self.output, self.model)
            check_name_length(self.output)
            folder = self.output.parent
        elif self.output_dir is not None:
            if self.output_dir.exists() and not self.output_dir.is_dir():
                raise UsageError("--output-dir is a file, not a folder", self.output_dir)
            folder = self.output_dir
        if folder is not None:
            check_writable_folder(folder)
            remove_stale_partials(folder)  # left by a killed run, even if every case is skipped this time
        if self.output is None:  # every output name goes to the first input of the batch that claims it
            for case in cases:
                key = self._name_key(case)
                if key is not None:
                    self.claimed.setdefault(key, case.path)

    def _name_key(self, case: Case) -> Path | None:
        """What a case's output names are claimed by: the resolved output folder and the input's stem (the same
        for every suffix of a task); None for an input whose path cannot be looked at (a symbolic link loop,
        which fails its own case when it is read, not the batch)."""
        directory = self.output_dir if self.output_dir is not None else case.path.parent
        try:
            resolved = self.resolved_folders.get(directory)
            if resolved is None:
                resolved = self.resolved_folders[directory] = directory.resolve()
            return resolved / case.stem
        except (OSError, RuntimeError):
            return None

    def inputs_for(self, case: Case, *others: Path) -> InputFiles:
        """What a case's files must never land on: every input of the call, the case's own and ``others``."""
        missing = [path for path in (case.path, *others) if self.inputs.owner(path) is None]
        return self.inputs + InputFiles.of(missing) if missing else self.inputs  # no copy per case

    @property
    def companion_overwrite(self) -> bool:
        """Whether a case's companion files (statistics, previews, transforms) may replace existing ones.

        With ``--overwrite``, yes. With ``--skip-existing``, a case that is not skipped has no main output, so
        companions found were left by an interrupted run (the main output is committed last): redo them too.
        """
        return self.overwrite or self.skip_existing

    def target(self, case: Case, suffix: str, extension: str) -> Path:
        key: Path | None
        if self.output is not None:
            path = self.output
            key = path.resolve()
        else:
            directory = self.output_dir if self.output_dir is not None else case.path.parent
            path = output_for(case, directory, suffix, extension)
            key = self._name_key(case)
        owner = case.path if key is None else self.claimed.setdefault(key, case.path)
        if owner != case.path:
            raise UsageError(f"{owner} in this batch writes the same output (same file name in two folders); "
                             f"run them with different --output-dir", path)
        return path

    def should_skip(self, target: Path, case: Case, *, inputs: tuple[Path, ...] = ()) -> bool:
        """True when ``--skip-existing`` applies; raises when writing would overwrite without leave, would
        write over any input of the call (``inputs``: others, such as a registration's fixed image), or when
        the output folder cannot be written to."""
        if self.skip_existing and target.exists():
            return True
        try:
            check_output(target, self.overwrite, inputs=self.inputs_for(case, *inputs))
        except OutputExistsError:
            raise OutputExistsError("output exists already (use --overwrite to replace it, or --skip-existing)",
                                    target) from None
        self.check_folder(target.parent)
        return False

    def check_companion(self, path: Path, case: Case, *, inputs: tuple[Path, ...] = ()) -> None:
        """A file written beside the main output: see :attr:`companion_overwrite`."""
        check_output(path, self.companion_overwrite, inputs=self.inputs_for(case, *inputs))

    def check_folder(self, folder: Path) -> None:
        """Raise :class:`UsageError` when ``folder`` cannot be written to (probed once per run)."""
        key = folder.absolute()
        if key not in self.folders:
            try:
                check_writable_folder(folder)
                self.folders[key] = None
            except UsageError as error:
                self.folders[key] = str(error)
        reason = self.folders[key]
        if reason is not None:
            raise UsageError(reason)


def write_csv(rows: list[dict[str, Any]], path: Path, columns: list[str]) -> None:
    """Rows as CSV with these columns (extra keys ignored); ``path`` is usually an ``atomic_path`` temporary."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def sibling(target: Path, suffix: str, extension: str) -> Path:
    """A companion file next to ``target``: ``ct_seg.nii.gz`` → ``ct_seg<suffix><extension>``."""
    stem, _ = split_suffix(target)
    return target.with_name(f"{stem}{suffix}{extension}")

