"""Resolve a parameter's value for one tensor: filters, layer gradients, precedence, defaults.

mergekit semantics:
- `[{filter: s, value: v}, ...]`: the first entry whose filter is a substring of the tensor
  name (no filter or '*' matches all) gives the value; none matching falls through.
- a list of numbers is a gradient over the layer position t ∈ [0, 1]: with n values,
  x = t·(n−1) interpolates between values[floor(x)] and the next.
- t = i / (L − 1) for layer i of a stack of L layers (t = 1 when L = 1); tensors outside
  any layer stack use t = 0.
- per-model settings beat global `parameters`; then the method's default.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from stages.methods.merging.merge_config import FilteredValue
from stages.methods.merging.merge_errors import MergeConfigError
from stages.methods.merging.method_base import ParamSpec

_LAYER = re.compile(r"\.(\d+)\.")


def layer_counts(names: Iterable[str]) -> Dict[str, int]:
    """Layers per stack prefix, e.g. {'model.layers': 32} or encoder and decoder stacks."""
    counts: Dict[str, int] = {}
    for name in names:
        match = _LAYER.search(name)
        if match:
            prefix = name[: match.start()]
            counts[prefix] = max(counts.get(prefix, 0), int(match.group(1)) + 1)
    return counts


def layer_position(name: str, counts: Mapping[str, int]) -> float:
    match = _LAYER.search(name)
    if not match:
        return 0.0
    n_layers = counts.get(name[: match.start()], 1)
    return int(match.group(1)) / (n_layers - 1) if n_layers > 1 else 1.0


def evaluate(setting: Any, tensor_name: str, t: float, spec: ParamSpec) -> Any:
    """The setting's value for this tensor, or None when no filter matches."""
    if isinstance(setting, FilteredValue):
        setting = [setting]
    if not isinstance(setting, list):
        return spec.coerce(setting)
    if not setting:
        return None
    if isinstance(setting[0], FilteredValue):
        for entry in setting:
            if entry.filter in (None, "*") or entry.filter in tensor_name:
                return evaluate(entry.value, tensor_name, t, spec)
        return None
    values = [spec.coerce(v) for v in setting]
    if spec.kind is not float:
        return values[int(t * (len(values) - 1))]
    x = t * (len(values) - 1)
    i = int(x)
    j = min(len(values) - 1, i + 1)
    frac = x - i
    return spec.coerce((1 - frac) * values[i] + frac * values[j])


def resolve(
    name: str,
    spec: ParamSpec,
    scopes: Sequence[Optional[Mapping[str, Any]]],
    *,
    tensor_name: str,
    t: float,
    where: str,
) -> Any:
    """Highest-precedence scope first; raises MergeConfigError naming `where` if required and unset."""
    for scope in scopes:
        if scope and name in scope:
            value = evaluate(scope[name], tensor_name, t, spec)
            if value is not None:
                return value
    if spec.required:
        raise MergeConfigError(f"{where}: missing required parameter {name!r} for tensor {tensor_name!r}")
    return spec.default
