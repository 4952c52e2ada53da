"""``mitk serve``: calls handed to the warm worker behave exactly as local calls, and its faults are handled.

Every process here runs under a timeout; the worker is always stopped (or killed) by its fixture.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the warm worker uses Linux socket credentials")


def environment(sock: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MITK_SERVE")}
    return {**env, "MITK_SERVE_SOCKET": str(sock), **extra}


def mitk(args: list[str], sock: Path, cwd: Path, timeout: float = 300, **extra: str
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mitk", *args], capture_output=True, text=True, cwd=cwd,
                          env=environment(sock, **extra), timeout=timeout)


def start_worker(sock: Path, *args: str) -> subprocess.Popen[str]:
    sock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    worker = subprocess.Popen([sys.executable, "-m", "mitk", "serve", *args], env=environment(sock),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited: {worker.communicate()[1]}")
        if sock.exists():
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(sock))
                return worker
            except OSError:
                pass
            finally:
                probe.close()
        time.sleep(0.2)
    worker.kill()
    raise AssertionError("the worker did not start in 240 s")


def stop_worker(worker: subprocess.Popen[str]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=30)


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], Path, Path]]:
    root = tmp_path_factory.mktemp("serve")
    sock = root / "run" / "serve.sock"
    worker = start_worker(sock, "--idle-timeout", "600")
    try:
        yield worker, sock, root
    finally:
        stop_worker(worker)


def without_timings(text: str) -> str:
    return re.sub(r"\(\d+\.\d s\)", "(T s)", text)


def manifest(path: Path, folder: str, *random: str) -> list[dict[str, object]]:
    """A manifest's records, less their timings and the ``random`` provenance fields (torch's seed: drawn afresh
    by each process, and by each call through the worker), with the output ``folder`` named D."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert records
    for record in records:
        record.pop("seconds")
        for key in random:
            record["provenance"].pop(key)
    return list(json.loads(json.dumps(records).replace(folder, "D")))


@pytest.mark.timeout(600)
def test_a_call_through_the_worker_is_the_local_call(warm: tuple[subprocess.Popen[str], Path, Path]) -> None:
    _, sock, root = warm
    (root / "in").mkdir(exist_ok=True)
    image = DATA / "lung1_image.nii.gz"
    results = {}
    for mode in ("local", "warm"):
        extra = {"MITK_SERVE": "1"} if mode == "warm" else {}
        args = ["segment", str(image), "--plugin", "threshold", "--set", "threshold=-300", "-d", mode,
                "--stats", "--manifest", f"{mode}.jsonl"]
        results[mode] = mitk(args, sock, root, **extra)
        assert results[mode].returncode == 0, results[mode].stderr
    assert (root / "local" / "lung1_image_seg.nii.gz").read_bytes() == \
        (root / "warm" / "lung1_image_seg.nii.gz").read_bytes()
    assert (root / "local" / "lung1_image_seg_stats.csv").read_bytes() == \
        (root / "warm" / "lung1_image_seg_stats.csv").read_bytes()
    assert without_timings(results["local"].stdout) == without_timings(results["warm"].stdout)
    assert manifest(root / "local.jsonl", "local") == manifest(root / "warm.jsonl", "warm")
    assert without_timings(results["local"].stderr).replace("local", "D") == \
        without_timings(results["warm"].stderr).replace("warm", "D")
    # a failing call: the same line and exit status
    failed = {mode: mitk(["segment", "missing.nii.gz", "--plugin", "threshold", "-d", mode], sock, root,
                         **({"MITK_SERVE": "1"} if mode == "warm" else {})) for mode in ("local", "warm")}
    assert failed["local"].returncode == failed["warm"].returncode != 0
    assert without_timings(failed["local"].stderr).replace("local", "D") == \
        without_timings(failed["warm"].stderr).replace("warm", "D")


@pytest.mark.timeout(600)
def test_one_calls_settings_never_reach_the_next(warm: tuple[subprocess.Popen[str], Path, Path]) -> None:
    _, sock, root = warm
    image = str(DATA / "lung1_image.nii.gz")
    first = mitk(["--debug", "segment", image, "--plugin", "threshold", "--set", "threshold=500", "-o",
                  "first.nii.gz"], sock, root, MITK_SERVE="1", OMP_NUM_THREADS="1")
    second = mitk(["segment", image, "--plugin", "threshold", "-o", "second.nii.gz"], sock, root,
                  MITK_SERVE="1")
    local = mitk(["segment", image, "--plugin", "threshold", "-o", "local.nii.gz"], sock, root)
    assert first.returncode == second.returncode == local.returncode == 0, second.stderr
    first_labels, second_labels, local_labels = (np.asarray(nib.load(root / name).dataobj) for name in
                                                 ("first.nii.gz", "second.nii.gz", "local.nii.gz"))
    assert np.array_equal(second_labels, local_labels)
    assert not np.array_equal(first_labels, second_labels)


def write_unet(path: Path, seed: int) -> None:
    """A small UNet checkpoint with seeded weights (a rewrite keeps its size: only its contents change)."""
    import torch

    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    config = plugin.resolve_config({"spacing": [4.0, 4.0, 8.0], "network": {"channels": [4, 8, 16], "strides": [2, 2]},
                                    "patch_size": [32, 32, 16]})
    torch.manual_seed(seed)
    save_checkpoint(path, plugin.network(config).state_dict(), task="segment", plugin="unet", plugin_version=None,
                    config=config)


@pytest.mark.timeout(600)
def test_kept_models_are_reused_and_reloaded_when_their_weights_file_is_rewritten(
        warm: tuple[subprocess.Popen[str], Path, Path]) -> None:
    """The first call's model stays loaded in the worker and the second call finds it; the same file rewritten
    with other weights is loaded afresh: its outputs are the local call's, not the kept model's."""
    _, sock, root = warm
    (root / "kept").mkdir(exist_ok=True)
    weights = root / "kept" / "unet.safetensors"
    write_unet(weights, seed=0)
    image = str(DATA / "brain1_image.nii.gz")

    def call(folder: str, **extra: str) -> dict[str, bytes]:
        done = mitk(["segment", image, "--weights", str(weights), "--device", "cpu", "--probabilities", "-d",
                     folder], sock, root, **extra)
        assert done.returncode == 0, done.stderr
        return {path.name: path.read_bytes() for path in sorted((root / folder).iterdir())}

    def status() -> str:
        return mitk(["serve", "--status"], sock, root).stderr

    first = call("kept_1", MITK_SERVE="1")
    assert "models kept: 1 of 4, calls that found theirs loaded: 0" in status()
    assert call("kept_2", MITK_SERVE="1") == first
    assert "calls that found theirs loaded: 1" in status()
    write_unet(weights, seed=1)
    rewritten = call("kept_3", MITK_SERVE="1")
    assert "models kept: 2 of 4, calls that found theirs loaded: 1" in status()  # loaded afresh, kept too
    assert rewritten != first
    assert rewritten == call("kept_local")


@pytest.mark.timeout(600)
def test_an_ensemble_is_kept_as_one_model(warm: tuple[subprocess.Popen[str], Path, Path]) -> None:
    """Two checkpoints named as one ensemble (``--weights A,B``) are kept as one model: the second call finds it,
    and its outputs and manifest are the local call's."""
    _, sock, root = warm
    folder = root / "ensemble"
    folder.mkdir(exist_ok=True)
    for seed in (2, 3):
        write_unet(folder / f"member_{seed}.safetensors", seed=seed)
    weights = ",".join(str(folder / f"member_{seed}.safetensors") for seed in (2, 3))
    image = str(DATA / "brain1_image.nii.gz")

    def call(name: str, **extra: str) -> dict[str, bytes]:
        done = mitk(["segment", image, "--weights", weights, "--device", "cpu", "--probabilities", "-d", name,
                     "--manifest", f"{name}.jsonl"], sock, root, **extra)
        assert done.returncode == 0, done.stderr
        return {path.name: path.read_bytes() for path in sorted((root / name).iterdir())}

    def kept() -> tuple[int, int]:
        found = re.search(r"models kept: (\d+) of \d+, calls that found theirs loaded: (\d+)",
                          mitk(["serve", "--status"], sock, root).stderr)
        assert found is not None
        return int(found[1]), int(found[2])

    models, hits = kept()
    first = call("ens_1", MITK_SERVE="1")
    assert kept() == (min(models + 1, 4), hits)  # one model for the two members
    assert call("ens_2", MITK_SERVE="1") == first
    assert kept()[1] == hits + 1
    assert call("ens_local") == first
    assert manifest(root / "ens_2.jsonl", "ens_2", "seed") == manifest(root / "ens_local.jsonl", "ens_local", "seed")


def test_control_messages_and_version_check(warm: tuple[subprocess.Popen[str], Path, Path]) -> None:
    worker, sock, root = warm
    status = mitk(["serve", "--status"], sock, root)
    assert status.returncode == 0 and f"pid {worker.pid}" in status.stderr
    from mitk.serve.protocol import identity, receive, send

    connection = socket.socket(socket.AF_UNIX)
    connection.connect(str(sock))
    with connection:
        send(connection, {**identity(), "version": "0.0.0-other", "argv": ["--version"], "cwd": str(root),
                          "env": {}}, fds=[0, 1, 2])
        answer, _ = receive(connection)
    assert answer is not None and answer["exit"] == 2
    assert "mitk 0.0.0-other" in str(answer["error"]) and "mitk serve --stop" in str(answer["error"])


def test_the_client_imports_neither_torch_nor_monai(tmp_path: Path) -> None:
    code = ("import sys; from mitk.serve.client import delegate; code = delegate(['--version']); "
            "print(code, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai', 'typer')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=environment(tmp_path / "none.sock", MITK_SERVE="1"))
    assert done.stdout.strip() == "None []", done.stderr


def test_without_a_worker_calls_run_here_or_fail_when_required(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "serve.sock"
    local = mitk(["--version"], sock, tmp_path, MITK_SERVE="1")
    assert local.returncode == 0 and local.stdout.startswith("mitk ")
    required = mitk(["--version"], sock, tmp_path, MITK_SERVE="require")
    assert required.returncode == 1 and "no warm worker listens" in required.stderr
    assert mitk(["serve", "--status"], sock, tmp_path).returncode == 1


@pytest.mark.timeout(900)
def test_a_killed_worker_fails_the_call_and_leaves_a_stale_socket_that_is_handled(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "serve.sock"
    worker = start_worker(sock, "--idle-timeout", "600")
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = nib.load(DATA / "lung1_image.nii.gz")
    for index in range(150):
        nib.save(image, inputs / f"case_{index:03d}.nii.gz")
    try:
        call = subprocess.Popen([sys.executable, "-m", "mitk", "segment", str(inputs), "--plugin", "threshold",
                                 "-d", str(tmp_path / "out")], env=environment(sock, MITK_SERVE="1"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(list((tmp_path / "out").glob("*_seg.nii.gz"))) < 3:
            time.sleep(0.1)
        worker.kill()
        _, err = call.communicate(timeout=120)
    finally:
        stop_worker(worker)
    assert call.returncode == 1 and "the warm worker stopped during the job" in err
    written = sorted((tmp_path / "out").glob("*_seg.nii.gz"))
    assert 3 <= len(written) < 150
    for path in written:  # every output that exists is whole
        assert np.asarray(nib.load(path).dataobj).shape == image.shape
    assert sock.exists()  # stale: the killed worker could not remove it
    local = mitk(["--version"], sock, tmp_path, MITK_SERVE="1")
    assert local.returncode == 0  # a stale socket means "run here"
    again = start_worker(sock, "--idle-timeout", "1")  # and a new worker replaces it
    try:
        again.wait(timeout=120)  # idle for a second: it stops by itself and removes its socket
    finally:
        stop_worker(again)
    assert again.returncode == 0 and not sock.exists()


@pytest.mark.timeout(600)
def test_ctrl_c_in_the_caller_cancels_the_job(warm: tuple[subprocess.Popen[str], Path, Path]) -> None:
    _, sock, root = warm
    inputs = root / "many"
    inputs.mkdir(exist_ok=True)
    image = nib.load(DATA / "lung1_image.nii.gz")
    for index in range(150):
        nib.save(image, inputs / f"case_{index:03d}.nii.gz")
    call = subprocess.Popen([sys.executable, "-m", "mitk", "segment", str(inputs), "--plugin", "threshold", "-d",
                             str(root / "cancelled"), "--manifest", str(root / "cancelled.jsonl")],
                            env=environment(sock, MITK_SERVE="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((root / "cancelled").glob("*_seg.nii.gz"))) < 2:
        time.sleep(0.1)
    call.send_signal(signal.SIGINT)
    _, err = call.communicate(timeout=120)
    assert call.returncode == 130, err
    assert "interrupted" in err
    count = len(list((root / "cancelled").glob("*_seg.nii.gz")))
    time.sleep(2)
    assert len(list((root / "cancelled").glob("*_seg.nii.gz"))) == count < 150  # the job stopped
    records = [json.loads(line) for line in (root / "cancelled.jsonl").read_text().splitlines() if line.strip()]
    assert records  # the manifest says what was done, as a local interrupted batch does


@pytest.mark.timeout(600)
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user")
def test_another_user_is_refused() -> None:
    """The folder keeps other users out; with it opened on purpose, the worker's own check still refuses them."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mitk-serve-test-", dir="/tmp"))
    sock = folder / "run" / "serve.sock"
    worker = start_worker(sock, "--idle-timeout", "120")
    code = ("import os, socket, sys; from mitk.serve.protocol import receive, send; "
            "os.setgid(65534); os.setuid(65534); c = socket.socket(socket.AF_UNIX); "
            f"c.connect({str(sock)!r}); send(c, {{'argv': ['--version']}}, fds=[0, 1, 2]); "
            "print(receive(c)[0])")
    try:
        closed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert "PermissionError" in closed.stderr  # the private folder: nobody else may even reach the socket
        os.chmod(folder, 0o755)
        os.chmod(sock.parent, 0o755)
        os.chmod(sock, 0o777)
        opened = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    finally:
        stop_worker(worker)
        shutil.rmtree(folder, ignore_errors=True)
    assert "serves only the user who started it" in opened.stdout, opened.stderr


@pytest.mark.timeout(600)
def test_the_page_commands_run(tmp_path: Path) -> None:
    """docs/serve.md's session, verbatim, in a shell: detach, two calls through the worker, status, stop."""
    import shlex

    page = (Path(__file__).resolve().parents[1] / "docs" / "serve.md").read_text()
    lines = re.findall(r"^\$ (.*)$", page, re.MULTILINE)
    assert [line.split()[1 if line.startswith("MITK_SERVE") else 0] for line in lines] == ["mitk"] * 5
    (tmp_path / "scans").mkdir()
    for index in range(2):
        nib.save(nib.load(DATA / "lung1_image.nii.gz"), tmp_path / "scans" / f"case_{index:03d}.nii.gz")
    sock = tmp_path / "run" / "serve.sock"
    sock.parent.mkdir(mode=0o700)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mitk").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m mitk \"$@\"\n")
    (bindir / "mitk").chmod(0o755)
    env = environment(sock, PATH=f"{bindir}:{os.environ['PATH']}")
    try:
        for line in lines:
            done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, f"{line}: {done.stderr}"
            if "--status" in line:
                assert "listens at" in done.stderr
    finally:
        subprocess.run([sys.executable, "-m", "mitk", "serve", "--stop"], env=env, capture_output=True,
                       timeout=60)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["case_000_seg.nii.gz",
                                                                           "case_001_seg.nii.gz"]
    assert not sock.exists()
