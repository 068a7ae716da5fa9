"""The options every `cascade train` recipe shares; each recipe subclasses them with its own fields.

Options are validated (pydantic, unknown keys refused) before any model is loaded, so a typo in
`-p KEY=VAL` or a missing data file is one usage error, not a traceback after minutes of loading.
"""
from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stages.training.train_data import data_format
from stages.training.train_loop import LoopConfig


def split_list(value):
    """`-p teacher=a,b,c` arrives as one string: a list of paths."""
    if isinstance(value, str):
        return [v for v in (s.strip() for s in value.split(",")) if v]
    return value


class RecipeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Path = Field(..., description="training data: .jsonl, .tsv or a saved HF dataset dir")
    model: str = Field(..., description="start: a model dir / hub name, or a config+tokenizer dir")
    out: Path = Field(..., description="output folder (checkpoint-STEP folders inside; rerun to resume)")
    dev: Path | None = Field(None, description="held-out pairs for the eval hook (same formats)")
    dev_size: int = Field(200, ge=1)
    source_field: str = "source"
    target_field: str = "target"
    split: str | None = None
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup: int = Field(100, ge=0)
    clip_norm: float | None = Field(1.0, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 0
    save_every: int | None = Field(None, ge=1)
    eval_every: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    resume: bool = True
    threads: int | None = Field(None, ge=1)
    device: str = Field("auto", description="auto (cuda when present), cpu or cuda")

    @field_validator("data", "dev")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        if path is not None:
            data_format(path)  # raises DataError (a ValueError) naming the file
        return path

    def loop(self, **overrides) -> LoopConfig:
        fields = {k: getattr(self, k) for k in LoopConfig.model_fields if k in type(self).model_fields}
        return LoopConfig(**{**fields, **overrides})

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)
