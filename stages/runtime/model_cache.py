"""One process-wide cache of loaded models, and device/dtype selection.

A worker process loads each model once and reuses it across tasks (and across
Ray tasks, since Ray reuses worker processes). Keyed by
(loader, name or path, device, dtype).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

import torch

_cache: dict[tuple, Any] = {}
_guard = threading.Lock()
# One load at a time per process: transformers' from_pretrained initialises on a shared meta-device
# context that is not thread-safe ("Cannot copy out of meta tensor" when two threads load at once).
_loading = threading.RLock()


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' means the first CUDA device when one is visible, else the CPU."""
    if requested in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} asked for, but no CUDA device is visible")
    return device


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """'auto' means fp16 on GPU and fp32 on CPU (fp16 matmuls are slow or missing on CPU)."""
    if requested == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        dtype = getattr(torch, requested)
    except AttributeError:
        raise ValueError(f"unknown dtype {requested!r}; use auto, float32, float16 or bfloat16") from None
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {requested!r}")
    return dtype


def load_cached(loader: str, name_or_path: str, device: torch.device, dtype: torch.dtype,
                load: Callable[[], Any]) -> Any:
    """Return the cached object for this key, calling `load()` once per process."""
    key = (loader, str(name_or_path), str(device), str(dtype))
    with _guard:
        if key in _cache:
            return _cache[key]
    with _loading:
        if key not in _cache:
            _cache[key] = load()
        return _cache[key]


def clear_cache() -> None:
    with _guard:
        _cache.clear()


def cached_keys() -> list[tuple]:
    return list(_cache)


def path_identity(name_or_path: str) -> str:
    """Identity of a model for cache keys: a hub id as is; a local path by its files' sizes and mtimes.

    Cheap (no hashing of gigabytes) yet changes whenever a checkpoint is rewritten.
    """
    path = Path(os.path.expanduser(str(name_or_path)))
    if not path.exists():
        return str(name_or_path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    parts = [f"{p.relative_to(path.parent)}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files]
    return f"{path.resolve()}|" + ",".join(parts)
