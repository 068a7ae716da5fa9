"""What a merge method declares (its parameters and inputs) and the call it implements.

A method is a plain function over one tensor name at a time: it receives the float
tensors of every input (on the compute device, in their stored dtype, possibly bf16/fp16)
and returns the merged tensor in float32 (float64 if an input is float64); the runner casts
it to the output dtype. It must not modify input tensors, but when `tensors` is a list
it may set entries to None once used, so large inputs are freed early. Parameters are resolved per tensor
by the runner (filters, layer gradients, defaults) before the call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

import torch

REQUIRED: Any = object()  # sentinel default: the config must supply a value


def _finite(value: float) -> Optional[str]:
    return None if math.isfinite(value) else "must be a finite number"


def _density(value: float) -> Optional[str]:
    return None if 0.0 < value <= 1.0 else "must be in (0, 1]"


@dataclass(frozen=True)
class ParamSpec:
    """One method parameter: its scalar type, default and range check."""

    kind: type  # float or bool
    default: Any = REQUIRED
    check: Optional[Callable[[Any], Optional[str]]] = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def coerce(self, value: Any) -> Any:
        """Validate one scalar (YAML may give '1e-3' as a string); raise ValueError with why."""
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            raise ValueError(f"expected true/false, got {value!r}")
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
        problem = (self.check or _finite)(number)
        if problem:
            raise ValueError(f"{number!r} {problem}")
        return number


def weight_param() -> ParamSpec:
    return ParamSpec(float, REQUIRED, _finite)


def density_param() -> ParamSpec:
    return ParamSpec(float, 1.0, _density)


def compute_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    """float64 if any input is float64, else float32 (half-precision inputs are accumulated in float32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class MergeFn(Protocol):
    def __call__(
        self,
        tensors: Sequence[torch.Tensor],
        base: Optional[torch.Tensor],
        shared: Mapping[str, Any],
        per_model: Sequence[Mapping[str, Any]],
        generator: Optional[torch.Generator],
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class MethodSpec:
    """A registered merge method.

    needs_base: the method merges deltas against `base_model` (which is then not one of
    `tensors`). n_models: exact number of non-base models (slerp: 1), None = any >= 1.
    """

    name: str
    merge: MergeFn
    needs_base: bool
    shared: Mapping[str, ParamSpec] = field(default_factory=dict)
    per_model: Mapping[str, ParamSpec] = field(default_factory=dict)
    n_models: Optional[int] = None
    random: bool = False  # consumes the generator (DARE)

    def param(self, name: str) -> Optional[ParamSpec]:
        return self.shared.get(name) or self.per_model.get(name)
