"""Sparse mixture of experts: layer, routers, balancing losses, fast dispatch, HF interop.

    layer = SparseMoE(d_model=512, d_ff=1024, n_experts=8, top_k=2)
    out, stats = layer(x)                # x: (batch, seq, d_model) -> same shape
    loss = task_loss + stats.aux_loss    # stats.as_dict() for logging
"""
from stages.methods.moe.moe_config import MoEConfig
from stages.methods.moe.expert_dispatch import run_experts
from stages.methods.moe.gating import ExpertRouter, Routing
from stages.methods.moe.moe_hf import HFMoEAdapter, load_hf_moe_model, moe_from_hf_block, swap_hf_moe_blocks
from stages.methods.moe.moe_layer import SparseMoE, SwiGLU
from stages.methods.moe.balance_losses import MoEStats

__all__ = ["HFMoEAdapter", "MoEConfig", "MoEStats", "ExpertRouter", "Routing", "SparseMoE", "SwiGLU",
           "load_hf_moe_model", "moe_from_hf_block", "run_experts", "swap_hf_moe_blocks"]
