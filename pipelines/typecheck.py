"""Is a value of one annotated type always acceptable where another is expected?

Deliberately conservative: when in doubt, say no, and let the user add an
explicit adapter stage. Handles plain classes, Optional/Union, list/dict
generics, Literal, Annotated and Any.
"""
from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

_UNION_TYPES = (Union, types.UnionType)


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> tuple:
    return typing.get_args(tp) if typing.get_origin(tp) in _UNION_TYPES else (tp,)


def assignable(src: Any, dst: Any) -> bool:
    src, dst = _strip(src), _strip(dst)
    if dst is Any or src == dst:
        return True
    if src is Any:
        return False
    src_members = _union_members(src)
    if len(src_members) > 1:  # every possible src value must fit dst
        return all(assignable(m, dst) for m in src_members)
    dst_members = _union_members(dst)
    if len(dst_members) > 1:
        return any(assignable(src, m) for m in dst_members)
    s_origin, d_origin = typing.get_origin(src), typing.get_origin(dst)
    if s_origin is Literal:
        if d_origin is Literal:
            return set(typing.get_args(src)) <= set(typing.get_args(dst))
        return all(assignable(type(v), dst) for v in typing.get_args(src))
    if d_origin is Literal:
        return False
    if s_origin or d_origin:
        if not (s_origin and d_origin) or not issubclass(s_origin, d_origin):
            return False
        s_args, d_args = typing.get_args(src), typing.get_args(dst)
        if not d_args:
            return True
        if len(s_args) != len(d_args):
            return False
        return all(assignable(s, d) for s, d in zip(s_args, d_args) if s is not Ellipsis)
    if src is int and dst is float:  # pydantic widens ints to floats
        return True
    return isinstance(src, type) and isinstance(dst, type) and issubclass(src, dst)


def type_name(tp: Any) -> str:
    tp = _strip(tp)
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")
