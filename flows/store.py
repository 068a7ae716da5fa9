"""The run store: every stage × micro-batch result, content-addressed, atomic.

Layout under the job root (a local folder or any fsspec URI):

    manifest.jsonl                    the input items, in order
    stages/<node>/<key>.jsonl         one line per item: {"id", "output"} or {"id", "error"}
    outputs.jsonl errors.jsonl summary.json

`key` hashes the stage's fingerprint with the batch's input digest, so a
rerun finds finished batches and a changed stage recomputes only itself.
Only JSON crosses process and machine borders; no pickle.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections import OrderedDict
from typing import Any, Iterable

import fsspec


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def batch_key(stage_fingerprint: str, records: list[tuple[str, dict]]) -> str:
    """Key of one stage × batch: the stage identity plus (id, input) of every item in order."""
    return digest({"stage": stage_fingerprint, "inputs": records})[:32]


class RunStore:
    def __init__(self, root: str):
        self.fs, self.root = fsspec.core.url_to_fs(str(root))
        self.url = str(root)
        self._local = "file" in _protocols(self.fs)
        self.fs.makedirs(self.root, exist_ok=True)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    # -- atomic whole-file writes --------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Readers see the old file or the new one, never half of it."""
        path = self.path(rel)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if self._local:
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:  # object stores publish a PUT atomically
            self.fs.pipe_file(path, data)

    def write_jsonl(self, rel: str, rows: Iterable[dict]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
        self.write_bytes(rel, text.encode())

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode())

    def read_jsonl(self, rel: str) -> list[dict]:
        with self.fs.open(self.path(rel), "rb") as f:
            return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]

    def read_json(self, rel: str) -> Any:
        with self.fs.open(self.path(rel), "rb") as f:
            return json.loads(f.read().decode())

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    # -- stage batches --------------------------------------------------
    def batch_rel(self, node: str, key: str) -> str:
        return f"stages/{node}/{key}.jsonl"

    def has_batch(self, node: str, key: str) -> bool:
        return self.exists(self.batch_rel(node, key))

    def write_batch(self, node: str, key: str, rows: list[dict]) -> None:
        self.write_jsonl(self.batch_rel(node, key), rows)
        _recent.put((self.url, node, key), rows)

    def read_batch(self, node: str, key: str) -> list[dict]:
        """The batch's rows (shared with a cache: treat them as read-only)."""
        rows = _recent.get((self.url, node, key))
        if rows is None:
            rows = self.read_jsonl(self.batch_rel(node, key))
            _recent.put((self.url, node, key), rows)
        return rows


class _RecentBatches:
    """Rows of the batches this process wrote or read last, up to `max_rows` rows.

    A downstream stage and the final collection read what an upstream task of
    the same process has just written; parsing it back from JSON cost as much
    as a small stage. Safe to cache: a key names content, and a batch file is
    written once, atomically, and never changed.
    """

    def __init__(self, max_rows: int = 200_000):
        self.max_rows, self.rows = max_rows, 0
        self._data: OrderedDict[tuple, list[dict]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> list[dict] | None:
        with self._lock:
            rows = self._data.get(key)
            if rows is not None:
                self._data.move_to_end(key)
            return rows

    def put(self, key: tuple, rows: list[dict]) -> None:
        with self._lock:
            if key in self._data:
                return
            self._data[key] = rows
            self.rows += len(rows)
            while self.rows > self.max_rows and len(self._data) > 1:
                _, dropped = self._data.popitem(last=False)
                self.rows -= len(dropped)


_recent = _RecentBatches()


def _protocols(fs) -> tuple:
    proto = fs.protocol
    return proto if isinstance(proto, tuple) else (proto,)


def file_digest(path: str) -> str:
    """sha256 of a file's bytes (local or fsspec URI); '' when it cannot be read."""
    try:
        with fsspec.open(path, "rb") as f:
            h = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            return h.hexdigest()
    except (OSError, ValueError):
        return ""
