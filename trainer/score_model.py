"""The score model: a network plus the preconditioning that ties it to its process.

The model predicts the *scaled* score sqrt(w(t)) * s(x_t, t) = net(x_t, t / T) + sqrt(w(t)) *
baseline(x_t, t), where ``baseline`` is the process's analytic part of the score (none for most
processes). It is O(1) at every t and exactly what the store holds as the training target, so
the loss of paper A eq. 10, w(t) ||s - grad log p(x_t | x_{t-1})||^2, is a plain mean squared
error. ``score()`` undoes the
scaling for the sampler. Time enters the network as t / T in (0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from orient.dynamics import Process


class ScoreModel(nn.Module):
    """``forward(x, t)`` -> sqrt(w(t)) s(x, t); ``score(x, t)`` -> s(x, t); t are integer steps (B,)."""

    def __init__(self, net: nn.Module, process: Process) -> None:
        super().__init__()
        self.net = net
        self.process = process  # not a module: its tensors are not weights
        self.T = process.T
        steps = torch.arange(1, process.T + 1)
        self.register_buffer(
            "sqrt_w", process.loss_weight(steps).double().sqrt().float(), persistent=False
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        out = self.net(x, t.to(x.dtype) / self.T)
        base = self.process.baseline_score(x, t)
        if base is None:
            return out
        return out + self._scale(t, out) * base.to(out.dtype)

    def _scale(self, t: Tensor, like: Tensor) -> Tensor:
        return self.sqrt_w[t.long() - 1].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    def score(self, x: Tensor, t: Tensor | int) -> Tensor:
        if isinstance(t, int):
            t = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        return self(x, t) / self._scale(t, x)


def local_score_loss(model: nn.Module, x_t: Tensor, target: Tensor, t: Tensor) -> Tensor:
    """Mean over tuples, draws and state elements of ||model(x_t, t) - sqrt(w) * score||^2.

    ``x_t`` and ``target`` are (B, M, *S); ``t`` is (B,). Averaging over the M draws of one
    x_{t-1} is the Monte-Carlo estimate of the local score-matching loss (A eq. 10).
    """
    B, M = x_t.shape[:2]
    out = model(x_t.flatten(0, 1), t.repeat_interleave(M))
    return (out.float() - target.flatten(0, 1)).pow(2).mean()


class EMA:
    """Exponential moving average of a module's parameters and buffers: p_ema <- d p_ema + (1 - d) p."""

    def __init__(self, model: nn.Module, decay: float = 0.995) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)
