"""Checks a job can pass before any item is touched: config problems are usage errors (exit 2).

A model path that does not exist would otherwise fail every batch, be
bisected down to every single item, and end as N identical per-item errors.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from pipelines.graph import Pipeline
from stages.base import ConfigError

# Config fields that name models or model folders (hub ids pass through: only local-looking values are checked).
_MODEL_FIELD = re.compile(r"^(model|members|router|checkpoint)$|_(model|models|path|dir|checkpoint)$")
_WEIGHT_SUFFIXES = {".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".gguf"}


def looks_local(value: str) -> bool:
    """A path rather than a hub id or a model name ('tiny', 'Helsinki-NLP/opus-mt-en-de')."""
    if "://" in value:
        return False
    if os.path.isabs(value) or value.startswith(("./", "../", "~")):
        return True
    if Path(value).suffix.lower() in _WEIGHT_SUFFIXES:
        return True
    first = value.split("/", 1)[0]
    return "/" in value and Path(first).exists()  # 'models/mt' where ./models exists


def missing_model_paths(pipe: Pipeline) -> list[str]:
    problems = []
    for name, node in pipe.nodes.items():
        for field, value in node.stage.config:
            if not _MODEL_FIELD.search(field):
                continue
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, str) and looks_local(v) and not os.path.exists(os.path.expanduser(v)):
                    problems.append(f"node {name}: {field} {v!r} does not exist")
    return problems


def check(pipe: Pipeline) -> None:
    """Raise ConfigError naming every problem found (missing model paths, then each stage's own checks)."""
    problems = missing_model_paths(pipe)
    if problems:
        raise ConfigError("; ".join(problems) + " (check the path, or the machine this runs on)")
    problems = [f"node {name}: {p}" for name, node in pipe.nodes.items() for p in node.stage.preflight()]
    if problems:
        raise ConfigError("; ".join(problems))
