"""Merge methods by name (mergekit style): each built-in is a MethodSpec in its own module.

Other packages add methods as entry points of group `cascadekit.merge_methods` naming a MethodSpec.
"""
from __future__ import annotations

from stages.methods.merging.merge_errors import MergeConfigError
from stages.methods.merging.method_base import REQUIRED, MethodSpec, ParamSpec
from stages.registry import Registry

_FAMILY = "stages.methods.merging.task_arithmetic"
MERGE_METHODS: Registry[MethodSpec] = Registry("merge method", "cascadekit.merge_methods", {
    "linear": "stages.methods.merging.linear_merge:LINEAR",
    "slerp": "stages.methods.merging.slerp:SLERP",
    "task_arithmetic": f"{_FAMILY}:TASK_ARITHMETIC",
    "ties": f"{_FAMILY}:TIES",
    "dare_ties": f"{_FAMILY}:DARE_TIES",
    "dare_linear": f"{_FAMILY}:DARE_LINEAR",
}, check=lambda obj: isinstance(obj, MethodSpec), error=MergeConfigError)


def get_method(name: str) -> MethodSpec:
    if name not in MERGE_METHODS:
        raise MergeConfigError(f"merge_method: unknown method {name!r} (known: {', '.join(MERGE_METHODS.names())})")
    return MERGE_METHODS.load(name)


__all__ = ["MERGE_METHODS", "REQUIRED", "MethodSpec", "ParamSpec", "get_method"]
