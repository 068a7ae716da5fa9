"""Sparsify a task vector δ: keep its top-k magnitudes (TIES) or a random subset (DARE).

Both work in place on a delta buffer the caller owns. Top-k never sorts: the k-th largest
|δ| is found by a radix select on the float bits (one histogram of the top 16 bits, read
straight from the tensor's memory) followed by kthvalue on the one bucket that holds it:
~15x faster than an argsort, and no full-size float temporary.
"""
from __future__ import annotations

import sys
from typing import Optional

import torch

_RADIX_MIN = 1 << 16  # below this, plain kthvalue is as fast
_EPS = 1e-7  # mergekit: norms below this are not rescaled


def _high_bits_abs(flat: torch.Tensor) -> torch.Tensor:
    """Top 16 bits of |x| for float32 x (sign cleared): an int16 tensor, bucket of each |x|."""
    halves = flat.view(torch.int16)[1::2] if sys.byteorder == "little" else flat.view(torch.int16)[0::2]
    return torch.bitwise_and(halves, 0x7FFF)


def kth_largest_abs(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest |x| (1 <= k <= numel) of a flat, finite tensor."""
    n = flat.numel()
    if flat.dtype != torch.float32 or n < _RADIX_MIN or flat.device.type != "cpu":
        return torch.kthvalue(flat.abs(), n - k + 1).values
    # Non-negative IEEE floats sort like their bit patterns: bucket by the top 16 bits.
    high = _high_bits_abs(flat)
    counts = torch.bincount(high, minlength=1 << 15)
    from_top = counts.flip(0).cumsum(0)
    pos = int(torch.searchsorted(from_top, torch.tensor(k, dtype=from_top.dtype)))
    bucket = (1 << 15) - 1 - pos
    above = int(from_top[pos]) - int(counts[bucket])
    inside = flat[high == bucket].abs_()
    del high
    return torch.kthvalue(inside, inside.numel() - (k - above) + 1).values


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly k largest |values|; ties at the threshold go to the earliest."""
    flat = values.reshape(-1)
    if k >= flat.numel():
        return torch.ones_like(flat, dtype=torch.bool).view_as(values)
    threshold = kth_largest_abs(flat, k)
    mask = torch.gt(flat, threshold).logical_or_(torch.lt(flat, -threshold))
    missing = k - int(mask.sum())
    if missing > 0:
        tied = torch.eq(flat, threshold).logical_or_(torch.eq(flat, -threshold))
        ties = torch.nonzero(tied).flatten()[:missing]
        del tied
        mask[ties] = True
    return mask.view_as(values)


def rescale_l1_(kept: torch.Tensor, l1_before: torch.Tensor) -> torch.Tensor:
    """Scale the sparsified `kept` so its L1 norm matches the dense delta's (mergekit's rule)."""
    l1_after = kept.abs().sum()
    if l1_before < _EPS or l1_after < _EPS:
        return kept
    return kept.mul_(l1_before / l1_after)


def magnitude_(delta: torch.Tensor, density: float, rescale: bool = False) -> torch.Tensor:
    """TIES trim: zero all but the top int(density·n) |δ| entries (at least one), in place."""
    if density >= 1:
        return delta
    n = delta.numel()
    if n == 0:
        return delta
    k = max(1, int(density * n))
    l1_before = delta.abs().sum() if rescale else None
    delta.masked_fill_(top_k_mask(delta, k).logical_not_(), 0)
    return rescale_l1_(delta, l1_before) if rescale else delta


def bernoulli_(
    delta: torch.Tensor, density: float, rescale: bool = True, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """DARE drop: keep each entry with probability `density`, in place.

    With `rescale` the kept entries are scaled by ‖δ‖₁ / ‖kept‖₁ (mergekit since 2025;
    the DARE paper used 1/density, which matches only in expectation). The mask is drawn
    as bernoulli(full(density)) so a seeded generator reproduces mergekit's draws.
    """
    if density >= 1:
        return delta
    mask = torch.bernoulli(torch.full_like(delta, density), generator=generator)
    l1_before = delta.abs().sum() if rescale else None
    delta.mul_(mask)
    del mask
    return rescale_l1_(delta, l1_before) if rescale else delta
