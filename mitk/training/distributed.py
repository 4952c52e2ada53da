"""Training on several processes started by ``torchrun``: the process group and what the loop shares over it.

``torchrun --nproc-per-node N -m mitk train <task> …`` starts N copies of mitk with ``WORLD_SIZE``, ``RANK``
and ``LOCAL_RANK`` in their environment. :func:`torchrun_world` reads them; :func:`start` joins the process group
(``gloo`` on CPU, ``nccl`` on CUDA with device ``cuda:LOCAL_RANK``, a timeout on every collective so a rank that
died or stalled ends the run instead of hanging it). The loop then wraps the network in
``DistributedDataParallel``, draws its batches with :class:`GlobalBatchSampler` (``--batch-size`` is the global
batch: each rank takes its ``1/N`` share of the very batches one process would draw), validates on
:func:`validation_shard` and combines the shards' results with :func:`gather_validation_rows` or
:func:`sum_validation`, and checks at the end that every rank holds the same parameters
(:func:`parameter_checksums`). Only rank 0 writes files or prints.

Not imported by ``mitk --help``: torch is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import hashlib
import ipaddress
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mitk.errors import MitkError, UsageError

if TYPE_CHECKING:
    import numpy as np
    import torch

TIMEOUT_VARIABLE = "MITK_DIST_TIMEOUT"
"""Seconds a collective (all-reduce, barrier) waits for the other ranks before the run fails; default 900."""
DEFAULT_TIMEOUT_S = 900.0
LOG = logging.getLogger("mitk.training")

_SHARDED_VALIDATION: contextvars.ContextVar[bool] = contextvars.ContextVar("mitk_sharded_validation",
                                                                           default=False)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes torchrun started."""

    rank: int
    local_rank: int
    size: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and reports progress."""
        return self.rank == 0


def torchrun_world(environ: Mapping[str, str] | None = None) -> World | None:
    """The torchrun world from ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; ``None`` for a single process."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        size, rank = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (start mitk with torchrun)") from None
    if size <= 1:
        return None
    if not 0 <= rank < size or local_rank < 0:
        raise UsageError(f"RANK {rank} and LOCAL_RANK {local_rank} do not fit WORLD_SIZE {size}")
    return World(rank=rank, local_rank=local_rank, size=size)


def is_main_process() -> bool:
    """False only on the ranks other than 0 of a torchrun world (they stay quiet)."""
    world = torchrun_world()
    return world is None or world.is_main


def per_rank_batch(batch_size: int, world: World) -> int:
    """``--batch-size`` is the global batch; each rank takes ``batch_size / N`` of it."""
    if batch_size % world.size:
        raise UsageError(f"--batch-size {batch_size} is the global batch and must be divisible by the "
                         f"{world.size} processes (WORLD_SIZE)")
    return batch_size // world.size


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_VARIABLE, "")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        raise UsageError(f"{TIMEOUT_VARIABLE} must be a number of seconds, not {text!r}") from None
    if not seconds > 0:
        raise UsageError(f"{TIMEOUT_VARIABLE} must be positive")
    return seconds


def rank_device(world: World, device: str | None) -> torch.device:
    """``cuda:LOCAL_RANK`` for ``auto`` (with CUDA) or ``cuda``; ``cpu`` for ``cpu`` or ``auto`` without CUDA."""
    import torch

    name = (device or "auto").strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda":
        raise UsageError(f"--device {name} under torchrun: give cpu, cuda or auto (each process uses "
                         "cuda:LOCAL_RANK)")
    if not torch.cuda.is_available():
        raise UsageError("--device cuda requested but CUDA is not available")
    if world.local_rank >= torch.cuda.device_count():
        raise UsageError(f"LOCAL_RANK {world.local_rank} has no GPU: this node has {torch.cuda.device_count()} "
                         "(give --nproc-per-node at most that)")
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


def start(world: World, device: torch.device) -> str:
    """Join the process group (``gloo`` on CPU, ``nccl`` on CUDA); returns the backend. A no-op when joined."""
    import torch.distributed as dist

    if dist.is_initialized():
        return str(dist.get_backend())
    backend = "nccl" if device.type == "cuda" else "gloo"
    address = remote_rendezvous()
    if address is not None and world.is_main:
        LOG.warning("the torchrun rendezvous is at %s: PyTorch's c10d store has no authentication, so anyone who "
                    "can reach it can join or disturb the run (keep it on a trusted network)", address)
    options: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    try:
        dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size,
                                timeout=_dt.timedelta(seconds=timeout_seconds()), **options)
    except (RuntimeError, ValueError) as error:
        raise MitkError(f"cannot join the torchrun process group ({backend}): {first_line(error)}") from None
    return backend


def remote_rendezvous(environ: Mapping[str, str] | None = None) -> str | None:
    """``MASTER_ADDR`` when it names a host other than this one's loopback (``None`` for a local run)."""
    env = os.environ if environ is None else environ
    address = env.get("MASTER_ADDR", "").strip()
    if not address or address == "localhost":
        return None
    try:
        return None if ipaddress.ip_address(address).is_loopback else address
    except ValueError:  # a host name
        return address


def stop() -> None:
    """Leave the process group (when joined)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(world: World | None, device: torch.device) -> Iterator[str | None]:
    """The process group of ``world`` for the duration (its backend); nothing, ``None``, for a single process."""
    if world is None:
        yield None
        return
    backend = start(world, device)
    try:
        yield backend
    finally:
        stop()


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def barrier() -> None:
    """Wait for every rank (within the process group's timeout); nothing without a process group."""
    import torch.distributed as dist

    if dist.is_initialized():
        _collective(dist.barrier)


def _collective(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a collective; a rank that died or timed out becomes one clear error instead of a traceback."""
    try:
        return call(*args, **kwargs)
    except (RuntimeError, ValueError) as error:  # torch.distributed.DistBackendError is a RuntimeError
        raise MitkError("distributed training stopped: another process failed or did not answer within "
                        f"{timeout_seconds():.0f} s ({TIMEOUT_VARIABLE}): {first_line(error)}") from None


def all_reduce_sum(values: dict[str, float], device: torch.device | None = None) -> dict[str, float]:
    """The sum over ranks of each value (float64); unchanged without a process group."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized() or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64, device=device)
    _collective(dist.all_reduce, tensor, op=dist.ReduceOp.SUM)
    return {key: float(value) for key, value in zip(keys, tensor.cpu().tolist(), strict=True)}


# -------------------------------------------------------------------------------------------------
# Batches
# -------------------------------------------------------------------------------------------------


class GlobalBatchSampler:
    """This rank's share of the batches one process would draw.

    Each epoch draws the permutation that a shuffling ``DataLoader`` with the same generator would draw
    (``torch.randperm(n, generator=...)``, after the loader has taken its base seed), cuts it into global
    batches of ``batch_size`` (the last may be smaller) and gives rank ``r`` its contiguous ``1/N`` of each.
    :meth:`weight` scales a rank's mean loss so that the ranks' averaged gradients equal the gradient of the
    global batch's mean loss, also for a short last batch; a rank left without a case in that batch repeats
    the batch's first case with weight 0 (every rank must take part in each gradient all-reduce).
    """

    def __init__(self, dataset: Sized, batch_size: int, world: World, generator: torch.Generator) -> None:
        self.count = len(dataset)
        self.batch_size = batch_size
        self.world = world
        self.generator = generator
        self._weights: list[float] = [self._share(index)[1] for index in range(len(self))]

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)

    def _share(self, index: int) -> tuple[slice, float]:
        """The positions of batch ``index`` this rank takes, and its loss weight."""
        begin = index * self.batch_size
        size = min(self.batch_size, self.count - begin)
        base, extra = divmod(size, self.world.size)
        rank = self.world.rank
        first = begin + rank * base + min(rank, extra)
        taken = base + (1 if rank < extra else 0)
        return slice(first, first + taken), taken * self.world.size / size

    def weight(self, index: int) -> float:
        """The factor on this rank's mean loss of batch ``index`` (1 for every full batch)."""
        return self._weights[index]

    def __iter__(self) -> Iterator[list[int]]:
        import torch

        order = torch.randperm(self.count, generator=self.generator).tolist()
        for index in range(len(self)):
            positions, _ = self._share(index)
            taken = order[positions]
            yield taken if taken else [order[index * self.batch_size]]


RANK_SEED_STRIDE = 1_000_003
"""Rank r draws its random augmentation from seed + r × this (the batch order stays the same on every rank)."""


def rank_seed(seed: int, world: World | None, modulus: int = 2**31) -> int:
    """``seed`` for rank 0 (and a single process), shifted per rank so that the ranks draw differently."""
    rank = 0 if world is None else world.rank
    return (seed + RANK_SEED_STRIDE * rank) % modulus


def seed_loader_worker(world: World, worker_id: int) -> None:
    """A data-loading worker's ``worker_init_fn`` under torchrun: MONAI's (the worker's random transforms from
    its seed), with the seed shifted by rank; the workers' seeds are otherwise the same on every rank."""
    import torch
    from monai.data.utils import set_rnd

    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    seed = rank_seed(info.seed, world, 2**32)
    torch.manual_seed(seed)
    set_rnd(info.dataset, seed=seed)


def validation_shard(count: int, world: World | None) -> list[int] | None:
    """The validation cases of this rank (every N-th, no padding: each case is scored once), or ``None``
    when each rank should score them all (a single process, or fewer cases than ranks). In the latter case a
    step whose metrics gather over the ranks by themselves (MONAI's cumulative metrics) sees every case N times,
    which leaves its means unchanged."""
    if world is None or count < world.size:
        return None
    return list(range(world.rank, count, world.size))


@contextlib.contextmanager
def sharded_validation(active: bool) -> Iterator[None]:
    """While active, :func:`gather_validation_rows` and :func:`sum_validation` combine the ranks' shards."""
    token = _SHARDED_VALIDATION.set(active)
    try:
        yield
    finally:
        _SHARDED_VALIDATION.reset(token)


def gather_validation_rows(rows: np.ndarray) -> np.ndarray:
    """Every rank's validation rows (per-case outputs) in rank order, when validation is sharded;
    ``rows`` unchanged otherwise. Rows may differ in number between ranks, not in shape."""
    import numpy as np
    import torch
    import torch.distributed as dist

    if not _SHARDED_VALIDATION.get() or not dist.is_initialized():
        return rows
    local = torch.as_tensor(np.ascontiguousarray(rows, dtype=np.float64))
    device = _collective_device()
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    _collective(dist.all_gather, counts, torch.tensor([local.shape[0]], dtype=torch.int64, device=device))
    longest = max(int(c.item()) for c in counts)
    padded = torch.zeros((longest, *local.shape[1:]), dtype=torch.float64, device=device)
    padded[: local.shape[0]] = local.to(device)
    gathered = [torch.zeros_like(padded) for _ in counts]
    _collective(dist.all_gather, gathered, padded)
    parts = [part[: int(c.item())].cpu().numpy() for part, c in zip(gathered, counts, strict=True)]
    return np.concatenate(parts).astype(rows.dtype, copy=False)


def sum_validation(sums: dict[str, float], count: int) -> tuple[dict[str, float], int]:
    """Per-metric sums and the case count over every rank, when validation is sharded; unchanged otherwise."""
    import torch.distributed as dist

    if not _SHARDED_VALIDATION.get() or not dist.is_initialized():
        return sums, count
    # every rank reduces the same keys: the ranks run the same step on cases of the same kind
    reduced = all_reduce_sum({**sums, "\0count": float(count)}, _collective_device())
    total = round(reduced.pop("\0count"))
    return reduced, total


def _collective_device() -> torch.device:
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -------------------------------------------------------------------------------------------------
# The end-of-run check
# -------------------------------------------------------------------------------------------------


def broadcast_buffers(network: torch.nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank: each rank updates its own from its
    share of the batch, so after an epoch they differ. Then every rank validates (and rank 0 saves) the same
    weights. Nothing without a process group."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    for buffer in network.buffers():
        _collective(dist.broadcast, buffer, src=0)


def parameter_checksum(network: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the network's parameters and buffers, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(dtype=_byte_dtype()).numpy().tobytes())
    return digest.hexdigest()[:16]


def _byte_dtype() -> Any:
    import torch

    return torch.uint8


def parameter_checksums(network: torch.nn.Module) -> list[str]:
    """Every rank's :func:`parameter_checksum`, in rank order (an all-gather); one entry without a group."""
    import torch
    import torch.distributed as dist

    mine = parameter_checksum(network)
    if not dist.is_initialized():
        return [mine]
    device = _collective_device()
    local = torch.tensor([int(mine[i:i + 8], 16) - 2**31 for i in (0, 8)], dtype=torch.int64, device=device)
    gathered = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    _collective(dist.all_gather, gathered, local)
    return ["".join(f"{int(v) + 2**31:08x}" for v in part.cpu().tolist()) for part in gathered]
