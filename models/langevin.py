"""Langevin dynamics for the generative ConvNet, as an object separate from the model.

    I <- I - (delta^2 / 2) * (I / sigma^2 - df/dI) + delta * Z,    Z ~ N(0, Id)

No Metropolis correction and no clipping, as in the release. Since reconstruct(I) =
sigma^2 df/dI, the drift is -(delta^2 / (2 sigma^2)) (I - reconstruct(I)): the chain is pulled
towards the auto-encoder's reconstruction of itself.

Like a diffusers scheduler, the sampler knows nothing about learning: it takes any ``EnergyNet``,
a batch of chains, an optional mask of known pixels (clamped, for recovery / inpainting), a torch
generator for reproducibility, optional ``labels`` (the category of each chain, for a net of
several categories) and a callback called every ``callback_every`` steps (for progress
and cooperative cancellation: the callback raises ``Cancelled``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from . import cpu_split
from .net import EnergyNet


class Cancelled(Exception):
    """Raised by a progress callback to stop sampling or learning cleanly."""


StepCallback = Callable[[int, int, torch.Tensor], None]


@dataclass
class LangevinSampler:
    step_size: float = 0.3  # delta
    sigma: float = 1.0
    n_steps: int = 10
    noise: bool = True  # False: noise-free gradient steps (recovery)
    amp: bool = False  # bfloat16 autocast for the net; chains stay float32 (pipeline: models.precision)
    # with amp, on the CPU: float32 timed beside it on the first steps, autocast kept only where
    # clearly faster (models.cpu_split; the pipeline's choice under GCN_AMP=auto)
    amp_if_faster: bool = False
    # CUDA only: replay one captured step as a CUDA graph (ignored on the CPU, with a mask and
    # with labels for a net of several categories)
    cuda_graph: bool = False
    _graphs: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def drift(self, net: EnergyNet, x: torch.Tensor, labels: Optional[torch.Tensor | int] = None) -> torch.Tensor:
        """-(delta^2 / 2) (x / sigma^2 - df/dx)  (f = f_k, k = labels[i], for several categories)."""
        _, g = net.score_and_grad(x, amp=self.amp, labels=labels)
        return -0.5 * self.step_size**2 * (x / self.sigma**2 - g)

    def step(
        self,
        net: EnergyNet,
        x: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        mask: Optional[torch.Tensor] = None,
        known: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor | int] = None,
    ) -> torch.Tensor:
        """One Langevin update of every chain; pixels where ``mask`` is True stay at ``known``.
        ``labels``: the category of each chain (None: category 0).

        ``x`` is not modified; the update is the one ``sample`` applies in place."""
        x = x.detach().clone()
        noise = torch.empty_like(x) if self.noise else None
        with cpu_split.sharing(net, x, self.amp, labels, steps=1, amp_if_faster=self.amp_if_faster) as grad:
            self._step_(grad, x, noise, torch.empty_like(x), generator, mask, known, labels)
        return x

    def _step_(self, grad, x, noise, work, generator, mask, known, labels=None) -> None:
        """x <- x - (delta^2 / 2)(x / sigma^2 - df/dx) + delta Z, in place, with one draw of Z
        of x's shape from ``generator`` after the drift (the same random stream as ever).
        ``grad(x, labels)`` gives df/dx (from ``cpu_split.sharing``); ``noise`` and ``work`` are
        buffers of x's shape."""
        g = grad(x, labels)
        # the drift() expression, evaluated in the same order (so bitwise the same numbers)
        drift = torch.div(x, self.sigma**2, out=work).sub_(g).mul_(-0.5 * self.step_size**2)
        x.add_(drift)
        if noise is not None:
            torch.randn(x.shape, generator=generator, out=noise)
            x.add_(noise.mul_(self.step_size))
        if mask is not None:
            torch.where(mask, known, x, out=x)

    @torch.no_grad()
    def sample(
        self,
        net: EnergyNet,
        x: torch.Tensor,
        *,
        n_steps: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        mask: Optional[torch.Tensor] = None,
        known: Optional[torch.Tensor] = None,
        callback: Optional[StepCallback] = None,
        callback_every: int = 10,
        labels: Optional[torch.Tensor | int] = None,
    ) -> torch.Tensor:
        """Run ``n_steps`` (default ``self.n_steps``) updates from chains ``x`` (float32, N x 3 x H x W).

        ``labels`` (LongTensor [N], or an int for one category for all) gives each chain's category
        for a net of several categories (None: category 0); a single-category net ignores them
        (after checking them).
        ``x`` itself is never written: the chains live in one new buffer updated in place, and
        the callback gets a copy of them."""
        steps = self.n_steps if n_steps is None else n_steps
        net.check_size(x.shape[-2:])
        if labels is not None:
            if not isinstance(labels, int):  # range checked once, here, on the CPU
                labels = net.check_labels(torch.as_tensor(labels).cpu(), x.shape[0], torch.device("cpu"))
                if len(labels) and bool((labels == labels[0]).all()):
                    labels = int(labels[0])  # one category for all chains: the net computes only its top
                else:
                    labels = labels.to(x.device)
            labels = net.check_labels(labels, x.shape[0], x.device)
            if net.categories == 1:
                labels = None  # the single-category path, unchanged
        x = x.detach().to(torch.float32, copy=True)
        if mask is not None:
            mask = mask.to(device=x.device, dtype=torch.bool).expand_as(x)
            known = known.to(device=x.device, dtype=x.dtype).expand_as(x)
            torch.where(mask, known, x, out=x)
        if self.cuda_graph and x.is_cuda and mask is None and labels is None and steps > 0:
            return self._sample_graphed(net, x, steps, generator, callback, callback_every)
        noise = torch.empty_like(x) if self.noise else None
        work = torch.empty_like(x)
        with cpu_split.sharing(net, x, self.amp, labels, steps, self.amp_if_faster) as grad:  # CPU: maybe shares
            for t in range(1, steps + 1):
                self._step_(grad, x, noise, work, generator, mask, known, labels)
                if callback is not None and (t % callback_every == 0 or t == steps):
                    callback(t, steps, x.clone())
        return x

    # ---- CUDA graphs ---------------------------------------------------------------------
    def _graph_entry(self, net, x, generator) -> dict:
        """The cached graph (with its static buffers) for this call, or a new empty entry.

        Keyed by ids, so an entry also holds what its ids belong to: the net by weak reference
        (a dead one means its id may have been reused), the generator by a strong reference
        (torch.Generator takes weak references only from some releases on, e.g. not 2.11; the
        cache keeps at most ``_GRAPH_CACHE`` entries, so at most that many generators stay alive).
        Held, a generator's id cannot be reused, so the key alone finds its entry.
        """
        key = (id(net), net.depth, tuple(x.shape), x.device, id(generator), self.amp, self.noise,
               self.step_size, self.sigma, tuple(p.data_ptr() for p in net.parameters()))
        entry = self._graphs.get(key)
        if entry is None or entry["net"]() is not net:
            if len(self._graphs) >= _GRAPH_CACHE:
                self._graphs.pop(next(iter(self._graphs)))
            entry = {"net": weakref.ref(net), "generator": generator,
                     "x": torch.empty_like(x), "noise": torch.empty_like(x) if self.noise else None,
                     "work": torch.empty_like(x), "graph": None, "eager": 0}
            self._graphs[key] = entry
        return entry

    def _sample_graphed(self, net, x, steps, generator, callback, callback_every) -> torch.Tensor:
        """The same steps, replayed from a CUDA graph of one step.

        One graph per (net and its parameters' storage, depth, chain shape, generator), kept for
        later calls (a learner samples every iteration with weights updated in place). The first
        ``_GRAPH_WARMUP`` steps of the first call run eagerly on a side stream (real steps of the
        chains; capture requires it, and cudnn.benchmark picks its algorithms there). The
        generator is registered with the graph, so each replay draws exactly what the eager step
        would have drawn next.
        """
        entry = self._graph_entry(net, x, generator)
        buf, noise, work = entry["x"], entry["noise"], entry["work"]
        buf.copy_(x)
        grad = cpu_split.one_pass_grad(net, self.amp)  # CUDA: one pass
        stream = torch.cuda.current_stream(x.device)
        for t in range(1, steps + 1):
            if entry["graph"] is not None:
                entry["graph"].replay()
            else:
                side = torch.cuda.Stream(device=x.device)
                side.wait_stream(stream)
                with torch.cuda.stream(side):
                    self._step_(grad, buf, noise, work, generator, None, None)
                stream.wait_stream(side)
                entry["eager"] += 1
                if entry["eager"] >= _GRAPH_WARMUP:
                    graph = torch.cuda.CUDAGraph()
                    if generator is not None:
                        graph.register_generator_state(generator)
                    with torch.cuda.graph(graph):
                        self._step_(grad, buf, noise, work, generator, None, None)
                    entry["graph"] = graph
            if callback is not None and (t % callback_every == 0 or t == steps):
                callback(t, steps, buf.clone())
        return buf.clone()


_GRAPH_WARMUP = 3  # eager steps before capture
_GRAPH_CACHE = 4  # graphs kept per sampler


def init_chains(
    how: str,
    n: int,
    size: tuple[int, int],
    *,
    sigma: float = 1.0,
    data: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Starting points in model space: ``zeros`` (the mean image, as in the release), ``noise``
    (a draw from the reference N(0, sigma^2 Id)) or ``data`` (the observed images, cycled)."""
    h, w = size
    if how == "zeros":
        return torch.zeros(n, 3, h, w, device=device)
    if how == "noise":
        return sigma * torch.randn(n, 3, h, w, generator=generator, device=device)
    if how == "data":
        if data is None or len(data) == 0:
            raise ValueError("init='data' needs observed images")
        if tuple(data.shape[-2:]) != (h, w):
            raise ValueError(f"init='data' needs size {data.shape[-1]}, the observed images' size")
        index = torch.arange(n) % len(data)
        return data[index.to(data.device)].to(device).clone()
    raise ValueError(f"unknown chain init {how!r}; use zeros, noise or data")
