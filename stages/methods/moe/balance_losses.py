"""Auxiliary losses that keep experts balanced, and the per-forward stats object.

All terms are computed lazily from a Routing, so inference pays nothing for them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from stages.methods.moe.moe_config import MoEConfig
from stages.methods.moe.gating import Routing


def cv_squared(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Squared coefficient of variation, population variance / mean² (Shazeer's definition)."""
    x = x.float()
    if x.numel() <= 1:
        return x.new_zeros(())
    return x.var(unbiased=False) / (x.mean() ** 2 + eps)


def importance(gates: Tensor) -> Tensor:
    """Importance_e = Σ_x G_e(x) over the batch; gates is the dense (T, E) gate matrix."""
    return gates.sum(dim=0)


def _normal_cdf(z: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


def smooth_load(clean: Tensor, noisy: Tensor, noise_std: Tensor, k: int) -> Tensor:
    """Shazeer's differentiable load: Load_e = Σ_x P(x, e).

    P(x, e) is the chance that e stays in the top k if only e's noise were redrawn:
    Φ((clean_e − threshold) / std_e), threshold = the k-th largest noisy score among the
    other experts. If e is in the top k now that is the (k+1)-th largest overall, else the k-th.
    """
    n_experts = noisy.shape[-1]
    if k >= n_experts:
        return torch.ones_like(clean).sum(dim=0)
    top = noisy.topk(k + 1, dim=-1).values
    threshold_if_in, threshold_if_out = top[:, k:k + 1], top[:, k - 1:k]
    is_in = noisy > threshold_if_in
    std = noise_std.clamp_min(1e-9)
    p_in = _normal_cdf((clean - threshold_if_in) / std)
    p_out = _normal_cdf((clean - threshold_if_out) / std)
    return torch.where(is_in, p_in, p_out).sum(dim=0)


def hard_load(expert: Tensor, n_experts: int) -> Tensor:
    """Number of (token, slot) assignments per expert; ids >= n_experts (dropped) are ignored."""
    return torch.bincount(expert.reshape(-1), minlength=n_experts + 1)[:n_experts].float()


def switch_balance_loss(probs: Tensor, expert: Tensor, n_experts: int) -> Tensor:
    """Switch aux loss without α: E · Σ_e f_e · P_e.

    f_e: share of the T·k routed assignments that chose e (for k=1 the fraction of tokens);
    P_e: mean router probability of e. Equals 1 under perfectly uniform routing.
    """
    f = hard_load(expert, n_experts) / expert.numel()
    return n_experts * (f * probs.float().mean(dim=0)).sum()


def router_z_loss(logits: Tensor) -> Tensor:
    """ST-MoE z-loss: mean over tokens of logsumexp(logits)², keeps router logits small."""
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


@dataclass
class MoEStats:
    """What one forward of a SparseMoE did, for logging and for the auxiliary loss."""

    routing: Routing
    cfg: MoEConfig

    @cached_property
    def tokens_per_expert(self) -> Tensor:
        """(E,) assignments each expert actually processed (after capacity dropping)."""
        return hard_load(self.routing.expert, self.cfg.n_experts).long()

    @cached_property
    def dropped_fraction(self) -> Tensor:
        return (self.routing.expert == self.cfg.n_experts).float().mean()

    @cached_property
    def importance_cv2(self) -> Tensor:
        return cv_squared(importance(self.routing.gates))

    @cached_property
    def load(self) -> Tensor:
        """Smooth load estimate when noise was used, else the hard routed counts (no gradient)."""
        r = self.routing
        if r.noisy is not None:
            return smooth_load(r.logits, r.noisy, r.noise_std, self.cfg.top_k)
        return hard_load(r.routed, self.cfg.n_experts)

    @cached_property
    def load_cv2(self) -> Tensor:
        return cv_squared(self.load)

    @cached_property
    def balance(self) -> Tensor:
        return switch_balance_loss(self.routing.probs, self.routing.routed, self.cfg.n_experts)

    @cached_property
    def z(self) -> Tensor:
        return router_z_loss(self.routing.logits)

    @cached_property
    def aux_loss(self) -> Tensor:
        """Σ coefficient · term over the terms whose coefficient is non-zero; add it to the task loss."""
        cfg = self.cfg
        total = self.routing.logits.new_zeros(())
        for coef, name in ((cfg.importance_coef, "importance_cv2"), (cfg.load_coef, "load_cv2"),
                           (cfg.balance_coef, "balance"), (cfg.z_coef, "z")):
            if coef:
                total = total + coef * getattr(self, name)
        return total

    def as_dict(self) -> dict[str, float | list[int]]:
        """Plain numbers for a logger."""
        numbers: dict[str, float | list[int]] = {"tokens_per_expert": self.tokens_per_expert.tolist()}
        for name in ("dropped_fraction", "importance_cv2", "load_cv2", "balance", "z", "aux_loss"):
            numbers[name] = getattr(self, name).detach().item()
        return numbers
