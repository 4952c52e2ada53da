"""``torchrun -m mitk train``: DistributedDataParallel on CPU (gloo), with real processes.

Two processes train a tiny U-Net on real anatomy (the MNI152 cases of ``test_train``) for 2 epochs: their
parameters end identical (the run records every rank's checksum), the run folder holds one set of files,
written by rank 0, validation on split cases equals a single-process validation of the same weights, a resumed
run continues under torchrun, and the validation Dice matches a one-process run with the same global batch
within the stated tolerance (the ranks draw different random patches; see docs/scale-out.md).
A DenseNet classifier (batch norm) and voxelmorph (no randomness: the one-process optimisation to float
precision) train under torchrun too.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import load
from test_registration_learned import block_mean
from test_train import LABELS, build_cases

from mitk.checkpoint import load_checkpoint, training_state_load
from mitk.errors import UsageError
from mitk.training.distributed import (
    GlobalBatchSampler,
    World,
    parameter_checksum,
    rank_seed,
    remote_rendezvous,
    seed_loader_worker,
    torchrun_world,
)
from mitk.training.folder import RUN_FILES
from mitk.training.train import train as train_task

TINY_ARGS = ["--patch-size", "32", "--lr", "0.01", "--seed", "0", "--device", "cpu", "--batch-size", "2",
             "--set", "spacing=[4,4,4]", "--set", "samples_per_case=2", "--set", "network.channels=[4,8,16]",
             "--set", "network.strides=[2,2]", "--set", "network.num_res_units=1"]
TINY = {"patch_size": [32, 32, 32], "spacing": [4.0, 4.0, 4.0], "samples_per_case": 2,
        "network": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}, "optimizer": {"lr": 0.01}}

DICE_TOLERANCE = 0.05
"""|Dice(2 processes) − Dice(1 process)| after 2 epochs with the same global batch. The batches and the
gradient averaging are those of one process; the random patches are not (each rank draws its own), which on
these runs moves the Dice by about 0.01."""


def run_in_session(command: list[str], environment: dict[str, str], timeout: float
                   ) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a session of its own, so that every process it starts (torchrun's workers) can be
    stopped with it: past ``timeout`` s the whole session is killed and the test fails naming the command. Its
    processes left after it ends are killed too. (``subprocess.run(timeout=)`` kills only the first process,
    then waits for the pipes that the orphaned workers still hold open: it could hang.)"""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"{shlex.join(command)} did not end within {timeout} s; its processes were killed\n"
                    f"{stderr[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def torchrun(processes: int, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node N -m mitk ARGS`` with one torch thread per process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               "-m", "mitk", *map(str, args)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MITK_DIST_TIMEOUT": "120"}
    return run_in_session(command, environment, timeout)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six MNI152 cases: 4 for training, 2 for validation (one per rank)."""
    root = tmp_path_factory.mktemp("mni")
    pairs = build_cases(root, 6)
    listed = [{"image": f"./imagesTr/{image.name}", "label": f"./labelsTr/{label.name}"} for image, label in pairs]
    datalist = {"labels": {str(i): name for i, name in enumerate(LABELS)}, "training": listed[:4],
                "validation": listed[4:]}
    (root / "datalist.json").write_text(json.dumps(datalist))
    return root / "datalist.json"


@pytest.fixture(scope="module")
def two_process_run(cases: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    run = tmp_path_factory.mktemp("ddp") / "run"
    done = torchrun(2, "train", "segment", "--plugin", "unet", "--data", cases, "-d", run, "--epochs", "2",
                    *TINY_ARGS, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return run, json.loads(done.stdout), done.stderr


@contextlib.contextmanager
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_two_processes_end_with_identical_parameters_and_one_run_folder(two_process_run) -> None:
    run, document, stderr = two_process_run
    record = document["distributed"]
    assert (record["world_size"], record["backend"], record["per_rank_batch"]) == (2, "gloo", 1)
    assert record["validation"] == "split across ranks"
    assert len(record["parameter_checksums"]) == 2 and record["parameters_identical"] is True
    assert len(set(record["parameter_checksums"])) == 1
    assert json.loads((run / "log.json").read_text())["distributed"] == record
    # the recorded checksum is that of the weights rank 0 wrote
    from mitk.plugin_manager import get_registry

    checkpoint = load_checkpoint(run / "last.safetensors")
    plugin = get_registry().get("unet", "segment").load()
    network = plugin.network(plugin.resolve_config(checkpoint.config))
    network.load_state_dict(checkpoint.state_dict)
    assert parameter_checksum(network) == record["parameter_checksums"][0]
    # exactly one set of files (no second writer, no temporary leftovers), one report on the terminal
    assert sorted(path.name for path in run.iterdir()) == sorted(RUN_FILES)
    assert stderr.count("epoch 1:") == 1 and stderr.count("training on 4 cases") == 1
    assert stderr.count("from libraries hidden") <= 1
    assert "Traceback" not in stderr
    assert [row["epoch"] for row in json.loads((run / "log.json").read_text())["epochs"]] == [1, 2]


def validate_again(run: Path, task: str, plugin_name: str) -> dict[str, float]:
    """Validate ``run``'s last weights on its whole validation list in this one process."""
    from monai.data import DataLoader

    from mitk.plugin_manager import get_registry
    from mitk.taskspecs import get_task
    from mitk.training.data import make_dataset, pipeline
    from mitk.training.train import load_split

    checkpoint = load_checkpoint(run / "last.safetensors")
    plugin = get_registry().get(plugin_name, task).load()
    config = plugin.resolve_config(checkpoint.config)
    recipe = get_task(task).load_recipe()
    split = load_split(run, recipe)
    assert split is not None and len(split.validation) >= 2
    cases = make_dataset(split.validation, pipeline(recipe.case_loader(plugin, config),
                                                    plugin.validation_transforms(config)), False)
    collate = {"collate_fn": recipe.collate()} if recipe.collate() is not None else {}
    network = plugin.network(config)
    network.load_state_dict(checkpoint.state_dict)
    step = plugin.training_step(config) or recipe.training_step(plugin, config)
    with one_thread():
        metrics: dict[str, float] = step.validate(network, DataLoader(cases, batch_size=1, **collate),
                                                  torch.device("cpu"), contextlib.nullcontext)
    return metrics


def assert_logged_validation_is(run: Path, metrics: dict[str, float]) -> None:
    logged = json.loads((run / "log.json").read_text())["epochs"][-1]
    for name, value in metrics.items():
        assert logged[f"val_{name}"] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), name


def test_split_validation_equals_one_process_validating_the_same_weights(two_process_run) -> None:
    """Each rank scored one validation case; the logged metrics are those of all cases in one process."""
    run, _, _ = two_process_run
    assert_logged_validation_is(run, validate_again(run, "segment", "unet"))


def test_resume_under_torchrun_continues_for_a_further_epoch(two_process_run, tmp_path: Path) -> None:
    run, _, _ = two_process_run
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    before = json.loads((resumed / "log.json").read_text())["epochs"]
    done = torchrun(2, "train", "segment", "-d", resumed, "--resume", "--epochs", "3", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(done.stdout)
    assert document["epochs_run"] == 1 and document["distributed"]["parameters_identical"] is True
    rows = json.loads((resumed / "log.json").read_text())["epochs"]
    assert [row["epoch"] for row in rows] == [1, 2, 3] and rows[:2] == before
    assert training_state_load(resumed / "training_state.pt")["epoch"] == 3
    assert sorted(path.name for path in resumed.iterdir()) == sorted(RUN_FILES)
    assert done.stderr.count("epoch 3:") == 1


def test_two_processes_reach_the_validation_dice_of_one(two_process_run, cases: Path, tmp_path: Path) -> None:
    run, _, _ = two_process_run
    with one_thread():
        single = train_task("segment", plugin="unet", data=cases, output_dir=tmp_path / "single",
                            options={"epochs": 2, "batch_size": 2, "seed": 0, "device": "cpu"}, overrides=TINY)
    assert single.distributed is None and "distributed" not in json.loads((tmp_path / "single/log.json").read_text())
    rows = json.loads((run / "log.json").read_text())["epochs"]
    for mine, theirs in zip(rows, single.history, strict=True):
        assert math.isfinite(mine["val_mean_dice"]) and math.isfinite(theirs["val_mean_dice"])
        assert abs(mine["val_mean_dice"] - theirs["val_mean_dice"]) < DICE_TOLERANCE
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=0.1)
        assert mine["lr"] == theirs["lr"]


def test_a_rank_that_does_not_answer_ends_the_run_with_one_clear_line(tmp_path: Path) -> None:
    """Rank 1 stalls; rank 0's barrier gives up after MITK_DIST_TIMEOUT with a MitkError (no hang), and
    torchrun then stops rank 1 and fails."""
    script = tmp_path / "stall.py"
    script.write_text(
        "import os, sys, time\n"
        "import torch\n"
        "from mitk.errors import MitkError\n"
        "from mitk.training import distributed\n"
        "world = distributed.torchrun_world()\n"
        "distributed.start(world, torch.device('cpu'))\n"
        "if world.rank == 1:\n"
        "    time.sleep(120)\n"
        "    sys.exit(0)\n"
        "try:\n"
        "    distributed.barrier()\n"
        "except MitkError as error:\n"
        "    print(f'rank 0: {error}', flush=True)\n"
        "    os._exit(3)\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MITK_DIST_TIMEOUT": "3"}
    done = run_in_session(command, environment, timeout=90)
    assert done.returncode != 0
    assert "rank 0: distributed training stopped: another process failed or did not answer within 3 s" \
        in done.stdout


# -------------------------------------------------------------------------------------------------
# Without processes: the environment, the global batch, the sampler
# -------------------------------------------------------------------------------------------------


def test_torchrun_world_from_the_environment() -> None:
    assert torchrun_world({}) is None
    assert torchrun_world({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}) is None
    world = torchrun_world({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert world == World(rank=3, local_rank=1, size=4) and not world.is_main
    with pytest.raises(UsageError, match="do not fit"):
        torchrun_world({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})
    with pytest.raises(UsageError, match="integers"):
        torchrun_world({"WORLD_SIZE": "two"})


def test_a_rendezvous_off_this_host_is_named() -> None:
    """``start`` warns (on rank 0) when the unauthenticated c10d store is reached over the network."""
    for local in ({}, {"MASTER_ADDR": "127.0.0.1"}, {"MASTER_ADDR": "localhost"}, {"MASTER_ADDR": "::1"}):
        assert remote_rendezvous(local) is None
    assert remote_rendezvous({"MASTER_ADDR": "10.0.0.5"}) == "10.0.0.5"
    assert remote_rendezvous({"MASTER_ADDR": "node01.cluster"}) == "node01.cluster"


def test_the_global_batch_must_divide_among_the_processes(cases: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match="--batch-size 3 is the global batch and must be divisible by the 2"):
        train_task("segment", plugin="unet", data=cases, output_dir=tmp_path / "run",
                   options={"epochs": 1, "batch_size": 3, "device": "cpu"}, overrides=TINY)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("count", "batch", "size"), [(7, 4, 2), (9, 4, 4), (5, 2, 2)])
def test_ranks_share_the_batches_one_process_draws(count: int, batch: int, size: int) -> None:
    """Rank shares put together are the very batches of a shuffling DataLoader with the same generator, and
    the loss weights make the ranks' mean the global batch's mean (a rank left empty repeats a case at 0)."""
    from torch.utils.data import DataLoader

    dataset: Any = list(range(count))

    def generator() -> torch.Generator:
        return torch.Generator().manual_seed(11)

    one = [b.tolist() for b in DataLoader(dataset, batch_size=batch, shuffle=True, generator=generator())]
    shares, weights = [], []
    for rank in range(size):
        sampler = GlobalBatchSampler(dataset, batch, World(rank=rank, local_rank=rank, size=size), generator())
        loader: DataLoader[Any] = DataLoader(dataset, batch_sampler=sampler, generator=sampler.generator)
        shares.append([b.tolist() for b in loader])
        weights.append([sampler.weight(i) for i in range(len(sampler))])
    assert all(len(share) == len(one) for share in shares)
    for index, expected in enumerate(one):
        parts = [(shares[r][index], weights[r][index]) for r in range(size)]
        assert [item for part, weight in parts if weight > 0 for item in part] == expected
        # sum over ranks of weight × (mean of the rank's items) / N == the mean of the global batch
        combined = sum(weight * sum(part) / len(part) for part, weight in parts) / size
        assert combined == pytest.approx(sum(expected) / len(expected))
        if len(expected) == batch:
            assert all(weight == 1.0 for _, weight in parts)


def test_classification_under_torchrun(tmp_path: Path) -> None:
    """A DenseNet (batch norm: per-rank statistics, rank 0's copied to all after each epoch) on real MNI152
    slices: identical parameters, one run folder, AUC gathered over the ranks equal to one process's."""
    pytest.importorskip("nilearn")
    from mitk.sample import make_classification_sample

    make_classification_sample(tmp_path / "sample", cases=16, size=32, seed=0, dims=2)
    run = tmp_path / "run"
    done = torchrun(2, "train", "classify", "--plugin", "densenet121", "--data", tmp_path / "sample/train.csv",
                    "-d", run, "--epochs", "2", "--batch-size", "4", "--lr", "3e-3", "--seed", "0",
                    "--set", "image_size=[32,32]", "--set", "network.block_config=[2,2]",
                    "--set", "network.init_features=8", "--set", "network.growth_rate=8", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout)["distributed"]
    assert record["parameters_identical"] and record["per_rank_batch"] == 2
    assert record["validation"] == "split across ranks"
    assert sorted(path.name for path in run.iterdir()) == sorted(RUN_FILES)
    assert_logged_validation_is(run, validate_again(run, "classify", "densenet121"))


def test_registration_under_torchrun_is_the_one_process_optimisation(mni_t1_2mm: Path, tmp_path: Path) -> None:
    """No random augmentation and no batch norm in voxelmorph: 2 processes reproduce one process's losses,
    validation metrics and weights to float precision, including a short last batch (3 pairs in batches of 2:
    rank 1 takes no pair of the last batch and joins with weight 0)."""
    import nibabel as nib
    import numpy as np
    from nilearn.datasets import load_mni152_gm_mask
    from scipy import ndimage

    template = load(mni_t1_2mm)
    image = block_mean(np.asarray(template.get_fdata(), np.float32))
    grey = (block_mean(np.asarray(load_mni152_gm_mask(resolution=2).get_fdata(), np.float32)) > 0.5)
    affine = np.asarray(template.affine, float) @ np.diag([3.0, 3.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "fixed.nii.gz")
    nib.save(nib.Nifti1Image(grey.astype(np.int16), affine), tmp_path / "fixed_gm.nii.gz")
    pairs = []
    for seed in range(5):  # the MNI152 T1 under smooth random deformations
        rng = np.random.default_rng(seed)
        field = np.stack([ndimage.gaussian_filter(rng.standard_normal(image.shape), 3.0) for _ in range(3)])
        sources = np.indices(image.shape) + field * (10.0 / np.abs(field).max()) / 6.0
        moving = ndimage.map_coordinates(image, sources, order=1).astype(np.float32)
        moving_gm = ndimage.map_coordinates(grey.astype(np.float32), sources, order=1) > 0.5
        nib.save(nib.Nifti1Image(moving, affine), tmp_path / f"moving{seed}.nii.gz")
        nib.save(nib.Nifti1Image(moving_gm.astype(np.int16), affine), tmp_path / f"moving{seed}_gm.nii.gz")
        pairs.append({"fixed": "fixed.nii.gz", "moving": f"moving{seed}.nii.gz", "fixed_label": "fixed_gm.nii.gz",
                      "moving_label": f"moving{seed}_gm.nii.gz"})
    datalist = tmp_path / "pairs.json"
    datalist.write_text(json.dumps({"training": pairs[:3], "validation": pairs[3:],
                                    "labels": {"0": "background", "1": "grey matter"}}))
    settings = {"spacing": [6, 6, 6], "patch_size": [32, 32, 32], "optimizer": {"lr": 0.01},
                "network": {"channels": [4, 8, 8, 8], "final_conv_channels": [8], "integration_steps": 3}}
    flags = [item for key in ("spacing", "patch_size") for item in ("--set", f"{key}={settings[key]}")]
    flags += ["--set", "network.channels=[4,8,8,8]", "--set", "network.final_conv_channels=[8]",
              "--set", "network.integration_steps=3", "--lr", "0.01"]
    done = torchrun(2, "train", "register", "--plugin", "voxelmorph", "--data", datalist, "-d", tmp_path / "two",
                    "--epochs", "2", "--batch-size", "2", "--device", "cpu", *flags, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["distributed"]["parameters_identical"] is True
    with one_thread():
        single = train_task("register", plugin="voxelmorph", data=datalist, output_dir=tmp_path / "one",
                            options={"epochs": 2, "batch_size": 2, "seed": 0, "device": "cpu"}, overrides=settings)
    rows = json.loads((tmp_path / "two/log.json").read_text())["epochs"]
    for mine, theirs in zip(rows, single.history, strict=True):
        assert set(mine) == set(theirs)
        for name in set(mine) - {"seconds"}:
            assert mine[name] == pytest.approx(theirs[name], rel=1e-5, abs=1e-7), name
    two = load_checkpoint(tmp_path / "two/last.safetensors").state_dict
    one = load_checkpoint(tmp_path / "one/last.safetensors").state_dict
    assert two.keys() == one.keys()
    for name in one:  # Adam divides by the root of tiny second moments: float-order noise becomes ~1e-6
        assert torch.allclose(two[name], one[name], rtol=0, atol=2e-5), name


class RandomDraws(torch.utils.data.Dataset):
    """Each item: a draw from the torch generator of the process that loads it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(1)


def test_ranks_draw_their_own_augmentation() -> None:
    """The batch order is shared, the random draws are not: in the main process (``rank_seed``) and in data
    loading workers (``seed_loader_worker``, whose seeds the loader would otherwise give every rank alike)."""
    import functools

    from torch.utils.data import DataLoader

    assert rank_seed(7, None) == rank_seed(7, World(rank=0, local_rank=0, size=2)) == 7
    assert rank_seed(7, World(rank=1, local_rank=1, size=2)) != 7

    def draws(rank: int) -> list[float]:
        world = World(rank=rank, local_rank=rank, size=2)
        loader = DataLoader(RandomDraws(), batch_size=1, num_workers=1, generator=torch.Generator().manual_seed(5),
                            worker_init_fn=functools.partial(seed_loader_worker, world))
        return [float(item) for item in loader]

    assert draws(0) == draws(0) and draws(0) != draws(1)


UNUSED_PARAMETERS = """
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from mitk.tasks import SegmentationPlugin
from mitk.training.distributed import World
from mitk.training.loop import ModelSpec, Trainer, TrainingOptions


class SometimesHead(torch.nn.Module):
    \"\"\"A network whose second head takes no part in the training forward (deep supervision switched off).\"\"\"

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(4, 4)
        self.unused = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.body(x)


store, declared = sys.argv[1], sys.argv[2] == "declared"
plugin = type("Plugin", (SegmentationPlugin,), {"unused_parameters": declared})()
spec = ModelSpec(task="segment", plugin_name="p", plugin_version=None, plugin=plugin, config={})
dist.init_process_group("gloo", store=dist.FileStore(store, 1), rank=0, world_size=1)
trainer = Trainer(spec, step=None, train_dataset=None, val_dataset=None, options=TrainingOptions(),
                  output_dir=Path(store).parent, device=torch.device("cpu"),
                  world=World(rank=0, local_rank=0, size=1))
network = trainer._parallel(SometimesHead())
try:
    for _ in range(2):
        network(torch.ones(2, 4)).sum().backward()
    outcome = "trained"
except RuntimeError as error:
    outcome = str(error)
print(json.dumps({"outcome": outcome}), flush=True)
dist.destroy_process_group()
"""


@pytest.mark.parametrize("declared", [False, True])
def test_a_plugin_declares_parameters_its_forward_leaves_unused(tmp_path: Path, declared: bool) -> None:
    """The trainer's DistributedDataParallel searches for unused parameters only when the plugin says so; without
    it such a network stops at the second step with PyTorch's error. A one-process gloo group, in a process of
    its own with a time limit: a process group in the test process once hung the suite in ProcessGroupGloo's
    destructor."""
    script = tmp_path / "unused.py"
    script.write_text(UNUSED_PARAMETERS)
    done = run_in_session([sys.executable, str(script), str(tmp_path / "store"),
                           "declared" if declared else "undeclared"], {**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout)["outcome"]
    if declared:
        assert outcome == "trained"
    else:
        assert re.search(r"unused parameters|find_unused_parameters", outcome), outcome
