"""SLERP between the base model and one other model, per tensor (flattened), parameter t.

t = 0 gives the base, t = 1 the other model. Falls back to linear interpolation when the
two tensors are nearly (anti)parallel, |cos| > 0.9995, where the sin ratio is unstable.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import torch

from stages.methods.merging.method_base import REQUIRED, MethodSpec, ParamSpec, compute_dtype

DOT_THRESHOLD = 0.9995
_EPS = 1e-8


def slerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    dtype = compute_dtype([v0, v1])
    v0, v1 = v0.to(dtype), v1.to(dtype)
    a, b = v0.reshape(-1), v1.reshape(-1)
    norm_a = float(torch.linalg.vector_norm(a))
    norm_b = float(torch.linalg.vector_norm(b))
    norm_a = norm_a if norm_a > _EPS else 1.0
    norm_b = norm_b if norm_b > _EPS else 1.0
    dot = float(torch.dot(a, b)) / (norm_a * norm_b)
    dot = min(1.0, max(-1.0, dot))
    if abs(dot) > DOT_THRESHOLD:
        coef_a, coef_b = 1.0 - t, t
    else:
        theta = math.acos(dot)
        sin_theta = math.sin(theta)
        coef_a = math.sin((1.0 - t) * theta) / sin_theta
        coef_b = math.sin(t * theta) / sin_theta
    return torch.mul(v0, coef_a).add_(v1, alpha=coef_b)


def slerp(
    tensors: Sequence[torch.Tensor],
    base: Optional[torch.Tensor],
    shared: Mapping[str, Any],
    per_model: Sequence[Mapping[str, Any]],
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    return slerp_tensors(float(shared["t"]), base, tensors[0])


SLERP = MethodSpec(
    name="slerp",
    merge=slerp,
    needs_base=True,
    shared={"t": ParamSpec(float, REQUIRED)},
    n_models=1,
)
