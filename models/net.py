"""The bottom-up ConvNet score f(I; w) of the generative ConvNet.

p(I; w) = exp(f(I; w)) q(I) / Z(w) with q = N(0, sigma^2 Id). Every conv layer is followed by
ReLU (the top one too). The top is either the sum of the top ReLU map over every position and
channel (texture / codebook models), or one fully connected unit over the whole top map with no
ReLU (object models). With ReLU, f is piecewise linear in I.

Layer-by-layer learning trains layers 1..k with layer k as the top; ``depth`` says how many conv
layers are active now. Object models keep one FC unit per depth (a fresh one for each stage, as in
the release), so the set of parameters never changes shape and checkpoints stay simple.

Several categories (``preset.categories = K > 1``, the paper's multi-class view: each category is
an exponential tilting of the Gaussian base category q) share the lower conv layers. Sum top: the
top conv layer has K * C output channels and f_k sums the ReLU map of channel group k (channels
[k C, (k + 1) C)). FC top: K FC units (weights [K, C, H, W], biases [K]) over the shared top map.
Every score takes ``labels`` (a LongTensor [N], the category of each image; None = category 0).
With K = 1 the net, its parameters and its code path are exactly the single-category ones.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.nn import functional as F

from . import cpu_conv, cpu_layout
from .presets import ConvSpec, Preset


def conv_out_size(size: int, spec: ConvSpec) -> int:
    return (size + 2 * spec.padding - spec.kernel) // spec.stride + 1


def map_sizes(layers: tuple[ConvSpec, ...], size: int) -> list[int]:
    """Side of each layer's output map for a square input of ``size`` pixels."""
    sizes = []
    for spec in layers:
        size = conv_out_size(size, spec)
        if size < 1:
            raise ValueError(f"an input of this size is too small for layer {len(sizes) + 1} ({spec})")
        sizes.append(size)
    return sizes


class EnergyNet(nn.Module):
    """f(I; w): conv + ReLU layers and a sum or FC top; ``forward`` returns one score per image."""

    def __init__(self, preset: Preset, generator: torch.Generator | None = None):
        super().__init__()
        self.top = preset.top
        self.layers_spec = preset.layers
        self.image_size = preset.image_size
        self.categories = k = preset.categories
        channels = 3
        self.convs = nn.ModuleList()
        last = len(preset.layers) - 1
        for i, spec in enumerate(preset.layers):
            # sum top with K categories: the top conv has one group of out_channels per category
            out = spec.out_channels * (k if self.top == "sum" and i == last else 1)
            self.convs.append(nn.Conv2d(channels, out, spec.kernel, spec.stride, spec.padding))
            channels = out
        self.heads = nn.ParameterList()
        self.head_biases = nn.ParameterList()
        if self.top == "fc":
            for spec, side in zip(preset.layers, map_sizes(preset.layers, preset.image_size)):
                if k == 1:  # shapes of single-category checkpoints
                    self.heads.append(nn.Parameter(torch.empty(spec.out_channels, side, side)))
                    self.head_biases.append(nn.Parameter(torch.zeros(())))
                else:
                    self.heads.append(nn.Parameter(torch.empty(k, spec.out_channels, side, side)))
                    self.head_biases.append(nn.Parameter(torch.zeros(k)))
        self.depth = len(self.convs)
        self.reset_parameters(preset.init_std, generator)

    @torch.no_grad()
    def reset_parameters(self, std: float, generator: torch.Generator | None = None) -> None:
        """The release's initialisation: weights N(0, std^2), biases 0."""
        for conv in self.convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * std)
            conv.bias.zero_()
        for w, b in zip(self.heads, self.head_biases):
            w.copy_(torch.randn(w.shape, generator=generator) * std)
            b.zero_()

    def set_depth(self, depth: int) -> None:
        if not 1 <= depth <= len(self.convs):
            raise ValueError(f"depth must be between 1 and {len(self.convs)}")
        if self.categories > 1 and depth != len(self.convs):
            raise ValueError(f"a model of {self.categories} categories works at its full depth {len(self.convs)} only")
        self.depth = depth

    def check_labels(
        self, labels: torch.Tensor | int | None, n: int, device: torch.device
    ) -> torch.Tensor | int | None:
        """``labels`` as a LongTensor [n] on ``device`` (None stays None; an int, one category for
        every image, stays an int). Shape errors and, for labels on the CPU, categories out of
        range raise ValueError (CUDA labels are not read back here, to keep the sampler free of
        device syncs: the sampler checks them once)."""
        if labels is None:
            return None
        if isinstance(labels, int) and not isinstance(labels, bool):
            if not 0 <= labels < self.categories:
                raise ValueError(f"labels must be categories in [0, {self.categories}), got {labels}")
            return labels
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != n:
            raise ValueError(f"labels must be one category per image ({n}), got shape {tuple(labels.shape)}")
        if labels.dtype != torch.long:
            if labels.dtype.is_floating_point or labels.dtype == torch.bool:
                raise ValueError(f"labels must be integer categories, got {labels.dtype}")
            labels = labels.long()
        if labels.device.type == "cpu" and n and (labels.min() < 0 or labels.max() >= self.categories):
            raise ValueError(f"labels must be categories in [0, {self.categories}), got "
                             f"{int(labels.min())}..{int(labels.max())}")
        return labels.to(device)

    def _top_mask(self, labels: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
        """Sum top, K > 1: the per-image channel mask [n, K C, 1, 1] selecting group labels[i]."""
        k, c = self.categories, like.shape[1] // self.categories
        if labels is None:
            labels = torch.zeros(n, dtype=torch.long, device=like.device)
        groups = torch.arange(k, device=like.device) == labels[:, None]  # [n, K]
        return groups.to(like.dtype).repeat_interleave(c, dim=1)[:, :, None, None]

    def check_size(self, size: tuple[int, int]) -> None:
        """Object models have a fixed input size (the FC unit covers the whole map)."""
        if self.top == "fc" and tuple(size) != (self.image_size, self.image_size):
            raise ValueError(
                f"this object model works on {self.image_size} x {self.image_size} images only, got "
                f"{size[0]} x {size[1]}"
            )

    def active_convs(self) -> tuple[nn.Conv2d, ...]:
        """The convolutions of the active layers. A tuple: slicing the ModuleList builds a new
        ModuleList, ~11 us each time, several times a pass (1-2 % of a 64 px step)."""
        return tuple(self.convs)[: self.depth]

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The ReLU map of every active layer."""
        maps = []
        for conv in self.active_convs():
            x = F.relu(conv(x))
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor, labels: torch.Tensor | int | None = None) -> torch.Tensor:
        """f_k(x) per image, k = labels[i] (an int: the same category for all; None: category 0)."""
        if self.categories == 1:
            self.check_labels(labels, x.shape[0], x.device)
            top = self.feature_maps(x)[-1]
            if self.top == "sum":
                return top.sum(dim=(1, 2, 3))
            w, b = self.heads[self.depth - 1], self.head_biases[self.depth - 1]
            return (top * w.to(top.dtype)).sum(dim=(1, 2, 3)) + b
        labels = self.check_labels(labels, x.shape[0], x.device)
        if labels is None:
            labels = 0
        if isinstance(labels, int):
            return self.category_scores(x)[:, labels]
        return self.category_scores(x).gather(1, labels[:, None]).squeeze(1)

    def category_scores(self, x: torch.Tensor) -> torch.Tensor:
        """f_k(x) for every category: [N, K] (the K logits of the discriminative view)."""
        top = self.feature_maps(x)[-1]
        n, k = x.shape[0], self.categories
        if self.top == "sum":
            return top.sum(dim=(2, 3)).reshape(n, k, -1).sum(dim=2)
        w, b = self.heads[self.depth - 1], self.head_biases[self.depth - 1]
        w = w.to(top.dtype).reshape(k, -1)
        return top.reshape(n, -1) @ w.t() + b.to(top.dtype).reshape(k)

    def active_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters that learning at the current depth updates, by name."""
        names = {f"convs.{i}." for i in range(self.depth)}
        keep = []
        for name, p in self.named_parameters():
            if any(name.startswith(n) for n in names):
                keep.append((name, p))
            elif name in (f"heads.{self.depth - 1}", f"head_biases.{self.depth - 1}"):
                keep.append((name, p))
        return keep

    def output_area(self, name: str, size: tuple[int, int]) -> int:
        """H * W of the output map of the layer owning parameter ``name`` (1 for the FC unit)."""
        if not name.startswith("convs."):
            return 1
        index = int(name.split(".")[1])
        h, w = size
        for spec in self.layers_spec[: index + 1]:
            h, w = conv_out_size(h, spec), conv_out_size(w, spec)
        return h * w

    def cost_key(self) -> tuple:
        """What the time of a pass depends on besides the batch's shape: the active layers'
        shapes, the top and the number of categories (a key for the measured CPU choices)."""
        return (self.top, self.categories, self.depth,
                tuple(tuple(c.weight.shape) + c.stride + c.padding for c in self.active_convs()))

    def pass_flops(self, shape: tuple[int, ...] | torch.Size) -> float:
        """Multiply-adds x 2 of one score-and-gradient pass's convolutions (forward and input
        gradient of each active layer, as direct convolutions) for a batch of ``shape``."""
        n, _, h, w = shape
        total = 0.0
        for conv in self.active_convs():
            co, ci, kh, kw = conv.weight.shape
            (sh, sw), (ph, pw) = conv.stride, conv.padding
            h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            total += 2 * 2.0 * n * co * ci * kh * kw * h * w
        return total

    def score_and_grad(
        self, x: torch.Tensor, amp: bool = False, labels: torch.Tensor | int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """f(x) per image and df/dx (float32, same shape as x), without touching parameter grads.
        With several categories, f is f_k with k = labels[i] (``labels``: a LongTensor [N], or an
        int for one category for every image, the cheapest: only that category's top is
        computed; None: category 0).

        ``amp`` runs the network under bfloat16 autocast (the pipeline's choice: ``models.precision``); the
        returned gradient is cast back to the chains' dtype so that chain state stays in float32.

        df/dx is computed by an explicit top-down pass (the decoder of the auto-encoder view: the
        same filters, masked by the ReLU pattern) instead of autograd; it equals autograd's
        gradient to float rounding (``score_and_grad_autograd`` is kept as the reference). A
        strided layer's input gradient is taken in space-to-depth form (a stride-1 convolution
        with the flipped filters, then a pixel shuffle), which oneDNN runs 2-4x faster than the
        strided transposed convolution autograd uses (see docs/benchmarks.md).
        """
        f, g = self.score_and_grad_view(x, amp, labels)
        return f, g.contiguous()

    def score_and_grad_view(
        self, x: torch.Tensor, amp: bool = False, labels: torch.Tensor | int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``score_and_grad`` without the final copy: df/dx may be a strided view (for the sampler,
        which only reads it once)."""
        if labels is not None:
            labels = self.check_labels(labels, x.shape[0], x.device)
        with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            x = x.detach()
            if self.categories == 1:
                def run(fmt):
                    return self._score_and_input_grad(x, fmt)
            else:
                def run(fmt):
                    return self._score_and_input_grad_categories(x, labels, fmt)
            kind = labels_kind(labels if self.categories > 1 else None)  # one category ignores them
            low = _cpu_autocast_dtype(x)
            fmt = cpu_layout.choose(self, x, low, run, kind)
            if cpu_layout.one_at_a_time(self, x, low, lambda: run(fmt), lambda: self._one_at_a_time(x, labels), kind):
                f, g = self._one_at_a_time(x, labels)
            else:
                f, g = run(fmt)
        return f.to(x.dtype), g.to(x.dtype)

    def _one_at_a_time(self, x: torch.Tensor, labels: torch.Tensor | int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The float32 pass chain by chain (``models.cpu_layout.one_at_a_time``), each its own pass."""
        parts = [self.score_and_grad_view(x[i : i + 1], labels=labels[i : i + 1] if isinstance(labels, torch.Tensor)
                                          else labels) for i in range(x.shape[0])]
        return torch.cat([f for f, _ in parts]), torch.cat([g for _, g in parts])

    def score_and_grad_autograd(
        self, x: torch.Tensor, amp: bool = False, labels: torch.Tensor | int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same as ``score_and_grad`` by autograd: the straightforward reference."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                f = self(x, labels)
            (g,) = torch.autograd.grad(f.sum(), x)
        return f.detach().to(x.dtype), g  # the gradient has the chains' dtype (float32 under autocast too)

    def _score_and_input_grad(
        self, x: torch.Tensor, memory_format: torch.memory_format = torch.channels_last
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bottom-up pass keeping each ReLU map, then the top-down pass (call under no_grad).

        Activations are in ``memory_format``: channels-last (NHWC) unless ``models.cpu_layout``
        measured NCHW faster (oneDNN's convolutions, and cuDNN's under bf16, run 10-15 % faster
        channels-last for these nets; NNPACK's take NCHW)."""
        low = _cpu_autocast_dtype(x)
        inputs, h = [], (x if low is None else x.to(low)).contiguous(memory_format=memory_format)
        convs = self.active_convs()
        params = [_params_in(conv, conv.weight, conv.bias, low) for conv in convs]
        for conv, (w, b) in zip(convs, params):
            inputs.append(h)
            h = conv_forward(h, conv, w, b).relu_()
        # The ReLU maps are >= 0, so sign() turns each, in place, into its 0/1 activation pattern
        # once it is no longer needed as a value: no new buffers in the top-down pass.
        if self.top == "sum":
            f = h.sum(dim=(1, 2, 3))
            g = h.sign_()  # d f / d (top pre-activation): 1 where the ReLU is on
        else:
            w, b = self.heads[self.depth - 1], self.head_biases[self.depth - 1]
            w = w.to(h.dtype)
            f = (h * w).sum(dim=(1, 2, 3)) + b
            g = h.sign_().mul_(w)
        for i in range(self.depth - 1, -1, -1):
            g = conv_input_grad(g, convs[i], inputs[i].shape[-2:], params[i][0] if low is not None else None,
                                memory_format if i > 0 else cpu_conv.memory_format_of(x))
            if i > 0:  # through the ReLU of the layer below: zero where it was off
                g = g.mul_(inputs[i].sign_())
        return f, g

    def _score_and_input_grad_categories(
        self, x: torch.Tensor, labels: torch.Tensor | int | None,
        memory_format: torch.memory_format = torch.channels_last,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``_score_and_input_grad`` for K > 1: f_k and df_k/dx with k = labels[i]. The top-down
        pass starts from the selected category only: a per-image channel mask of the top map
        (sum top) or the gathered FC weights (fc top); below the top it is the same pass. With one
        category for every image (an int), the sum top's conv runs on that group's filters only,
        so sampling one category costs what a single-category net does."""
        convs = self.active_convs()
        n, top = x.shape[0], convs[-1]
        if labels is None:
            labels = 0
        one = isinstance(labels, int)
        weight, bias = top.weight, top.bias
        if one and self.top == "sum":
            c = weight.shape[0] // self.categories
            weight, bias = weight[labels * c : (labels + 1) * c], bias[labels * c : (labels + 1) * c]
        low = _cpu_autocast_dtype(x)
        inputs, h = [], (x if low is None else x.to(low)).contiguous(memory_format=memory_format)
        params = [_params_in(conv, *((weight, bias) if conv is top else (conv.weight, conv.bias)), low)
                  for conv in convs]
        for conv, (w, b) in zip(convs, params):
            inputs.append(h)
            h = conv_forward(h, conv, w, b).relu_()
        if self.top == "sum":
            if one:
                f = h.sum(dim=(1, 2, 3))
                g = h.sign_()
            else:
                f = h.sum(dim=(2, 3)).reshape(n, self.categories, -1).sum(dim=2).gather(1, labels[:, None]).squeeze(1)
                g = h.sign_().mul_(self._top_mask(labels, n, h))
        else:
            w, b = self.heads[self.depth - 1], self.head_biases[self.depth - 1]
            w = w[labels].to(h.dtype) if one else w.to(h.dtype)[labels]  # each image's own FC unit
            f = (h * w).sum(dim=(1, 2, 3)) + b[labels].to(h.dtype)
            g = h.sign_().mul_(w)
        for i in range(self.depth - 1, -1, -1):
            conv = convs[i]
            g = conv_input_grad(g, conv, inputs[i].shape[-2:], params[i][0] if low is not None or conv is top else None,
                                memory_format if i > 0 else cpu_conv.memory_format_of(x))
            if i > 0:
                g = g.mul_(inputs[i].sign_())
        return f, g


# Per-module caches of derived filters (weak keys: they go with their module; not attributes of
# it, so a module can still be pickled, deep-copied or saved whole).
_CASTS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_DERIVED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def labels_kind(labels: torch.Tensor | int | None) -> str:
    """``none``, ``one`` (an int: one category for all) or ``each``: the cost of a pass differs."""
    return "none" if labels is None else "one" if isinstance(labels, int) else "each"


def _cpu_autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype CPU autocast would cast this pass's float32 convolutions to, or None outside it
    (autocast leaves float64 alone, and so does this pass)."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return None


def _params_in(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None,
               dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``weight`` and ``bias`` (a conv's, or a slice of them) in ``dtype`` (None: as they are),
    cast once per update rather than by autocast at every call: the Langevin loop calls the net
    with the same parameters tens of times (on a 2-core Xeon the casts were 8 % of a bf16 pass at
    224 px). Cached per module and tensor, keyed by its owner (by weak reference), storage and
    version, so an in-place update (the optimiser's, ``load_state_dict``'s) is seen; a write
    through ``.data`` bumps no version and is not. Detached copies: for the no-grad pass only.
    CPU only: a CUDA graph must cast from the live weights."""
    if dtype is None:
        return weight, bias
    assert not torch.is_grad_enabled(), "cached casts are detached: the explicit pass runs under no_grad"
    cache = _CASTS.setdefault(conv, {})

    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or t.dtype != torch.float32:  # autocast casts float32 only
            return t
        owner = t if t._base is None else t._base  # a category's slice: its parameter
        key = (id(owner), t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, dtype)
        hit = cache.get(key)
        if hit is None or hit[0]() is not owner or hit[1] != t._version:
            if len(cache) > 8:  # old slices, replaced parameters
                cache.clear()
            hit = (weakref.ref(owner), t._version, t.detach().to(dtype))
            cache[key] = hit
        return hit[2]

    return cast(weight), cast(bias)


def space_to_depth_weight(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """A stride-s conv's filters as stride-1 filters over the pixel-unshuffled input.

    W'[o, c*s*s + i*s + j, a, b] = W[o, c, a*s + i, b*s + j], the kernel zero-padded to a
    multiple of s. ``conv2d(pixel_unshuffle(pad(x)), W')`` equals ``conv2d(x, W, stride=s)``.
    """
    co, ci, kh, kw = weight.shape
    s = stride
    ph, pw = -(-kh // s) * s, -(-kw // s) * s
    if (ph, pw) != (kh, kw):
        weight = F.pad(weight, (0, pw - kw, 0, ph - kh))
    w = weight.reshape(co, ci, ph // s, s, pw // s, s).permute(0, 1, 3, 5, 2, 4)
    return w.reshape(co, ci * s * s, ph // s, pw // s)


def conv_forward(
    x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``conv(x)`` (with ``weight`` / ``bias`` in place of the module's when given); a stride-1
    layer on the CPU may run on NNPACK's FFT kernels (``models.cpu_conv``)."""
    w, b = (conv.weight, conv.bias) if weight is None else (weight, bias)
    if conv.stride == (1, 1) and conv.groups == 1 and conv.dilation == (1, 1):
        return cpu_conv.conv2d(x, w, b, conv.padding)
    form = space_to_depth_on_nnpack(x, conv, w)
    if form is not None:
        xs, ws, (oh, ow) = form
        return cpu_conv.nnpack_conv2d(xs, ws, b, (0, 0))[..., :oh, :ow]
    return F.conv2d(x, w, b, conv.stride, conv.padding)


def space_to_depth_on_nnpack(
    x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]] | None:
    """A strided layer's forward convolution as NNPACK can take it, where ``models.cpu_conv``
    picks that (timed against oneDNN's strided kernel): (the input padded and pixel-unshuffled,
    ``space_to_depth_weight``'s filters, the output's size, to crop the stride-1 convolution's
    extra rows and columns to); else None. Why: on a 2-core Xeon, one thread, the ``texture``
    preset's first layer (15 x 15, stride 3, at 224 px) took 2.4 ms so against 4.6-4.8 ms by
    oneDNN's strided kernel."""
    sh, sw = conv.stride
    if (x.device.type != "cpu" or sh != sw or conv.groups != 1 or conv.dilation != (1, 1)
            or not cpu_conv.use_nnpack_strided(x, weight.shape, sh, conv.padding)):
        return None
    return (cpu_conv.space_to_depth(x, sh, conv.padding), _encoder_weight(conv, weight),
            output_size(x.shape[-2:], conv))


def output_size(size: tuple[int, int], conv: nn.Conv2d) -> tuple[int, int]:
    """The output map's (H, W) of ``conv`` for an input of ``size``."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    return (size[0] + 2 * ph - kh) // sh + 1, (size[1] + 2 * pw - kw) // sw + 1


def decoder_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """The padding of ``conv``'s input gradient as a stride-1 convolution with the decoder's
    flipped filters (``_decoder_weight``): k - 1 - p at stride 1, k' - 1 in space-to-depth form."""
    (kh, kw), (ph, pw), s = conv.kernel_size, conv.padding, conv.stride[0]
    if s == 1:
        return kh - 1 - ph, kw - 1 - pw
    return -(-kh // s) - 1, -(-kw // s) - 1


def conv_input_grad(
    g: torch.Tensor, conv: nn.Conv2d, size: tuple[int, int], weight: torch.Tensor | None = None,
    memory_format: torch.memory_format | None = None,
) -> torch.Tensor:
    """d<g, conv(x)>/dx for an input of spatial ``size``: the transposed convolution of ``g``
    (with ``weight`` in place of ``conv.weight`` when given: one category's filters of a top conv).

    Stride 1: ``conv_transpose2d`` (measured faster than autograd's ``convolution_backward``), or
    on the CPU, where ``models.cpu_conv`` picks NNPACK, the equal convolution with the flipped,
    transposed filters.
    Equal strides s > 1: in space-to-depth form, as a stride-1 convolution of ``g`` with the
    flipped, transposed space-to-depth filters (s*s times the input channels), a pixel shuffle,
    then the crop (or zero fill) to ``size``; exact up to float rounding (on the CPU the shuffle
    and the crop are one pass of copies into ``memory_format``, default the convolution's:
    ``depth_to_space_crop``). Anything else (dilation, groups, unequal strides): autograd's own
    kernel.
    """
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    w = conv.weight if weight is None else weight
    if conv.groups != 1 or conv.dilation != (1, 1) or sh != sw:
        shape = (g.shape[0], w.shape[1] * conv.groups, *size)
        return torch.nn.grad.conv2d_input(shape, w.to(g.dtype), g, conv.stride, conv.padding, conv.dilation,
                                          conv.groups)
    if sh == 1:
        kh, kw = w.shape[-2:]
        flipped_padding = decoder_padding(conv)
        if cpu_conv.use_nnpack(g, torch.Size((w.shape[1], w.shape[0], kh, kw)), flipped_padding):
            return cpu_conv.nnpack_conv2d(g, _decoder_weight(conv, weight), None, flipped_padding)
        return F.conv_transpose2d(g, w, None, 1, (ph, pw))
    s = sh
    wt = _decoder_weight(conv, weight)  # [C_in * s * s, C_out, k', k'], flipped
    y = cpu_conv.conv2d(g, wt, None, decoder_padding(conv))
    if y.device.type == "cpu":
        return depth_to_space_crop(y, s, conv.padding, size, memory_format or cpu_conv.memory_format_of(y))
    return crop_to_input(F.pixel_shuffle(y, s), conv.padding, size)


def depth_to_space_crop(y: torch.Tensor, s: int, padding: tuple[int, int], size: tuple[int, int],
                        memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """``crop_to_input(F.pixel_shuffle(y, s), padding, size)`` as a new tensor in
    ``memory_format``, written by s * s strided copies (one per phase (i, j): the output pixels
    (r, c) with (r + p) % s == i and (c + p') % s == j, read from channel group (i, j) of ``y``).
    Why: on a 2-core Xeon, one thread, the ``texture-fast`` first layer's gradient (4 chains,
    [4, 12, 35, 35] -> [4, 3, 64, 64]) took 151 us by ``F.pixel_shuffle`` and the crop against 76 us
    here, and the chains' update then reads it in their own layout, not through a cropped
    channels-last view (docs/benchmarks.md)."""
    (ph, pw), (h, w) = padding, size
    n, cs, yh, yw = y.shape
    if ph + h > yh * s or pw + w > yw * s:  # rows the stride never reached: zero filled there
        return crop_to_input(F.pixel_shuffle(y, s), padding, size)
    out = torch.empty((n, cs // (s * s), h, w), dtype=y.dtype, device=y.device, memory_format=memory_format)
    phases = y.view(n, cs // (s * s), s, s, yh, yw)
    for i in range(s):
        r0 = (i - ph) % s  # the first output row in phase i
        rows, a = len(range(r0, h, s)), (r0 + ph) // s
        for j in range(s):
            c0 = (j - pw) % s
            cols, b = len(range(c0, w, s)), (c0 + pw) // s
            if rows and cols:
                out[:, :, r0::s, c0::s] = phases[:, :, i, j, a : a + rows, b : b + cols]
    return out


def crop_to_input(gi: torch.Tensor, padding: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """A space-to-depth input gradient, which covers the padded input's rows and columns
    [0, Hp), cut to the input's [p, p + H) (zero filled where Hp falls short: rows the stride
    never reached)."""
    (ph, pw), (h, wd) = padding, size
    hp, wp = gi.shape[-2:]
    if ph + h <= hp and pw + wd <= wp:
        return gi[..., ph : ph + h, pw : pw + wd]
    return F.pad(gi, (-pw, wd + pw - wp, -ph, h + ph - hp))


def _decoder_weight(conv: nn.Conv2d, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The flipped, transposed space-to-depth filters of a conv, or of ``weight``, a slice of its
    filters (for stride 1, simply the flipped, transposed filters), cached (``_derived_filters``)."""
    return _derived_filters(conv, weight, "decoder")


def _encoder_weight(conv: nn.Conv2d, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``space_to_depth_weight`` of a strided conv's filters (or of ``weight``), contiguous,
    cached (``_derived_filters``): 0.1 ms a step for the ``texture`` preset's first layer."""
    return _derived_filters(conv, weight, "encoder")


def _derived_filters(conv: nn.Conv2d, weight: torch.Tensor | None, kind: str) -> torch.Tensor:
    """The ``decoder`` or ``encoder`` filters of a conv's weight (or of ``weight``), cached on the
    module until that weight changes (in-place updates bump the tensor's version, which a slice
    shares). The cache also holds a weak reference to the tensor that owns the filters: a new
    tensor (the bfloat16 copy ``_params_in`` makes after an update) may reuse a freed one's
    address and version."""
    w = conv.weight if weight is None else weight

    def make() -> torch.Tensor:
        s2d = space_to_depth_weight(w.detach(), conv.stride[0])
        return (s2d.flip(-1, -2).transpose(0, 1) if kind == "decoder" else s2d).contiguous()

    if w.is_cuda and torch.cuda.is_current_stream_capturing():
        return make()  # inside a CUDA graph: computed by the graph itself, from the live weights, at every replay
    owner = w if w._base is None else w._base
    key = (w.data_ptr(), w._version, w.dtype, w.device, w.shape)
    entries = _DERIVED.setdefault(conv, {})
    cached = entries.get(kind)
    if cached is None or cached[0] != key or cached[2]() is not owner:
        with torch.no_grad():
            cached = (key, make(), weakref.ref(owner))
        entries[kind] = cached
    return cached[1]
