"""One process-wide cache of loaded models, and device/dtype selection.

A worker process loads each model once and reuses it across tasks (and across
Ray tasks, since Ray reuses worker processes). Keyed by
(loader, name or path, device, dtype).
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Callable

import torch

from stages.base import ConfigError

_cache: dict[tuple, Any] = {}
# Loads that failed, by key: a model that cannot load fails the same way for every batch, so the
# first error is kept and raised again at once instead of loading the checkpoint once per batch.
_failed: dict[tuple, ConfigError] = {}
_guard = threading.Lock()
# One load at a time per process: transformers' from_pretrained initialises on a shared meta-device
# context that is not thread-safe ("Cannot copy out of meta tensor" when two threads load at once).
_loading = threading.RLock()


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' means the first CUDA device when one is visible, else the CPU."""
    if requested in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is not None and device.index >= max(torch.cuda.device_count(), 1):
        raise ConfigError(f"device {requested!r} asked for, but only {torch.cuda.device_count()} CUDA "
                          "device(s) are visible")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} asked for, but no CUDA device is visible "
                          "(use device=auto or cpu)")
    return device


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """'auto' means fp16 on GPU and fp32 on CPU (fp16 matmuls are slow or missing on CPU)."""
    if requested == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        dtype = getattr(torch, requested)
    except AttributeError:
        raise ConfigError(f"unknown dtype {requested!r}; use auto, float32, float16 or bfloat16") from None
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"unknown dtype {requested!r}; use auto, float32, float16 or bfloat16")
    return dtype


def load_cached(loader: str, name_or_path: str, device: torch.device, dtype: torch.dtype,
                load: Callable[[], Any]) -> Any:
    """Return the cached object for this key, calling `load()` once per process.

    Any failure of `load()` is a ConfigError naming the model: it would hit every item alike.
    """
    key = (loader, str(name_or_path), str(device), str(dtype))
    with _guard:
        if key in _cache:
            return _cache[key]
        if key in _failed:
            raise _failed[key]
    with _loading:
        if key in _failed:
            raise _failed[key]
        if key not in _cache:
            try:
                _cache[key] = load()
            except ConfigError as exc:
                _failed[key] = exc
                raise
            except Exception as exc:  # noqa: BLE001 - every load failure is a config problem, said once
                _failed[key] = ConfigError(f"cannot load model {name_or_path!r}: {_one_line(exc)}")
                raise _failed[key] from exc
        return _cache[key]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def clear_cache() -> None:
    with _guard:
        _cache.clear()
        _failed.clear()


def cached_keys() -> list[tuple]:
    return list(_cache)


# Model files up to this size are identified by a hash of their content, so a checkpoint rewritten in place
# (same size, same second) still changes the resume key. Larger files: size, mtime and, for safetensors,
# a hash of the header (tensor names, shapes, dtypes, offsets). Exported CASCADE_MODEL_HASH_MAX_BYTES wins.
HASH_MAX_BYTES = 2 * 1024**3
_digests: dict[tuple, str] = {}  # (path, size, mtime, ctime, inode) -> digest: each file is hashed once per process


def path_identity(name_or_path: str) -> str:
    """Identity of a model for cache keys: a hub id as is; a local path by its files' contents."""
    path = Path(os.path.expanduser(str(name_or_path)))
    if not path.exists():
        return str(name_or_path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    parts = [f"{p.relative_to(path.parent)}:{model_file_digest(p)}" for p in files]
    return f"{path.resolve()}|" + ",".join(parts)


def model_file_digest(path: Path) -> str:
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)  # ctime: any write
    if memo not in _digests:
        limit = int(os.environ.get("CASCADE_MODEL_HASH_MAX_BYTES", HASH_MAX_BYTES))
        h = hashlib.sha256()
        if st.st_size <= limit:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            _digests[memo] = "sha256=" + h.hexdigest()
        else:
            h.update(_safetensors_header(path) if path.suffix == ".safetensors" else b"")
            _digests[memo] = f"size={st.st_size},mtime_ns={st.st_mtime_ns},header={h.hexdigest()[:16]}"
    return _digests[memo]


def _safetensors_header(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        return head + f.read(min(n, 100 * 1024**2))
