"""Merge configuration: the mergekit YAML subset, validated by pydantic before any tensor is read.

    models:
      - model: ./finetune-a
        parameters: {weight: 0.6, density: 0.5}
      - model: ./finetune-b
        parameters:
          weight: [0.2, 0.8]            # gradient: interpolated over the layer index
          density:
            - {filter: self_attn, value: 0.7}   # first matching filter wins
            - {value: 0.4}
    merge_method: ties
    base_model: ./base
    parameters: {normalize: true, lambda: 1.0}
    dtype: bfloat16
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, model_validator

from stages.methods.merging.merge_errors import MergeConfigError
from stages.methods.merging.merge_methods import get_method

Scalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr]
ScalarOrGradient = Union[Scalar, List[Scalar]]


class FilteredValue(BaseModel):
    """`{filter: substring, value: v}`; no filter (or '*') matches every tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: ScalarOrGradient
    filter: Optional[str] = None


ParameterSetting = Union[Scalar, List[Scalar], FilteredValue, List[FilteredValue]]

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}


def dtype_from_name(name: Optional[str]) -> Optional[torch.dtype]:
    return None if name is None else _DTYPES[name]


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1)  # a local Hugging Face model directory
    parameters: Optional[Dict[str, ParameterSetting]] = None


class MergeConfig(BaseModel):
    """A merge recipe. Per-model parameters take precedence over global `parameters`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: List[ModelEntry] = Field(min_length=1)
    merge_method: str
    base_model: Optional[str] = None
    parameters: Optional[Dict[str, ParameterSetting]] = None
    dtype: Optional[str] = None  # inputs are cast to this on load (mergekit semantics)
    out_dtype: Optional[str] = None  # saved dtype; default: `dtype`, else the reference input's
    tokenizer_source: Optional[str] = None  # "base" or a model dir; default base_model, else models[0]
    config_source: Optional[str] = None  # model dir whose config.json is copied; same default

    @model_validator(mode="after")
    def _check(self) -> "MergeConfig":
        method = get_method(self.merge_method)  # a MergeConfigError is a ValueError: pydantic reports it
        for field in ("dtype", "out_dtype"):
            value = getattr(self, field)
            if value is not None and value not in _DTYPES:
                raise ValueError(f"{field}: unknown dtype {value!r} (use one of {', '.join(sorted(_DTYPES))})")
        if self.tokenizer_source == "union":
            raise ValueError("tokenizer_source: 'union' (vocabulary surgery) is not supported; use 'base' or a model dir")
        if method.needs_base and not self.base_model:
            raise ValueError(f"base_model: merge_method {self.merge_method!r} needs a base_model")
        others = self.non_base_models() if method.needs_base else list(self.models)
        if not others:
            raise ValueError(f"models: merge_method {self.merge_method!r} needs at least one model besides the base")
        if method.n_models is not None and len(others) != method.n_models:
            raise ValueError(
                f"models: merge_method {self.merge_method!r} merges the base with exactly {method.n_models} "
                f"other model(s); got {len(others)}")
        self._check_parameters(self.parameters, "parameters", shared_ok=True)
        for i, entry in enumerate(self.models):
            self._check_parameters(entry.parameters, f"models[{i}].parameters", shared_ok=False)
        return self

    def _check_parameters(self, settings: Optional[Dict[str, Any]], where: str, *, shared_ok: bool) -> None:
        method = get_method(self.merge_method)
        for name, setting in (settings or {}).items():
            spec = method.per_model.get(name) or (method.shared.get(name) if shared_ok else None)
            if spec is None:
                allowed = list(method.per_model) + (list(method.shared) if shared_ok else [])
                raise ValueError(
                    f"{where}.{name}: not a parameter of {self.merge_method!r} here (allowed: {', '.join(allowed)})")
            for value in _leaf_values(setting):
                try:
                    spec.coerce(value)
                except ValueError as exc:
                    raise ValueError(f"{where}.{name}: {exc}") from None
            if spec.kind is float:
                _check_numeric_gradients(setting, f"{where}.{name}")

    def base_path(self) -> Optional[Path]:
        return Path(self.base_model) if self.base_model else None

    def is_base(self, entry: ModelEntry) -> bool:
        return bool(self.base_model) and _same_path(entry.model, self.base_model)

    def non_base_models(self) -> List[ModelEntry]:
        return [m for m in self.models if not self.is_base(m)]

    def check_paths(self) -> None:
        """Every referenced model must be an existing local directory."""
        fields = [(f"models[{i}].model", m.model) for i, m in enumerate(self.models)]
        fields += [(name, getattr(self, name)) for name in ("base_model", "tokenizer_source", "config_source")]
        for field, value in fields:
            if value is None or (field == "tokenizer_source" and value == "base"):
                continue
            if not Path(value).is_dir():
                raise MergeConfigError(
                    f"{field}: model path {value!r} does not exist or is not a directory "
                    "(only local model directories are supported)")


def _same_path(a: str, b: str) -> bool:
    return a == b or Path(a).resolve() == Path(b).resolve()


def _leaf_values(setting: Any) -> List[Any]:
    if isinstance(setting, FilteredValue):
        return _leaf_values(setting.value)
    if isinstance(setting, list):
        return [leaf for item in setting for leaf in _leaf_values(item)]
    return [setting]


def _check_numeric_gradients(setting: Any, where: str) -> None:
    if isinstance(setting, FilteredValue):
        setting = setting.value
    if isinstance(setting, list) and setting and not isinstance(setting[0], FilteredValue):
        if any(isinstance(v, bool) for v in setting):
            raise ValueError(f"{where}: a gradient list must hold numbers")
    elif isinstance(setting, list):
        for item in setting:
            _check_numeric_gradients(item, where)


def parse_merge_config(data: Any, *, source: str = "config") -> MergeConfig:
    """Validate a dict (e.g. parsed YAML) into a MergeConfig, raising MergeConfigError."""
    if not isinstance(data, dict):
        raise MergeConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    for unsupported in ("slices", "modules"):
        if unsupported in data:
            raise MergeConfigError(f"{source}: '{unsupported}' (layer surgery) is not supported; use 'models'")
    try:
        return MergeConfig.model_validate(data)
    except ValidationError as exc:
        raise MergeConfigError(f"{source}: invalid merge config:\n{_describe(exc)}") from None


def load_merge_config(path: Union[str, Path]) -> MergeConfig:
    """Read and validate a mergekit-style YAML file; also checks that every model path exists."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise MergeConfigError(f"{path}: cannot read merge config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise MergeConfigError(f"{path}: not a text file (a merge config is UTF-8 YAML)") from None
    except yaml.YAMLError as exc:
        raise MergeConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise MergeConfigError(f"{path}: YAML nested too deeply") from None
    config = parse_merge_config(data, source=str(path))
    config.check_paths()
    return config


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith(("function-", "union[")))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
    return "\n".join(dict.fromkeys(lines))


__all__ = ["FilteredValue", "MergeConfig", "ModelEntry", "ParameterSetting", "dtype_from_name",
           "load_merge_config", "parse_merge_config"]
