"""Stream tensors into safetensors shards whose layout is fixed before any data exists.

Every output shape and dtype is known while planning, so each shard's header is written
when the shard is opened and tensor bytes follow one by one straight from the tensor's
memory: no shard is ever assembled in RAM.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from stages.methods.merging.lazy_checkpoint import SAFETENSORS_DTYPES, TensorInfo

_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
DEFAULT_SHARD_BYTES = 5 * 1024**3


def plan_shards(layout: Sequence[Tuple[str, TensorInfo]], max_shard_bytes: int) -> List[List[Tuple[str, TensorInfo]]]:
    """Split tensors (in write order) into consecutive shards of at most max_shard_bytes
    (a tensor larger than the limit gets a shard of its own)."""
    shards: List[List[Tuple[str, TensorInfo]]] = [[]]
    size = 0
    for name, info in layout:
        if shards[-1] and size + info.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, info))
        size += info.nbytes
    return shards


class ShardWriter:
    """write() must be called once per tensor, in layout order; then finalize()."""

    def __init__(self, out_dir: Path, layout: Sequence[Tuple[str, TensorInfo]], max_shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.out_dir = Path(out_dir)
        self.shards = plan_shards(layout, max_shard_bytes)
        n = len(self.shards)
        self.files = ["model.safetensors"] if n == 1 else [
            f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self._order = [(i, name, info) for i, shard in enumerate(self.shards) for name, info in shard]
        self._next = 0
        self._shard = -1
        self._file = None
        self._total_bytes = sum(info.nbytes for _, name, info in self._order)

    def _open_shard(self, index: int) -> None:
        self._close_file()
        header: Dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, info in self.shards[index]:
            header[name] = {"dtype": _DTYPE_NAMES[info.dtype], "shape": list(info.shape),
                            "data_offsets": [offset, offset + info.nbytes]}
            offset += info.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
        self._file = open(self.out_dir / self.files[index], "wb")
        self._file.write(len(raw).to_bytes(8, "little"))
        self._file.write(raw)
        self._shard = index

    def write(self, name: str, tensor: torch.Tensor) -> None:
        shard, expected_name, info = self._order[self._next]
        if name != expected_name:
            raise RuntimeError(f"tensor {name!r} written out of order (expected {expected_name!r})")
        if tuple(tensor.shape) != info.shape or tensor.dtype != info.dtype:
            raise RuntimeError(f"tensor {name!r}: got {tuple(tensor.shape)} {tensor.dtype}, planned {info.shape} {info.dtype}")
        if shard != self._shard:
            self._open_shard(shard)
        if info.nbytes:
            data = tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8)
            self._file.write(memoryview(data.numpy()))
        self._next += 1

    def finalize(self) -> Optional[Path]:
        """Close the last shard and, for several shards, write model.safetensors.index.json."""
        if self._next != len(self._order):
            missing = self._order[self._next][1]
            raise RuntimeError(f"finalize() before all tensors were written (next: {missing!r})")
        if self._shard == -1 and self._order == []:
            self._open_shard(0)  # an empty model still gets a valid file
        self._close_file()
        if len(self.files) == 1:
            return None
        index = {
            "metadata": {"total_size": self._total_bytes},
            "weight_map": {name: self.files[i] for i, name, _ in self._order},
        }
        path = self.out_dir / "model.safetensors.index.json"
        path.write_text(json.dumps(index, indent=2) + "\n")
        return path

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self._close_file()
