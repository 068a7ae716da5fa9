"""Lazy, one-tensor-at-a-time reads from a Hugging Face model directory.

Supported layouts: model.safetensors, sharded safetensors with model.safetensors.index.json,
pytorch_model.bin and sharded pytorch_model-*.bin with pytorch_model.bin.index.json.

Safetensors are read with plain positioned reads into a fresh tensor (header offsets
parsed once): no mmap, so pages of tensors already merged do not pile up in the process's
resident set. `.bin` files go through torch.load(weights_only=True, mmap=True).
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import torch

from stages.methods.merging.merge_errors import MergeInputError

SAFETENSORS_DTYPES: Dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    shape: Tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n * self.dtype.itemsize


@dataclass(frozen=True)
class _SafetensorsEntry:
    file: Path
    start: int  # absolute byte offset in the file
    info: TensorInfo


def read_safetensors_header(path: Path) -> Dict[str, _SafetensorsEntry]:
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise MergeInputError(f"{path}: not a safetensors file (truncated header)")
            (size,) = struct.unpack("<Q", raw)
            if size > _MAX_HEADER:
                raise MergeInputError(f"{path}: not a safetensors file (header of {size} bytes)")
            header = json.loads(f.read(size))
            file_size = os.fstat(f.fileno()).st_size
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MergeInputError(f"{path}: cannot read safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise MergeInputError(f"{path}: not a safetensors file (header is not a JSON object)")
    entries = {}
    data_start = 8 + size
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise MergeInputError(f"{path}: tensor {name!r} has a malformed header entry") from None
        dtype = SAFETENSORS_DTYPES.get(dtype_name)
        if dtype is None:
            raise MergeInputError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name}")
        info = TensorInfo(shape, dtype)
        if end - begin != info.nbytes:
            raise MergeInputError(f"{path}: tensor {name!r} has inconsistent data offsets")
        # Checked here, from the header alone, so a cut-off download is refused before any merging.
        if data_start + end > file_size:
            raise MergeInputError(
                f"{path}: truncated file ({file_size} bytes, its header needs {data_start + end}); "
                "copy or download it again")
        entries[name] = _SafetensorsEntry(path, data_start + begin, info)
    return entries


class Checkpoint:
    """The tensors of one model directory: names, shapes and dtypes up front, data on demand."""

    def __init__(self, model_dir: Path):
        self.dir = Path(model_dir)
        self._safetensors: Dict[str, _SafetensorsEntry] = {}
        self._bin_files: Dict[str, Path] = {}
        self._bin_loaded: Dict[Path, Dict[str, torch.Tensor]] = {}
        self._fds: Dict[Path, int] = {}
        self._open()

    def _open(self) -> None:
        d = self.dir
        if not d.is_dir():
            raise MergeInputError(f"{d}: model directory does not exist")
        if (d / "model.safetensors.index.json").is_file():
            for file in sorted(set(_weight_map(d / "model.safetensors.index.json").values())):
                self._safetensors.update(read_safetensors_header(d / file))
        elif (d / "model.safetensors").is_file():
            self._safetensors = read_safetensors_header(d / "model.safetensors")
        elif (d / "pytorch_model.bin.index.json").is_file():
            self._bin_files = {k: d / v for k, v in _weight_map(d / "pytorch_model.bin.index.json").items()}
        elif (d / "pytorch_model.bin").is_file():
            state = self._load_bin(d / "pytorch_model.bin")
            self._bin_files = {name: d / "pytorch_model.bin" for name in state}
        else:
            raise MergeInputError(
                f"{d}: no weights found (expected model.safetensors, model.safetensors.index.json "
                "or pytorch_model.bin)")
        self._infos = {name: e.info for name, e in self._safetensors.items()}
        for name, file in self._bin_files.items():
            tensor = self._load_bin(file).get(name)
            if tensor is None:
                raise MergeInputError(f"{d}: index lists tensor {name!r} but {file.name} lacks it")
            self._infos[name] = TensorInfo(tuple(tensor.shape), tensor.dtype)

    def _load_bin(self, file: Path) -> Dict[str, torch.Tensor]:
        if file not in self._bin_loaded:
            try:
                try:
                    state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
                    state = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise MergeInputError(f"{file}: cannot load with torch.load(weights_only=True): {exc}") from None
            if not isinstance(state, dict):
                raise MergeInputError(f"{file}: expected a state dict, got {type(state).__name__}")
            self._bin_loaded[file] = state
        return self._bin_loaded[file]

    def names(self) -> Iterable[str]:
        return self._infos.keys()

    def __contains__(self, name: str) -> bool:
        return name in self._infos

    def info(self, name: str) -> Optional[TensorInfo]:
        return self._infos.get(name)

    def load(self, name: str) -> torch.Tensor:
        """A freshly allocated CPU tensor the caller owns."""
        entry = self._safetensors.get(name)
        if entry is None:
            return self._load_bin(self._bin_files[name])[name].clone()
        info = entry.info
        out = torch.empty(info.shape, dtype=info.dtype)
        if info.nbytes:
            buf = memoryview(out.view(-1).view(torch.uint8).numpy())
            fd = self._fd(entry.file)
            done = 0
            while done < info.nbytes:
                got = os.preadv(fd, [buf[done:]], entry.start + done)
                if got <= 0:
                    raise MergeInputError(f"{entry.file}: truncated data for tensor {name!r}")
                done += got
        return out

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(file, os.O_RDONLY)
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._bin_loaded.clear()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _weight_map(index_file: Path) -> Dict[str, str]:
    try:
        return dict(json.loads(index_file.read_text())["weight_map"])
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise MergeInputError(f"{index_file}: unreadable shard index ({exc})") from None
