"""Find a pipeline by built-in name or `module:attribute`, and build it with parameters."""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from pydantic import TypeAdapter, ValidationError

from pipelines.graph import Pipeline, WiringError

# name -> "module:factory"; factories take keyword parameters and return a Pipeline.
BUILTIN = {
    "speech-translation": "pipelines.speech_translation:speech_translation",
    "transcribe": "pipelines.speech_translation:transcribe",
    "translate": "pipelines.speech_translation:translate",
    "generate": "pipelines.speech_translation:generate",
}


class PipelineNotFound(LookupError):
    pass


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise PipelineNotFound(f"cannot import {module!r} for pipeline {target!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PipelineNotFound(f"{module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def resolve(name: str, params: dict[str, str] | None = None) -> Pipeline:
    """A built-in name or `module:attribute` (a Pipeline, or a factory called with `params`)."""
    params = params or {}
    if name in BUILTIN:
        target = BUILTIN[name]
    elif ":" in name:
        target = name
    else:
        raise PipelineNotFound(f"unknown pipeline {name!r}; built-in: {', '.join(sorted(BUILTIN))}, "
                               "or give module:attribute")
    obj = _load(target)
    if isinstance(obj, Pipeline):
        if params:
            raise WiringError(f"{name} is a ready pipeline and takes no parameters (got {sorted(params)})")
        return obj.validate()
    if not callable(obj):
        raise PipelineNotFound(f"{target} is neither a Pipeline nor a function returning one")
    pipe = obj(**_coerce(obj, params, name))
    if not isinstance(pipe, Pipeline):
        raise PipelineNotFound(f"{target} returned {type(pipe).__name__}, not a Pipeline")
    return pipe.validate()


def _coerce(factory, params: dict[str, str], name: str) -> dict[str, Any]:
    """Command-line strings -> the factory's annotated parameter types."""
    sig = inspect.signature(factory)
    hints = _hints(factory)
    out = {}
    for key, value in params.items():
        key = key.replace("-", "_")
        if key not in sig.parameters:
            allowed = ", ".join(p for p in sig.parameters) or "none"
            raise WiringError(f"pipeline {name} has no parameter {key!r} (parameters: {allowed})")
        tp = hints.get(key, str)
        try:
            out[key] = value if tp is str else TypeAdapter(tp).validate_strings(value)
        except ValidationError as exc:
            raise WiringError(f"parameter {key}={value!r}: {exc.errors()[0]['msg']}") from None
        except (TypeError, AttributeError):
            out[key] = TypeAdapter(tp).validate_python(value)
    return out


def _hints(fn) -> dict:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - fall back to raw strings
        return {}


def describe_builtins() -> list[tuple[str, str]]:
    rows = []
    for name, target in sorted(BUILTIN.items()):
        try:
            doc = (inspect.getdoc(_load(target)) or "").splitlines()[0]
        except PipelineNotFound as exc:
            doc = f"(unavailable: {exc})"
        rows.append((name, doc))
    return rows
