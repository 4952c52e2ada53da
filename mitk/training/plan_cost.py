"""What one training sample costs a network: counted, not guessed.

The network is built on PyTorch's ``meta`` device (no memory, no arithmetic) and run forward and backward on
two inputs of the planned size (batch norms need two) under :class:`torch.utils.flop_counter.FlopCounterMode`,
which counts the floating-point operations of every convolution and matrix product. The activation memory is
the size of every leaf module's output, kept for the backward pass and matched by its gradient (fp32).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

BYTES_PER_VALUE = 4 * 2
"""fp32 activation kept for the backward pass, and its gradient."""


@dataclass(frozen=True)
class SampleCost:
    """One sample's training step: GFLOP (forward and backward) and activation memory in GB."""

    gflop: float
    memory_gb: float

    def times(self, count: int) -> dict[str, float]:
        return {"gflop_per_step": round(self.gflop * count, 2), "memory_gb": round(self.memory_gb * count, 3)}


def sample_cost(build: Callable[[], Any], shape: Sequence[int],
                forward: Callable[[Any, Any], Any] | None = None) -> SampleCost:
    """The cost of one input of ``shape`` (channels first, no batch axis) through ``build()``'s network;
    ``forward(network, batch)`` returns the tensors to back-propagate from (default: the network's output)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        network = build()
    values = [0]

    def count(_module: Any, _inputs: Any, output: Any) -> None:
        for tensor in output if isinstance(output, (list, tuple)) else [output]:
            if isinstance(tensor, torch.Tensor):
                values[0] += tensor.numel()

    hooks = [m.register_forward_hook(count) for m in network.modules() if not list(m.children())]
    batch = torch.empty((2, *[int(n) for n in shape]), device="meta")  # 2: batch norms need more than one value
    try:
        with FlopCounterMode(display=False) as counter:
            outputs = forward(network, batch) if forward is not None else network(batch)
            tensors = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            sum(t.float().sum() for t in tensors).backward()
    finally:
        for hook in hooks:
            hook.remove()
    return SampleCost(counter.get_total_flops() / 2e9, values[0] * BYTES_PER_VALUE / 2 ** 31)
