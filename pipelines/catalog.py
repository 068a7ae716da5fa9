"""Named pipelines: built-in names, the `cascadekit.pipelines` entry points, or `module:attribute`."""
from __future__ import annotations

import inspect
from typing import Any

from pydantic import TypeAdapter, ValidationError

from pipelines.graph import Pipeline, WiringError
from stages.registry import Registry, RegistryError, load_target


class PipelineNotFound(RegistryError):
    pass


# name -> "module:factory"; factories take keyword parameters and return a Pipeline.
PIPELINES: Registry[Any] = Registry("pipeline", "cascadekit.pipelines", {
    "speech-translation": "pipelines.speech_translation:speech_translation",
    "transcribe": "pipelines.speech_translation:transcribe",
    "translate": "pipelines.speech_translation:translate",
    "generate": "pipelines.speech_translation:generate",
}, check=lambda obj: isinstance(obj, Pipeline) or callable(obj), error=PipelineNotFound)


def _load(name: str) -> tuple[str, Any]:
    """(target, object) for a registered name or a `module:attribute` given directly."""
    if ":" not in name:
        if name not in PIPELINES:
            raise PipelineNotFound(f"unknown pipeline {name!r}; known: {', '.join(PIPELINES.names())}, "
                                   "or give module:attribute")
        return PIPELINES.target(name), PIPELINES.load(name)
    try:
        return name, load_target(name)
    except RegistryError as exc:
        raise PipelineNotFound(f"pipeline {exc}") from None


def resolve(name: str, params: dict[str, str] | None = None) -> Pipeline:
    """A built-in name or `module:attribute` (a Pipeline, or a factory called with `params`)."""
    params = params or {}
    target, obj = _load(name)
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


def describe_pipelines() -> list[tuple[str, str]]:
    """(name, first line of its docstring) for every registered pipeline; a broken one raises."""
    rows = []
    for name in PIPELINES.names():
        doc = inspect.getdoc(PIPELINES.load(name)) or ""
        rows.append((name, doc.splitlines()[0] if doc else ""))
    return rows
