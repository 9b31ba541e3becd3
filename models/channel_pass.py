"""The score-and-gradient pass of one image with each convolution cut by channels across threads.

Why: ``models.cpu_split`` shares a batch of chains across the cores, a chain or more a thread,
but a single chain (the ``texture`` preset samples and learns with one) has nothing to share
that way, and its pass was little faster on two threads than on one: on a 2-core Xeon the
224 px ``texture`` pass took 23 ms on one thread (NNPACK's FFT convolutions, which run on one
thread only: ``models.cpu_conv``) and 18-19 ms on two (oneDNN). Here each convolution of the
pass is cut into shares, one a thread, each of which NNPACK may serve:

- every convolution but one is cut by its output channels: each share reads the whole input,
  computes its slice of the output and finishes that slice itself (ReLU on the way up; the
  ReLU mask of the layer below on the way down);
- the bottom layer's input gradient has 3 output channels (the image's), too few to cut, so the
  sum over its input channels is cut instead and the caller adds the shares' partial gradients
  (reading them through the pixel shuffle's permutation, so that the shuffle costs no pass).

The threads meet once a convolution (six times a step of a 3-layer net), some tens of
microseconds against milliseconds of work. A strided layer's forward convolution runs in
space-to-depth form where NNPACK takes that form (``models.net.space_to_depth_on_nnpack``, as
in the one pass). Activations are NCHW, where a channel slice of one image is
one block of memory. The numbers are those of ``EnergyNet.score_and_grad_view`` to float
rounding (to 1e-10 in float64: tests/models/test_channel_pass.py); as for any change of
algorithm, a ReLU whose input is within rounding of zero may switch, and the gradient then
differs over that unit's receptive field.

Pure PyTorch: ``run(calls)`` runs a list of argument-free callables concurrently and returns
when all are done (``models.cpu_split`` gives it its worker threads, each on one torch thread).
Float32 single-category nets only (``applies``).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch.nn import functional as F

from . import cpu_conv
from .net import (_decoder_weight, crop_to_input, decoder_padding, depth_to_space_crop, output_size,
                  space_to_depth_on_nnpack)

Run = Callable[[Sequence[Callable[[], None]]], None]


def applies(net, amp: bool = False) -> bool:
    """Whether this pass serves ``net``: not under bfloat16 autocast (the bottom layer's partial
    gradients would each be rounded to bfloat16, and on the 2-core Xeon an early version took
    9.7 ms against 5.2 ms in one pass, where oneDNN's AMX kernels serve the whole batch), one
    category, plain convolutions with equal strides."""
    plain = all(conv.groups == 1 and conv.dilation == (1, 1) and conv.stride[0] == conv.stride[1]
                for conv in net.active_convs())
    return not amp and net.categories == 1 and plain


def bounds(size: int, shares: int) -> list[tuple[int, int]]:
    """The non-empty [lo, hi) slices of ``range(size)`` for up to ``shares`` shares, even in size."""
    edges = [size * i // shares for i in range(shares + 1)]
    return [(lo, hi) for lo, hi in zip(edges, edges[1:]) if hi > lo]


@torch.no_grad()
def score_and_grad(net, x: torch.Tensor, shares: int, run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) per image and df/dx, as ``net.score_and_grad_view(x)`` gives them, with each
    convolution cut into ``shares`` run by ``run`` (module docstring). Float32 (or float64),
    outside autocast like the workers: a caller's autocast is switched off here."""
    if not applies(net):
        raise ValueError("channel_pass serves single-category nets of plain convolutions with equal strides")
    with torch.autocast("cpu", enabled=False):
        return _score_and_grad(net, x, shares, run)


def _score_and_grad(net, x, shares, run):
    """Bottom-up keeping each layer's input, then top-down, as ``EnergyNet._score_and_input_grad``."""
    convs = net.active_convs()
    params = [(conv.weight, conv.bias) for conv in convs]
    h = x.detach().contiguous()
    inputs = []
    for conv, (w, b) in zip(convs[:-1], params[:-1]):
        inputs.append(h)
        h = _forward(h, conv, w, b, shares, run)
    inputs.append(h)
    f, g = _forward_top(h, convs[-1], *params[-1], _head(net), shares, run)
    for i in range(len(convs) - 1, 0, -1):
        g = _input_grad(g, convs[i], inputs[i], shares, run)
    g = _bottom_input_grad(g, convs[0], x.shape[-2:], shares, run)
    return f.to(x.dtype), g.to(x.dtype)


def _head(net) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """None for the sum top; the FC unit's (weight, bias) at the net's depth."""
    if net.top == "sum":
        return None
    return net.heads[net.depth - 1], net.head_biases[net.depth - 1]


# ---- the layers ------------------------------------------------------------------------------
def _forward(h, conv, w, b, shares, run) -> torch.Tensor:
    """ReLU(conv(h)), NCHW."""
    x, wx, convolve, (oh, ow) = _forward_form(h, conv, w)
    out = torch.empty(h.shape[0], w.shape[0], oh, ow, dtype=h.dtype)

    def finish(y, lo, hi):
        torch.clamp_min(y[..., :oh, :ow], 0, out=out[:, lo:hi])  # ReLU and the store in one

    _shared(x, wx, b, convolve, shares, run, finish)
    return out


def _forward_top(h, conv, w, b, head, shares, run) -> tuple[torch.Tensor, torch.Tensor]:
    """The top layer: (f, d f / d its pre-activation), f the sum of its ReLU map (``head``
    None) or the FC unit over it."""
    x, wx, convolve, (oh, ow) = _forward_form(h, conv, w)
    out = torch.empty(h.shape[0], w.shape[0], oh, ow, dtype=h.dtype)
    parts = {}

    def finish(y, lo, hi):
        y = y[..., :oh, :ow].relu_()
        if head is None:
            parts[lo] = y.sum(dim=(1, 2, 3))
            torch.sign(y, out=out[:, lo:hi])
        else:
            hw = head[0][lo:hi].to(y.dtype)
            parts[lo] = (y * hw).sum(dim=(1, 2, 3))
            torch.mul(y.sign_(), hw, out=out[:, lo:hi])

    _shared(x, wx, b, convolve, shares, run, finish)
    f = sum(parts[lo] for lo in sorted(parts))
    if head is not None:
        f = f + head[1].to(f.dtype)
    return f, out


def _forward_form(h, conv, w):
    """(input, filters, convolve(x, w, b), output size) of a layer's forward convolution: in
    space-to-depth form for a strided layer where NNPACK takes that form
    (``models.net.space_to_depth_on_nnpack``: the output may then have extra rows and columns,
    for the caller to crop; each slice is a stride-1 convolution, which ``models.cpu_conv``
    times for its own shape), else as the layer is."""
    if conv.stride == (1, 1):
        return h, w, lambda xs, ws, bs: cpu_conv.conv2d(xs, ws, bs, conv.padding), output_size(h.shape[-2:], conv)
    form = space_to_depth_on_nnpack(h, conv, w)
    if form is not None:
        return form[0], form[1], lambda xs, ws, bs: cpu_conv.conv2d(xs, ws, bs, (0, 0)), form[2]
    return h, w, lambda xs, ws, bs: F.conv2d(xs, ws, bs, conv.stride, conv.padding), output_size(h.shape[-2:], conv)


def _input_grad(g, conv, below, shares, run) -> torch.Tensor:
    """d<g, conv(x)>/dx masked by the ReLU pattern of ``below`` (the layer's input, a ReLU map,
    overwritten with the result), cut by the input's channels."""
    s, wt, padding = conv.stride[0], _decoder_weight(conv), decoder_padding(conv)

    def finish(y, lo, hi):
        if s > 1:
            y = depth_to_space_crop(y, s, conv.padding, below.shape[-2:])
        below[:, lo:hi].sign_().mul_(y)

    _shared(g, wt, None, lambda xs, ws, _: cpu_conv.conv2d(xs, ws, None, padding), shares, run, finish, group=s * s)
    return below


def _bottom_input_grad(g, conv, size, shares, run) -> torch.Tensor:
    """d<g, conv(x)>/dx of the bottom layer, for an image of ``size``: its 3 input channels are
    too few to cut, so the sum over ``g``'s channels is cut instead and the caller adds the
    shares' partial gradients; for a strided layer it adds them in space-to-depth form, read
    through the pixel shuffle's permutation, so that the shuffle costs no pass of its own."""
    s, wt, padding = conv.stride[0], _decoder_weight(conv), decoder_padding(conv)
    cuts = bounds(g.shape[1], shares)
    parts: list = [None] * len(cuts)

    def partial(j, lo, hi):
        parts[j] = cpu_conv.conv2d(g[:, lo:hi], wt[:, lo:hi].contiguous(), None, padding)

    run([_bind(partial, j, lo, hi) for j, (lo, hi) in enumerate(cuts)])
    if s == 1:
        out = parts[0].clone()
    else:  # c = C_in * s * s; pixel (s a + i, s b + j) of image channel k is [k, i, j, a, b]
        n, c, h, w = parts[0].shape
        parts = [p.view(n, c // (s * s), s, s, h, w).permute(0, 1, 4, 2, 5, 3) for p in parts]  # [k, a, i, b, j]
        out = torch.empty(parts[0].shape, dtype=g.dtype)  # contiguous: written in image order
        if len(parts) == 1:
            out.copy_(parts[0])
        else:
            torch.add(parts[0], parts[1], out=out)
    for part in parts[1 if s == 1 else 2:]:
        out.add_(part)
    if s > 1:
        out = crop_to_input(out.view(n, c // (s * s), h * s, w * s), conv.padding, size)
    return out


# ---- one convolution by shares ---------------------------------------------------------------
def _shared(x, w, b, convolve, shares, run, finish, group: int = 1) -> None:
    """``finish(convolve(x, w[lo * group : hi * group], b[...]), lo, hi)`` on one share each, for
    slices [lo, hi) of the output channel groups (``group`` channels each: s * s for a
    space-to-depth gradient, whose pixel shuffle needs a whole group; ``b`` may be None).
    ``finish`` may overwrite its tensor."""
    def sliced(lo, hi):
        finish(convolve(x, w[lo * group : hi * group], None if b is None else b[lo * group : hi * group]), lo, hi)

    run([_bind(sliced, lo, hi) for lo, hi in bounds(w.shape[0] // group, shares)])


def _bind(fn, *args) -> Callable[[], None]:
    """``fn(*args)`` under no_grad on whichever thread runs it (grad mode is per thread)."""
    def call():
        with torch.no_grad():
            fn(*args)
    return call
