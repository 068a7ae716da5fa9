"""Sparse mixture-of-experts feed-forward layer (Mixtral / Qwen2-MoE / Switch / Shazeer).

Drop-in for a transformer FFN: (batch, seq, d_model) -> same shape, plus a MoEStats.
A token whose every slot was dropped by capacity gets 0 here; the block's residual carries it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.methods.moe.moe_config import MoEConfig
from stages.methods.moe.expert_dispatch import run_experts
from stages.methods.moe.gating import ExpertRouter
from stages.methods.moe.balance_losses import MoEStats


class SwiGLU(nn.Module):
    """Dense SwiGLU FFN, down(silu(gate(x)) * up(x)), gate and up fused into one matmul."""

    def __init__(self, d_model: int, d_ff: int, init_std: float = 0.02):
        super().__init__()
        self.w13 = nn.Parameter(torch.randn(2 * d_ff, d_model) * init_std)
        self.w2 = nn.Parameter(torch.randn(d_model, d_ff) * init_std)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = F.linear(x, self.w13).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.w2)


class SparseMoE(nn.Module):
    """ExpertRouter + E SwiGLU experts (+ optional gated shared expert).

    Parameters: router.weight (E, d); router.noise_weight (E, d) for noisy top-k;
    w13 (E, 2·d_ff, d) = [W1 gate; W3 up] per expert; w2 (E, d, d_ff);
    shared (SwiGLU) and shared_gate (1, d) when cfg.shared_d_ff is set.
    """

    def __init__(self, cfg: MoEConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg.replace(**overrides) if cfg is not None else MoEConfig(**overrides)
        self.cfg = cfg
        E, d, f = cfg.n_experts, cfg.d_model, cfg.d_ff
        self.router = ExpertRouter(cfg)
        self.w13 = nn.Parameter(torch.randn(E, 2 * f, d) * cfg.init_std)
        self.w2 = nn.Parameter(torch.randn(E, d, f) * cfg.init_std)
        self.shared = SwiGLU(d, cfg.shared_d_ff, cfg.init_std) if cfg.shared_d_ff else None
        self.shared_gate = nn.Parameter(torch.randn(1, d) * cfg.init_std) if cfg.shared_d_ff else None

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, MoEStats]:
        """x: (..., d_model). `noise` (tokens, E) fixes the gating noise draw (tests only)."""
        flat = x.reshape(-1, x.shape[-1])
        routing = self.router(flat, noise)
        out = run_experts(flat, self.w13, self.w2, routing.expert, routing.weight,
                          self.cfg.dispatch, self.cfg.gather_max_slots)
        if self.shared is not None:
            out = out + torch.sigmoid(F.linear(flat, self.shared_gate)) * self.shared(flat)
        return out.view(x.shape), MoEStats(routing, self.cfg)
