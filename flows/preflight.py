"""Checks a job can pass before any item is touched: config problems are usage errors (exit 2).

A model path that does not exist would otherwise fail every batch, be
bisected down to every single item, and end as N identical per-item errors.
Then each stage's own `preflight()` checks its config against the model's
files (Translate: can the model write target_lang?), still loading no weights.
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


def stage_problems(pipe: Pipeline) -> list[str]:
    """What each stage's own preflight() refuses (e.g. a target language its model cannot write)."""
    from stages.runtime.model_cache import pick_device

    problems = []
    for name, node in pipe.nodes.items():
        try:
            pick_device(node.stage.config.device)  # cuda asked for on a machine without one, a typo
            node.stage.preflight()
        except ValueError as exc:
            problems.append(f"node {name}: {exc}")
    return problems


def check(pipe: Pipeline) -> None:
    """Raise ConfigError naming every problem found (missing model paths, then devices and each stage's checks)."""
    missing = missing_model_paths(pipe)
    if missing:
        raise ConfigError("; ".join(missing) + " (check the path, or the machine this runs on)")
    problems = stage_problems(pipe)  # after the paths: these checks read the model files
    if problems:
        raise ConfigError("; ".join(problems))
