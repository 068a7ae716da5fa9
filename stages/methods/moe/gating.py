"""Routers: which experts each token visits, with which weights.

All routing math runs in float32 whatever the activation dtype, as Switch and HF Mixtral do:
softmax and top-k ties are fragile in half precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.methods.moe.moe_config import MoEConfig


@dataclass
class Routing:
    """Routing of T tokens over E experts with k slots per token.

    expert, weight: (T, k) after capacity dropping; a dropped slot has expert id E (no such
    expert) and weight 0. Weights are float32.
    routed, routed_weight: (T, k) the router's choice before any dropping.
    logits: (T, E) clean router logits (float32), for the z-loss.
    probs: (T, E) softmax of the scores that picked the experts (noisy ones in training).
    noisy, noise_std: (T, E) noisy logits H and their noise scale, only when noise was added.
    """

    expert: Tensor
    weight: Tensor
    routed: Tensor
    routed_weight: Tensor
    logits: Tensor
    probs: Tensor
    noisy: Tensor | None = None
    noise_std: Tensor | None = None

    @property
    def gates(self) -> Tensor:
        """(T, E) dense gate matrix G(x): the kept weights, zeros elsewhere (before dropping)."""
        return torch.zeros_like(self.probs).scatter(1, self.routed, self.routed_weight)


def top_k_route(scores: Tensor, k: int, renormalize: bool) -> tuple[Tensor, Tensor, Tensor]:
    """softmax over all experts, keep the k most probable; returns (probs, weight, expert).

    With renormalize the kept weights are divided by their sum, which equals a softmax over the
    k kept logits only (Shazeer's softmax(KeepTopK(H, k))).
    """
    probs = scores.float().softmax(dim=-1)
    weight, expert = probs.topk(k, dim=-1)
    if renormalize:
        weight = weight / weight.sum(dim=-1, keepdim=True)
    return probs, weight, expert


def add_gating_noise(clean: Tensor, raw_noise: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Shazeer 2017: H = clean + N(0,1) * softplus(x W_noise); returns (H, noise_std)."""
    std = F.softplus(raw_noise.float())
    if noise is None:
        noise = torch.randn_like(std)
    return clean + noise * std, std


def drop_over_capacity(expert: Tensor, weight: Tensor, n_experts: int, capacity: int) -> tuple[Tensor, Tensor]:
    """Keep at most `capacity` slots per expert, in slot-major then token order.

    Flattening slot-major means all first choices queue before any second choice (GShard, Switch);
    within one rank, the earlier token wins. Dropped slots get expert id n_experts and weight 0.
    """
    T, k = expert.shape
    queue = expert.t().reshape(-1)  # slot-major: (k*T,)
    hits = torch.zeros(queue.shape[0], n_experts + 1, dtype=torch.long, device=queue.device)
    hits.scatter_(1, queue.unsqueeze(1), 1)  # one-hot without F.one_hot's host-side range check
    place_in_queue = (hits.cumsum(dim=0) * hits).sum(dim=-1) - 1
    kept = (place_in_queue < capacity).view(k, T).t()
    return expert.masked_fill(~kept, n_experts), weight.masked_fill(~kept, 0.0)


def expert_capacity(n_tokens: int, top_k: int, n_experts: int, capacity_factor: float) -> int:
    return int(-(-capacity_factor * n_tokens * top_k // n_experts))  # ceil


class ExpertRouter(nn.Module):
    """Linear router (E × d) with optional noise projection for noisy top-k gating."""

    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.randn(cfg.n_experts, cfg.d_model) * cfg.init_std)
        # Shazeer starts W_noise at zero: noise std softplus(0) ≈ 0.69 everywhere, learned from there.
        self.noise_weight = (
            nn.Parameter(torch.zeros(cfg.n_experts, cfg.d_model)) if cfg.router == "noisy_topk" else None
        )

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Routing:
        """x: (T, d). `noise` (T, E) replaces the N(0,1) draw (tests); noise applies only in training."""
        cfg = self.cfg
        logits = F.linear(x, self.weight).float()
        noisy = noise_std = None
        scores = logits
        if self.noise_weight is not None and self.training:
            noisy, noise_std = add_gating_noise(logits, F.linear(x, self.noise_weight), noise)
            scores = noisy
        probs, weight, expert = top_k_route(scores, cfg.top_k, cfg.renormalize)
        routed, routed_weight = expert, weight
        if cfg.capacity_factor is not None:
            capacity = expert_capacity(x.shape[0], cfg.top_k, cfg.n_experts, cfg.capacity_factor)
            expert, weight = drop_over_capacity(expert, weight, cfg.n_experts, capacity)
        return Routing(expert=expert, weight=weight, routed=routed, routed_weight=routed_weight,
                       logits=logits, probs=probs, noisy=noisy, noise_std=noise_std)
