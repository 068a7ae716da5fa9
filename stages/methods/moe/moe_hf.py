"""Load transformers' sparse-MoE blocks (Mixtral, Qwen2-MoE) into SparseMoE, or swap them in place.

Both the fused expert layout of transformers 5 (`experts.gate_up_proj` (E, 2f, d) with gate
rows first, `experts.down_proj` (E, d, f)) and the older per-expert modules
(`experts.{i}.w1/w3/w2` for Mixtral, `experts.{i}.gate_proj/up_proj/down_proj` for Qwen2-MoE)
are read. Only the inference path is matched: Mixtral's training-time input jitter is not copied.
After a swap, `output_router_logits=True` no longer sees router logits (transformers hooks its
own router class); read `HFMoEAdapter.last_stats` instead.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from stages.methods.moe.moe_config import MoEConfig
from stages.methods.moe.moe_layer import SparseMoE
from stages.methods.moe.balance_losses import MoEStats

MIXTRAL_BLOCKS = {"MixtralSparseMoeBlock"}
QWEN2_MOE_BLOCKS = {"Qwen2MoeSparseMoeBlock"}


def _stack_per_expert(sd: dict[str, Tensor], gate: str, up: str, down: str) -> tuple[Tensor, Tensor]:
    n = 0
    while f"experts.{n}.{gate}.weight" in sd:
        n += 1
    if n == 0:
        raise KeyError(f"no expert weights found; keys start with {sorted(sd)[:5]}")
    w13 = torch.stack([torch.cat([sd[f"experts.{i}.{gate}.weight"], sd[f"experts.{i}.{up}.weight"]])
                       for i in range(n)])
    w2 = torch.stack([sd[f"experts.{i}.{down}.weight"] for i in range(n)])
    return w13, w2


def _expert_weights(sd: dict[str, Tensor], per_expert_names: tuple[str, str, str]) -> tuple[Tensor, Tensor]:
    if "experts.gate_up_proj" in sd:
        return sd["experts.gate_up_proj"], sd["experts.down_proj"]
    return _stack_per_expert(sd, *per_expert_names)


def _check_silu(block: nn.Module) -> None:
    acts = [m for m in block.modules() if hasattr(m, "act_fn")]
    for m in acts:
        if type(m.act_fn).__name__ not in {"SiLU", "SiLUActivation"}:
            raise ValueError(f"{type(block).__name__} uses {type(m.act_fn).__name__}; "
                             "SparseMoE experts are SwiGLU (silu)")


def hf_block_to_moe_state(block: nn.Module) -> tuple[MoEConfig, dict[str, Tensor]]:
    """Config and state dict for a SparseMoE equal to a transformers Mixtral / Qwen2-MoE block."""
    kind = type(block).__name__
    _check_silu(block)
    sd = block.state_dict()
    router = sd["gate.weight"]
    top_k = getattr(block.gate, "top_k", None) or block.top_k
    if kind in MIXTRAL_BLOCKS:
        w13, w2 = _expert_weights(sd, ("w1", "w3", "w2"))
        renormalize, shared_d_ff = True, None
    elif kind in QWEN2_MOE_BLOCKS:
        w13, w2 = _expert_weights(sd, ("gate_proj", "up_proj", "down_proj"))
        renormalize = bool(getattr(block.gate, "norm_topk_prob", getattr(block, "norm_topk_prob", False)))
        shared_d_ff = sd["shared_expert.gate_proj.weight"].shape[0]
    else:
        raise TypeError(f"don't know how to read {kind}; known: {sorted(MIXTRAL_BLOCKS | QWEN2_MOE_BLOCKS)}")
    n_experts, two_f, d_model = w13.shape
    cfg = MoEConfig(d_model=d_model, d_ff=two_f // 2, n_experts=n_experts, top_k=top_k, router="topk",
                    renormalize=renormalize, shared_d_ff=shared_d_ff, balance_coef=0.0, z_coef=0.0)
    state = {"router.weight": router, "w13": w13, "w2": w2}
    if shared_d_ff:
        state["shared.w13"] = torch.cat([sd["shared_expert.gate_proj.weight"], sd["shared_expert.up_proj.weight"]])
        state["shared.w2"] = sd["shared_expert.down_proj.weight"]
        state["shared_gate"] = sd["shared_expert_gate.weight"]
    return cfg, state


def moe_from_hf_block(block: nn.Module, **cfg_overrides) -> SparseMoE:
    """A SparseMoE sharing (not copying, when layouts allow) the block's weights, same device and dtype."""
    cfg, state = hf_block_to_moe_state(block)
    cfg = cfg.replace(**cfg_overrides)
    with torch.device("meta"):
        moe = SparseMoE(cfg)
    moe.load_state_dict(state, assign=True)
    return moe.train(block.training)


class HFMoEAdapter(nn.Module):
    """Takes a transformers sparse-MoE block's place: tensor in, tensor out; stats in last_stats."""

    def __init__(self, moe: SparseMoE):
        super().__init__()
        self.moe = moe
        self.last_stats: MoEStats | None = None

    def forward(self, hidden_states: Tensor) -> Tensor:
        out, self.last_stats = self.moe(hidden_states)
        return out


def swap_hf_moe_blocks(model: nn.Module, **cfg_overrides) -> list[str]:
    """Replace every Mixtral / Qwen2-MoE sparse block in `model` by HFMoEAdapter; returns their names."""
    known = MIXTRAL_BLOCKS | QWEN2_MOE_BLOCKS
    targets = [(name, m) for name, m in model.named_modules() if type(m).__name__ in known]
    for name, block in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, HFMoEAdapter(moe_from_hf_block(block, **cfg_overrides)))
    return [name for name, _ in targets]


def load_hf_moe_model(path: str | Path, **from_pretrained_kwargs) -> nn.Module:
    """AutoModelForCausalLM.from_pretrained(path) with every sparse-MoE block swapped for ours."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs)
    if not swap_hf_moe_blocks(model):
        raise ValueError(f"{path}: no Mixtral or Qwen2-MoE sparse block found in {type(model).__name__}")
    return model
