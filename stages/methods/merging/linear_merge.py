"""Linear merge (model soups, Wortsman et al. 2022): Σ w_i θ_i, divided by Σ w_i when normalize.

Ignores base_model (list the base under `models` to include it).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch

from stages.methods.merging.method_base import MethodSpec, ParamSpec, compute_dtype, weight_param


def linear(
    tensors: Sequence[torch.Tensor],
    base: Optional[torch.Tensor],
    shared: Mapping[str, Any],
    per_model: Sequence[Mapping[str, Any]],
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    weights = [float(p["weight"]) for p in per_model]
    out = tensors[0].to(compute_dtype(tensors), copy=True).mul_(weights[0])
    for tensor, weight in zip(tensors[1:], weights[1:]):
        out.add_(tensor, alpha=weight)
    if shared["normalize"]:
        out.div_(sum(weights))  # a zero sum is refused while planning
    return out


LINEAR = MethodSpec(
    name="linear",
    merge=linear,
    needs_base=False,
    shared={"normalize": ParamSpec(bool, True)},
    per_model={"weight": weight_param()},
)
