"""Configuration of a sparse mixture-of-experts layer."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RouterKind = Literal["noisy_topk", "topk", "switch"]
DispatchPath = Literal["auto", "sorted", "grouped", "gather"]

# Per-router defaults, filled in only for fields the caller did not set.
# Switch (Fedus et al. 2021): top-1, the raw router probability scales the expert output
# (renormalising one weight would make it 1 and cut the router off from the task gradient).
# Noisy top-k (Shazeer et al. 2017): balanced with importance and load CV² losses.
_ROUTER_DEFAULTS: dict[str, dict[str, Any]] = {
    "switch": {"top_k": 1, "renormalize": False, "balance_coef": 0.01, "z_coef": 0.001},
    "topk": {"balance_coef": 0.01, "z_coef": 0.001},
    "noisy_topk": {"importance_coef": 0.01, "load_coef": 0.01},
}


class MoEConfig(BaseModel):
    """A sparse MoE feed-forward block: (..., d_model) -> (..., d_model).

    capacity_factor: None = dropless. Otherwise each expert takes at most
    ceil(capacity_factor * tokens * top_k / n_experts) (token, slot) assignments; the rest are
    dropped (their slot contributes 0, so the surrounding residual passes the token through).
    Priority when an expert overflows (GShard/Switch order): every token's first choice before
    any token's second choice; within one choice rank, earlier token positions win.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    d_model: int = Field(512, gt=0)
    d_ff: int = Field(1024, gt=0)
    n_experts: int = Field(8, gt=0)
    top_k: int = Field(2, gt=0)
    router: RouterKind = "topk"
    renormalize: bool = True  # Mixtral: top-k weights sum to 1; Qwen2-MoE default: raw softmax probs
    shared_d_ff: int | None = Field(None, gt=0)  # Qwen2-MoE shared expert, scaled by sigmoid(x·w)
    capacity_factor: float | None = Field(None, gt=0)
    dispatch: DispatchPath = "auto"
    gather_max_slots: int = Field(4, ge=0)  # auto on CUDA: tokens*top_k up to this take the gather path
    importance_coef: float = 0.0
    load_coef: float = 0.0
    balance_coef: float = 0.0
    z_coef: float = 0.0
    init_std: float = 0.02

    @model_validator(mode="before")
    @classmethod
    def _fill_router_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kind = data.get("router", "topk")
            data = {**_ROUTER_DEFAULTS.get(kind, {}), **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> MoEConfig:
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k={self.top_k} exceeds n_experts={self.n_experts}")
        if self.router == "switch" and (self.top_k != 1 or self.renormalize):
            raise ValueError("router='switch' means top_k=1 and renormalize=False; use router='topk' otherwise")
        return self

    def replace(self, **changes: Any) -> MoEConfig:
        """A validated copy with some fields changed (router defaults are not re-applied)."""
        return MoEConfig(**{**self.model_dump(), **changes})
