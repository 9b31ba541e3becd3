"""Learning the generative ConvNet: maximum likelihood with persistent chains, or contrastive divergence.

    dL/dw = mean over observed df/dw  -  mean over synthesized df/dw

The synthesized images come from Langevin chains under the current w. The release's update rule
(``optimizer="release"``), per parameter tensor:

1. divide the gradient of each conv layer (weights and bias) by H * W of that layer's output map;
2. rescale the tensor so that max |g| <= clip (``clip_mode="max"``: when its largest positive
   entry exceeds clip, as the release's contrastive-divergence script does);
3. w <- w + lr * (g - wd * w), lr = Gamma for weights and bias_lr_mult * Gamma for biases, weight
   decay on weights only, with optional momentum.

``optimizer="adam"`` feeds the same processed gradient to Adam. Schedules: ``layer_by_layer``
(stage k trains layers 1..k with layer k as the top, Gamma times ``lr_stage_factor`` per stage,
chains reset to zeros at each stage) or ``end_to_end``.

``learner="recovery"`` is the short-run idea applied to recovery: every iteration, chains start
from observed images with a random fraction ``recovery_drop`` of their pixels dropped (filled by
a normalised blur of the known ones) and run ``langevin_steps`` steps on the missing pixels only,
the known ones clamped; these recoveries are the synthesized images of the gradient above. The
model learns to turn such fills into images like the observed ones, and ``models.inpaint``
recovers new images in exactly that way (docs/inpainting.md).

Several categories (``preset.categories = K > 1``; observed images come with ``labels``): one
net with K outputs learned from K datasets, each category against the Gaussian base category.
The objective is the sum over k of [mean f_k over the observed images of k - mean f_k over the
synthesized images of k]; there are ``n_chains`` chains per category (K * n_chains in all,
category by category), and contrastive divergence starts each chain at an observed image of its
own category. ``Progress.f_obs`` / ``f_syn`` are averages over the categories; each history entry
keeps the per-category gaps (``"gaps"``).

A learner's whole state (iteration, chains, optimiser buffers, random generator) goes into the
checkpoint, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from .langevin import init_chains
from .model import GenerativeModel


class NumericalError(RuntimeError):
    """Learning produced NaN or inf; the message says where. The last good checkpoint is kept."""


@dataclass
class Progress:
    """One learning iteration's report (``iteration`` counts completed iterations, from 1)."""

    iteration: int
    total: int
    stage: int  # 1-based
    n_stages: int
    f_obs: float
    f_syn: float
    lr: float
    elapsed: float  # seconds spent in this run of ``Learner.run``
    eta: Optional[float]  # seconds left, estimated from this run's pace

    @property
    def gap(self) -> float:
        """mean f(observed) - mean f(synthesized): learning drives it towards zero."""
        return self.f_obs - self.f_syn

    def as_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "total": self.total,
            "stage": self.stage,
            "n_stages": self.n_stages,
            "f_obs": self.f_obs,
            "f_syn": self.f_syn,
            "gap": self.gap,
            "lr": self.lr,
            "elapsed": self.elapsed,
            "eta": self.eta,
        }


ProgressCallback = Callable[["Learner", Progress], None]


def _mean_weights(labels: torch.Tensor, k: int) -> torch.Tensor:
    """[N, K]: 1 / (count of category k) where labels[i] = k, else 0."""
    onehot = torch.nn.functional.one_hot(labels, k).float()
    return onehot / onehot.sum(dim=0).clamp_min(1)


class Learner:
    """Runs learning iterations on one model and one set of observed images (model space).

    ``labels`` (LongTensor [N], one category per observed image) is required when the model has
    several categories; each category needs at least one image (the counts may differ).
    ``amp``: bfloat16 autocast for the net, in sampling and in the parameter gradient;
    ``amp_if_faster``: the sampler times float32 beside it and keeps the faster
    (``LangevinSampler``); the parameter gradient keeps ``amp``."""

    def __init__(
        self,
        model: GenerativeModel,
        observed: torch.Tensor,
        *,
        labels: Optional[torch.Tensor] = None,
        amp: bool = False,
        amp_if_faster: bool = False,
        cuda_graph: bool = False,
    ):
        self.model = model
        self.preset = model.preset
        self.device = model.device
        self.observed = observed.to(self.device).float()
        model.net.check_size(self.observed.shape[-2:])
        k = self.preset.categories
        # labels of the observed images and of the chains; None on the single-category path
        self.labels: Optional[torch.Tensor] = None
        if labels is None and k > 1:
            raise ValueError(f"a model of {k} categories learns from labelled images: pass labels=")
        if labels is not None:
            labels = model.net.check_labels(torch.as_tensor(labels).cpu(), len(self.observed), torch.device("cpu"))
            counts = torch.bincount(labels, minlength=k)
            if (counts == 0).any():
                missing = [model.category_names[i] for i in range(k) if counts[i] == 0]
                raise ValueError(f"no observed image for categor{'y' if len(missing) == 1 else 'ies'} "
                                 f"{', '.join(missing)}")
            if k > 1:
                self.labels = labels.to(self.device)
        self.sampler = model.sampler(amp=amp, amp_if_faster=amp_if_faster, cuda_graph=cuda_graph)
        self.amp = amp
        self.generator = torch.Generator(self.device).manual_seed(self.preset.seed + 1)
        self.iteration = 0
        self.chain_stage = -1
        self.chains: Optional[torch.Tensor] = None
        self.synthesis: Optional[torch.Tensor] = None  # the latest synthesized images
        self.buffers: dict[str, torch.Tensor] = {}
        self.adam_steps = 0

    @property
    def n_chains(self) -> int:
        """Chains of the ml and short-run learners: ``n_chains`` per category."""
        return self.preset.n_chains * self.preset.categories

    @property
    def chain_labels(self) -> Optional[torch.Tensor]:
        """The category of each chain (ml and short-run: category by category, ``n_chains``
        each; cd: the observed images' labels); None for a single-category model."""
        if self.labels is None:
            return None
        if self.preset.learner == "cd":
            return self.labels
        return torch.arange(self.preset.categories, device=self.device).repeat_interleave(self.preset.n_chains)

    # ---- schedule ------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return self.preset.total_iterations

    @property
    def done(self) -> bool:
        return self.iteration >= self.total

    def stage_of(self, iteration: int) -> int:
        if self.preset.schedule != "layer_by_layer" or self.preset.iterations == 0:
            return 0
        return min(iteration // self.preset.iterations, self.preset.n_stages - 1)

    def _set_depth(self, stage: int) -> None:
        depth = stage + 1 if self.preset.schedule == "layer_by_layer" else len(self.model.net.convs)
        self.model.net.set_depth(depth)

    def _begin_stage(self, stage: int) -> None:
        """Chains restart at zeros (the mean image) and optimiser state is reset for a new stage."""
        self._set_depth(stage)
        size = tuple(self.observed.shape[-2:])
        self.chains = init_chains("zeros", self.n_chains, size, device=self.device)
        self.chain_stage = stage
        self.buffers = {}
        self.adam_steps = 0

    # ---- one iteration -------------------------------------------------------------------
    def step(self) -> tuple[float, float, float]:
        """One learning iteration; returns (mean f observed, mean f synthesized, Gamma used)."""
        p, net = self.preset, self.model.net
        stage = self.stage_of(self.iteration)
        if stage != self.chain_stage:
            self._begin_stage(stage)
        lr = p.lr * p.lr_stage_factor**stage

        size = tuple(self.observed.shape[-2:])
        if p.learner == "cd":
            start = init_chains("data", len(self.observed), size, data=self.observed, device=self.device)
        elif p.learner == "short_run":
            start = init_chains("noise", self.n_chains, size, sigma=p.sigma, generator=self.generator,
                                device=self.device)
        else:
            start = self.chains
        syn_labels = self.chain_labels
        mask = known = None
        if p.learner == "recovery":
            start, mask, known, syn_labels = self._recovery_start()
        if syn_labels is None:
            synthesis = self.sampler.sample(net, start, generator=self.generator, mask=mask, known=known)
        else:
            synthesis = self.sampler.sample(net, start, generator=self.generator, mask=mask, known=known,
                                            labels=syn_labels)
        if not torch.isfinite(synthesis).all():
            raise NumericalError(
                f"Langevin chains became NaN/inf at iteration {self.iteration + 1}; "
                "lower step_size or lr"
            )
        if p.learner == "ml":
            self.chains = synthesis
        self.synthesis = synthesis

        params = net.active_parameters()
        if syn_labels is None:
            f_obs, f_syn, grads = self._likelihood_gradient(synthesis, [q for _, q in params])
            gaps = None
        else:
            f_obs, f_syn, gaps, grads = self._likelihood_gradient_categories(synthesis, syn_labels,
                                                                             [q for _, q in params])
        for (name, _), g in zip(params, grads):
            if not torch.isfinite(g).all():
                raise NumericalError(f"the gradient of {name} became NaN/inf at iteration {self.iteration + 1}")
        self._update(params, grads, lr)
        self.iteration += 1
        entry = {"iteration": self.iteration, "stage": stage + 1, "f_obs": f_obs, "f_syn": f_syn, "gap": f_obs - f_syn}
        if gaps is not None:
            entry["gaps"] = gaps
        self.model.history.append(entry)
        return f_obs, f_syn, lr

    def _recovery_start(self):
        """The recovery learner's chains: ``n_chains`` observed images per category, drawn at
        random, each with a fresh random mask dropping ``recovery_drop`` of its pixels, the
        missing pixels filled by the normalised blur of the known ones (``models.inpaint``);
        returns (start, known mask, the full images to clamp to, chain labels or None)."""
        from .inpaint import fill_blur  # inpaint builds on the model, not on the learner

        p, n, g = self.preset, self.n_chains, self.generator
        if self.labels is None:
            index = torch.randint(len(self.observed), (n,), generator=g, device=self.device)
            labels = None
        else:  # n_chains of each category, drawn among that category's images
            labels = self.chain_labels
            index = torch.empty(n, dtype=torch.long, device=self.device)
            for k in range(p.categories):
                pool = torch.nonzero(self.labels == k).flatten()
                rows = torch.nonzero(labels == k).flatten()
                index[rows] = pool[torch.randint(len(pool), (len(rows),), generator=g, device=self.device)]
        full = self.observed[index]
        known = torch.rand((n, 1, *full.shape[-2:]), generator=g, device=self.device) >= p.recovery_drop
        return fill_blur(full, known), known, full, labels

    def _likelihood_gradient(self, synthesis: torch.Tensor, params: list[torch.nn.Parameter]):
        """Scores and dL/dw, with observed and synthesized images in one batch when sizes match."""
        obs, n_obs, n_syn = self.observed, len(self.observed), len(synthesis)
        net = self.model.net
        nhwc = torch.channels_last  # oneDNN / cuDNN run these convolutions ~10 % faster channels-last
        with torch.enable_grad():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                if obs.shape[-2:] == synthesis.shape[-2:]:
                    f = net(torch.cat([obs, synthesis]).contiguous(memory_format=nhwc)).float()
                    f_obs, f_syn = f[:n_obs], f[n_obs:]
                else:
                    f_obs = net(obs.contiguous(memory_format=nhwc)).float()
                    f_syn = net(synthesis.contiguous(memory_format=nhwc)).float()
            objective = f_obs.mean() - f_syn.mean()
            grads = torch.autograd.grad(objective, params)
        return f_obs.mean().item(), f_syn.mean().item(), grads

    def _likelihood_gradient_categories(self, synthesis: torch.Tensor, syn_labels: torch.Tensor,
                                        params: list[torch.nn.Parameter]):
        """K > 1: per-category means of f_k over observed and synthesized images; the objective
        is the sum over k of their differences. Returns (mean over categories of the observed
        means, the same for the synthesized, per-category gaps, dL/dw)."""
        obs, n_obs, k = self.observed, len(self.observed), self.preset.categories
        net, obs_labels = self.model.net, self.labels
        nhwc = torch.channels_last
        with torch.enable_grad():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                if obs.shape[-2:] == synthesis.shape[-2:]:
                    f = net(torch.cat([obs, synthesis]).contiguous(memory_format=nhwc),
                            torch.cat([obs_labels, syn_labels])).float()
                    f_obs, f_syn = f[:n_obs], f[n_obs:]
                else:
                    f_obs = net(obs.contiguous(memory_format=nhwc), obs_labels).float()
                    f_syn = net(synthesis.contiguous(memory_format=nhwc), syn_labels).float()
            # per-category means by one-hot weights and plain sums (deterministic on CUDA too,
            # unlike an atomic index_add), so that resumed runs stay bitwise exact
            mean_obs = (f_obs[:, None] * _mean_weights(obs_labels, k)).sum(dim=0)
            mean_syn = (f_syn[:, None] * _mean_weights(syn_labels, k)).sum(dim=0)
            grads = torch.autograd.grad((mean_obs - mean_syn).sum(), params)
        mean_obs, mean_syn = mean_obs.detach().cpu(), mean_syn.detach().cpu()
        gaps = [float(v) for v in mean_obs - mean_syn]
        return mean_obs.mean().item(), mean_syn.mean().item(), gaps, grads

    @torch.no_grad()
    def _update(self, params, grads, lr: float) -> None:
        p, net = self.preset, self.model.net
        size = tuple(self.observed.shape[-2:])
        if p.optimizer == "adam":
            self.adam_steps += 1
        for (name, w), g in zip(params, grads):
            g = g.float()
            if p.area_norm:
                g = g / net.output_area(name, size)
            peak = g.abs().max() if p.clip_mode == "abs" else g.max()
            if peak > p.clip:
                g = g * (p.clip / peak)
            is_bias = name.endswith("bias") or name.startswith("head_biases")
            step_lr = lr * (p.bias_lr_mult if is_bias else 1.0)
            if not is_bias and p.weight_decay:
                g = g - p.weight_decay * w
            if p.optimizer == "adam":
                b1, b2 = p.adam_betas
                m = self.buffers.setdefault(f"{name}.m", torch.zeros_like(w))
                v = self.buffers.setdefault(f"{name}.v", torch.zeros_like(w))
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = m / (1 - b1**self.adam_steps)
                v_hat = v / (1 - b2**self.adam_steps)
                w.add_(step_lr * m_hat / (v_hat.sqrt() + 1e-8))
            elif p.momentum:
                v = self.buffers.setdefault(f"{name}.momentum", torch.zeros_like(w))
                v.mul_(p.momentum).add_(g, alpha=step_lr)
                w.add_(v)
            else:
                w.add_(g, alpha=step_lr)

    # ---- the loop ------------------------------------------------------------------------
    def run(self, callback: Optional[ProgressCallback] = None, max_iterations: Optional[int] = None) -> None:
        """Learn until the schedule is done (or ``max_iterations`` more); ``callback`` sees each
        iteration and may raise ``Cancelled`` to stop."""
        started, first = time.monotonic(), self.iteration
        stop = self.total if max_iterations is None else min(self.total, self.iteration + max_iterations)
        while self.iteration < stop:
            f_obs, f_syn, lr = self.step()
            elapsed = time.monotonic() - started
            pace = elapsed / (self.iteration - first)
            progress = Progress(
                iteration=self.iteration,
                total=self.total,
                stage=self.stage_of(self.iteration - 1) + 1,
                n_stages=self.preset.n_stages,
                f_obs=f_obs,
                f_syn=f_syn,
                lr=lr,
                elapsed=elapsed,
                eta=pace * (self.total - self.iteration),
            )
            if callback is not None:
                callback(self, progress)

    # ---- state for checkpoints -----------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"buffer.{k}": v for k, v in self.buffers.items()}
        if self.chains is not None:
            out["chains"] = self.chains
        out["rng"] = self.generator.get_state()
        return out

    def state_info(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "chain_stage": self.chain_stage, "adam_steps": self.adam_steps}

    def load_state(self, info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Continue from a checkpoint's learner state (see ``checkpoint.load``)."""
        self.iteration = int(info["iteration"])
        self.chain_stage = int(info["chain_stage"])
        self.adam_steps = int(info.get("adam_steps", 0))
        self.buffers = {k[len("buffer."):]: v.to(self.device) for k, v in tensors.items() if k.startswith("buffer.")}
        self.chains = tensors["chains"].to(self.device) if "chains" in tensors else None
        self.synthesis = self.chains
        if "rng" in tensors:
            self.generator.set_state(tensors["rng"].cpu())
        if self.chain_stage >= 0:
            self._set_depth(self.chain_stage)
        if self.chains is not None and math.prod(self.chains.shape[-2:]) != math.prod(self.observed.shape[-2:]):
            raise ValueError("the checkpoint's chains do not match the observed images' size")
        if self.chains is not None and self.labels is not None and self.preset.learner != "cd" \
                and len(self.chains) != self.n_chains:
            raise ValueError(f"the checkpoint has {len(self.chains)} chains, not {self.n_chains} "
                             f"({self.preset.n_chains} per category)")
