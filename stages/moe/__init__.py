"""Sparse mixture of experts: layer, routers, balancing losses, fast dispatch, HF interop.

    layer = SparseMoE(d_model=512, d_ff=1024, n_experts=8, top_k=2)
    out, stats = layer(x)                # x: (batch, seq, d_model) -> same shape
    loss = task_loss + stats.aux_loss    # stats.as_dict() for logging
"""
from stages.moe.config import MoEConfig
from stages.moe.dispatch import run_experts
from stages.moe.gating import Router, Routing
from stages.moe.hf_interop import HFMoEAdapter, load_hf_moe_model, moe_from_hf_block, swap_hf_moe_blocks
from stages.moe.layer import SparseMoE, SwiGLU
from stages.moe.losses import MoEStats

__all__ = ["HFMoEAdapter", "MoEConfig", "MoEStats", "Router", "Routing", "SparseMoE", "SwiGLU",
           "load_hf_moe_model", "moe_from_hf_block", "run_experts", "swap_hf_moe_blocks"]
