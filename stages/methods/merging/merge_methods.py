"""Merge-method registry (mergekit style): one module per method, looked up by name."""
from __future__ import annotations

from typing import Dict

from stages.methods.merging.merge_errors import MergeConfigError
from stages.methods.merging.method_base import REQUIRED, MethodSpec, ParamSpec

METHODS: Dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in METHODS:
        raise ValueError(f"merge method {spec.name!r} is already registered")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(sorted(METHODS))
        raise MergeConfigError(f"merge_method: unknown method {name!r} (known: {known})") from None


# Importing a method module registers it.
from stages.methods.merging import dare_linear, dare_ties, linear_merge, slerp, task_arithmetic, ties  # noqa: E402,F401

__all__ = ["METHODS", "REQUIRED", "MethodSpec", "ParamSpec", "get_method", "register"]
