"""CUDA graphs: record a network call once, replay it every sampling step.

A sampling loop calls the UNet 20 or 50 times with tensors of the same shapes. Run eagerly, each call asks the
host to launch hundreds of small GPU kernels (GroupNorm, SiLU, adds, attention, ...), one after another; at batch 2
and 64x64 the GPU can finish a kernel faster than Python and PyTorch can launch the next one, so it waits.
A CUDA graph (NVIDIA, "Getting Started with CUDA Graphs", 2019) records the whole sequence of kernels once, with
the addresses of their inputs and outputs, and `replay()` launches it as one unit:

    capture:  static_in <- example;  graph records  static_out = fn(static_in)   (kernels are not run here)
    replay:   static_in.copy_(x);    graph.replay();  return static_out.clone()

What a graph cannot do: take tensors at other addresses (hence the copies into `static_in`), change shape (hence
one graph per input signature), run Python (anything printed or recorded inside `fn` happens only at capture),
or synchronise with the host inside `fn`. The fast UNet (atelier/models/fast.py) uses one per input signature.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import torch
from torch import Tensor

Signature = tuple[tuple[tuple[int, ...], torch.dtype, torch.device], ...]


def signature(args: tuple[Tensor, ...]) -> Signature:
    """What a captured graph is specific to: the shape, dtype and device of every input."""
    return tuple((tuple(a.shape), a.dtype, a.device) for a in args)


class _Captured:
    """One recorded graph with the tensors it reads and writes."""

    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.graph, self.inputs, self.output = graph, inputs, output


class GraphedCall:
    """`fn(*tensors) -> tensor` on CUDA, captured as one CUDA graph per input signature and replayed afterwards.

    `fn` must be a pure function of its tensor arguments and of state that does not change between calls (the
    weights); it must not synchronise with the host. The first call with a new signature runs `fn` `warmup` times
    on a side stream (letting cuDNN pick algorithms and torch.compile compile) and then records it; later calls
    copy their inputs in, replay, and return a copy of the output. At most `max_graphs` signatures are kept; the
    least recently used is dropped first.

    Memory: all the graphs of one GraphedCall draw their activations from one shared pool, so keeping several
    signatures (a classroom's padded batch sizes 1, 2, 4, 8, and the lone prompt's) costs about the largest one's
    activations, not their sum. Sharing is safe here because replays never overlap (one call at a time) and each
    replay's output is copied out before any other graph runs; a graph's intermediates may be overwritten by
    another's replay, which is fine, since they matter only during their own.
    """

    def __init__(self, fn: Callable[..., Tensor], max_graphs: int = 6, warmup: int = 2) -> None:
        self.fn, self.max_graphs, self.warmup = fn, max_graphs, warmup
        self._graphs: collections.OrderedDict[Signature, _Captured] = collections.OrderedDict()
        self._pool: tuple | None = None  # torch.cuda.graph_pool_handle(), made at the first capture

    def __call__(self, *args: Tensor) -> Tensor:
        key = signature(args)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(args)
            self._graphs[key] = captured
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        for static, value in zip(captured.inputs, args, strict=True):
            static.copy_(value)
        captured.graph.replay()
        return captured.output.clone()

    @property
    def captured(self) -> int:
        """How many input signatures currently have a graph."""
        return len(self._graphs)

    def clear(self) -> None:
        """Drop every graph and the memory it holds (after the weights change, for instance)."""
        self._graphs.clear()
        self._pool = None

    def _capture(self, args: tuple[Tensor, ...]) -> _Captured:
        if not all(a.is_cuda for a in args):
            raise ValueError("GraphedCall captures CUDA work only; every input must be a CUDA tensor")
        inputs = tuple(a.clone() for a in args)  # the addresses the graph will read (clone keeps the layout)
        # Warm-up on a side stream, as PyTorch's capture recipe asks: lazy initialisation (cuBLAS handles, cuDNN
        # autotuning, compilation) must happen before recording, and never on the stream being captured.
        side = torch.cuda.Stream(device=inputs[0].device)
        side.wait_stream(torch.cuda.current_stream(inputs[0].device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(*inputs)
        torch.cuda.current_stream(inputs[0].device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pool):
            output = self.fn(*inputs)  # recorded, not run; `output` is where every replay will write
        return _Captured(graph, inputs, output)
