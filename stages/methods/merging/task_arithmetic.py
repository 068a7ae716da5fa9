"""The task-arithmetic family as one table: task arithmetic, TIES, DARE-TIES, DARE-linear.

All four are one computation (mergekit's generalised task arithmetic), per tensor:

    δ_i = θ_i − θ_base, optionally sparsified (top-k magnitude or DARE random drop)
    wδ_i = w_i · δ_i
    consensus (TIES): elected sign γ = sign(Σ_i wδ_i), 0 → +1; keep entries with sign(wδ_i) = γ
    mixed = Σ_i kept wδ_i,  divided (normalize) by Σ_i kept w_i (0 → 1) or by Σ_i w_i
    θ = θ_base + λ · mixed

The methods differ only in the sparsifier, the sign election and two defaults: the rows at the end.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Literal, Mapping, Optional, Sequence

import torch

from stages.methods.merging.method_base import MethodSpec, ParamSpec, compute_dtype, density_param, weight_param
from stages.methods.merging.sparsify import bernoulli_, magnitude_

Sparsify = Optional[Literal["magnitude", "random"]]


def merge_task_vectors(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    shared: Mapping[str, Any],
    per_model: Sequence[Mapping[str, Any]],
    generator: Optional[torch.Generator],
    *,
    sparsify: Sparsify,
    consensus: bool,
) -> torch.Tensor:
    dtype = compute_dtype([base, *tensors])
    base = base.to(dtype)  # the inputs stay in their own dtype; promotion happens inside each op
    if not tensors:
        return base
    weights = [float(p["weight"]) for p in per_model]
    # Sign election needs every wδ_i at once; plain sums accumulate through one buffer.
    n_buffers = len(tensors) if consensus else 1
    deltas = torch.empty((n_buffers, *base.shape), dtype=dtype, device=base.device)
    mixed = None if consensus else torch.zeros_like(base)
    for i, (tensor, params) in enumerate(zip(tensors, per_model)):
        delta = torch.sub(tensor, base, out=deltas[i if consensus else 0])
        del tensor
        if isinstance(tensors, list):
            tensors[i] = None  # a list passed in is ours to drain: free each input once used
        density = params.get("density", 1.0)
        if sparsify == "magnitude":
            magnitude_(delta, density, rescale=shared["rescale"])
        elif sparsify == "random":
            bernoulli_(delta, density, rescale=shared["rescale"], generator=generator)
        delta.mul_(weights[i])
        if mixed is not None:
            mixed.add_(delta)

    if consensus:
        return _elect_and_mix(deltas, weights, base, shared["normalize"], shared["lambda"])
    del deltas
    if shared["normalize"]:
        total = sum(weights)
        mixed.div_(total if abs(total) >= 1e-8 else 1.0)
    if shared["lambda"] != 1:
        mixed.mul_(shared["lambda"])
    return mixed.add_(base)


_CHUNK = 1 << 20  # elements per step of the elementwise sign election: bounds its temporaries


def _elect_and_mix(deltas: torch.Tensor, weights: Sequence[float], base: torch.Tensor, normalize: bool,
                   lam: float) -> torch.Tensor:
    """TIES sign election and disjoint mean, chunk by chunk (it is elementwise), written over deltas[0]."""
    flat = deltas.view(deltas.shape[0], -1)
    out = flat[0]
    base_flat = base.reshape(-1)
    for start in range(0, flat.shape[1], _CHUNK):
        d = flat[:, start:start + _CHUNK]
        elected = d.sum(dim=0).ge_(0).mul_(2).sub_(1)  # γ = ±1, a zero sum counts as +1
        mixed = torch.zeros_like(elected)
        divisor = torch.zeros_like(elected) if normalize else None
        for i, weight in enumerate(weights):
            agrees = torch.mul(d[i], elected).gt_(0)  # 1 where sign(wδ_i) == γ; zeros never agree
            mixed.addcmul_(d[i], agrees)
            if divisor is not None:
                divisor.add_(agrees, alpha=weight)
        if divisor is not None:
            mixed.div_(divisor.masked_fill_(divisor == 0, 1))
        if lam != 1:
            mixed.mul_(lam)
        torch.add(base_flat[start:start + _CHUNK], mixed, out=out[start:start + _CHUNK])
    return out.view(base.shape)


def _family_member(name: str, *, sparsify: Sparsify, consensus: bool, normalize: bool, rescale: bool) -> MethodSpec:
    """One row: `normalize` and `rescale` are the method's defaults; only sparsifying methods take density."""
    sparse = sparsify is not None
    shared = {
        "normalize": ParamSpec(bool, normalize),
        **({"rescale": ParamSpec(bool, rescale)} if sparse else {}),
        "lambda": ParamSpec(float, 1.0),
        "int8_mask": ParamSpec(bool, False),  # mergekit memory option; accepted, no effect here
    }
    per_model = {"weight": weight_param(), **({"density": density_param()} if sparse else {})}
    return MethodSpec(name=name, merge=partial(merge_task_vectors, sparsify=sparsify, consensus=consensus),
                      needs_base=True, shared=shared, per_model=per_model, random=sparsify == "random")


# Ilharco et al. 2023; negative weights subtract a task vector (negation).
TASK_ARITHMETIC = _family_member("task_arithmetic", sparsify=None, consensus=False, normalize=False, rescale=False)
# Yadav et al. 2023: trim to the top-k |δ|, elect a sign, average the agreeing entries.
TIES = _family_member("ties", sparsify="magnitude", consensus=True, normalize=True, rescale=False)
# Yu et al. 2023: random drop with an L1 rescale, then TIES's sign election (dare_ties) or a plain sum.
DARE_TIES = _family_member("dare_ties", sparsify="random", consensus=True, normalize=False, rescale=True)
DARE_LINEAR = _family_member("dare_linear", sparsify="random", consensus=False, normalize=False, rescale=True)
