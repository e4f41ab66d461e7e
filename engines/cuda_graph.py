"""Replay a torch module through CUDA graphs, one graph per input signature.

    net = CudaGraphed(module)          # on CUDA tensors: captured on first use, then replayed
    out = net(x)                       # same outputs as module(x) (fresh tensors, safe to keep)

Our networks are small (a few hundred kernels of a few microseconds each), so on a GPU their time
is the launching, not the arithmetic: measured on the lent H200, the face mesh took ~10 ms eager,
launch by launch from Python. A CUDA graph launches the whole network at once. Inputs are copied
into the graph's static buffers, outputs cloned out of them (one small copy each), so callers can
hold results across calls. Signatures (shapes, dtypes) beyond `max_graphs` run eagerly, so an
unusual batch size costs speed, never memory without bound. CPU tensors always run eagerly.
"""
from __future__ import annotations

import torch

__all__ = ["CudaGraphed"]


class CudaGraphed:
    def __init__(self, module, max_graphs: int = 8, warmup: int = 2):
        self.module = module
        self.max_graphs = max_graphs
        self.warmup = warmup
        self._graphs: dict[tuple, tuple] = {}
        self._pool = None

    def __getattr__(self, name):            # the module's attributes (output_names, dtype, ...)
        return getattr(self.module, name)

    def _capture(self, tensors):
        static_in = [t.clone() for t in tensors]
        side = torch.cuda.Stream(tensors[0].device)
        side.wait_stream(torch.cuda.current_stream(tensors[0].device))
        with torch.cuda.stream(side):       # warm-up outside the graph: cuDNN picks its kernels here
            for _ in range(self.warmup):
                self.module(*static_in)
        torch.cuda.current_stream(tensors[0].device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self.module(*static_in)
        single = isinstance(out, torch.Tensor)
        static_out = (out,) if single else tuple(out)
        return graph, static_in, static_out, single

    def __call__(self, *tensors):
        if not tensors[0].is_cuda:
            return self.module(*tensors)
        key = tuple((tuple(t.shape), t.dtype) for t in tensors)
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= self.max_graphs:
                return self.module(*tensors)
            entry = self._graphs[key] = self._capture(tensors)
        graph, static_in, static_out, single = entry
        for s, t in zip(static_in, tensors):
            s.copy_(t)
        graph.replay()
        outs = tuple(o.clone() for o in static_out)
        return outs[0] if single else outs

    def reset(self) -> None:
        """Drop the captured graphs (and their memory pool)."""
        self._graphs.clear()
        self._pool = None
