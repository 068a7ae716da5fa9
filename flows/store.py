"""The run store: every stage × micro-batch result, content-addressed, atomic.

A batch file (its name: flows/job_folder.py) holds one line per item:
{"id", "output"} or {"id", "error"}.

`key` hashes the stage's fingerprint with the batch's input digest, so a
rerun finds finished batches and a changed stage recomputes only itself.
Only JSON crosses process and machine borders; no pickle.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from typing import Any, Iterable

import fsspec
import orjson
from pydantic import BaseModel, ValidationError

from stages.base import ItemError

from flows.job_folder import JobFolder


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def jsonl_bytes(rows: list[dict]) -> bytes:
    """One JSON object per line, keys sorted. orjson is several times faster than json here, and
    these lines are most of the Python work a flow adds per batch; json takes what orjson refuses
    (integers beyond 64 bits, keys that are not strings)."""
    try:
        return b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE) for r in rows)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()


def _loads(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:  # NaN or Infinity, which json writes and orjson refuses
        return json.loads(line)


def _well_typed(row: Any, output_type: type[BaseModel]) -> bool:
    """One stored row as the engine writes it: {"id", and one of output / error / skipped}."""
    if not isinstance(row, dict) or not isinstance(row.get("id"), str) or len(row) != 2:
        return False
    try:
        # JSON rules, strict: "1.5" is not a float and an extra field is refused. json, not orjson,
        # writes the text: orjson would turn a stored NaN into null.
        if "output" in row:
            output_type.model_validate_json(json.dumps(row["output"]), strict=True)
        elif "error" in row:
            ItemError.model_validate_json(json.dumps(row["error"]), strict=True)
        else:
            return isinstance(row.get("skipped"), str)
    except ValidationError:
        return False
    return True


def batch_key(stage_fingerprint: str, records: list[tuple[str, dict]]) -> str:
    """Key of one stage × batch: the stage identity plus (id, input) of every item in order."""
    return digest({"stage": stage_fingerprint, "inputs": records})[:32]


class RunStore:
    def __init__(self, root: str):
        self.fs, self.root = fsspec.core.url_to_fs(str(root))
        self.url = str(root)
        self._local = "file" in _protocols(self.fs)
        self.fs.makedirs(self.root, exist_ok=True)
        self._made_dirs = {self.root}  # fsspec's makedirs resolves the path each call: make each folder once

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    # -- atomic whole-file writes --------------------------------------
    def write_bytes(self, rel: str, data: bytes, durable: bool = True) -> None:
        """Readers see the old file or the new one, never half of it.

        `durable=False` skips the fsync: a crash of the process still leaves whole files, but after a
        power cut the file may come back empty, so only write that way what readers verify.
        """
        path = self.path(rel)
        folder = path.rsplit("/", 1)[0]
        if folder not in self._made_dirs:
            self.fs.makedirs(folder, exist_ok=True)
            self._made_dirs.add(folder)
        if self._local:
            tmp = JobFolder.temp_name(path)
            with open(tmp, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        else:  # object stores publish a PUT atomically
            self.fs.pipe_file(path, data)

    def write_jsonl(self, rel: str, rows: Iterable[dict], durable: bool = True) -> None:
        self.write_bytes(rel, jsonl_bytes(list(rows)), durable)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode())

    def read_jsonl(self, rel: str) -> list[dict]:
        with self.fs.open(self.path(rel), "rb") as f:
            return [_loads(line) for line in f.read().splitlines() if line.strip()]

    def read_json(self, rel: str) -> Any:
        with self.fs.open(self.path(rel), "rb") as f:
            return json.loads(f.read().decode())

    def exists(self, rel: str) -> bool:
        # fsspec's local exists() resolves the path first; a plain stat is enough and is on the per-batch path
        return os.path.exists(self.path(rel)) if self._local else self.fs.exists(self.path(rel))

    # -- stage batches --------------------------------------------------
    def batch_rel(self, node: str, key: str) -> str:
        return JobFolder.batch_file(node, key)

    def stored_batch(self, node: str, key: str, ids: list[str], output_type: type[BaseModel]) -> list[dict] | None:
        """The stored rows of a batch if they are whole and well-typed; None to recompute.

        Whole: one row per id, in order. Batch files are written without fsync (a few ms per batch),
        so after a power cut one may be empty or cut short: such a file counts as missing, never as
        a result. Well-typed: each row holds an `output` of the stage's `output_type`, an `error` or
        a `skipped` upstream name, so a hand-edited row with the right types is reused and a wrong
        one recomputes its batch. Rows that fail are never cached: the rewrite is what later reads see.
        """
        rows = _recent.get((self.url, node, key))  # written or verified by this process
        if rows is None:
            if not self.exists(self.batch_rel(node, key)):
                return None
            try:
                rows = self.read_jsonl(self.batch_rel(node, key))
            except (OSError, ValueError):  # unreadable or not JSON (orjson's and json's errors are ValueErrors)
                return None
            if not all(_well_typed(r, output_type) for r in rows) or [r["id"] for r in rows] != ids:
                return None
            _recent.put((self.url, node, key), rows)
        return rows if [r.get("id") for r in rows] == ids else None

    def write_batch(self, node: str, key: str, rows: list[dict]) -> None:
        self.write_jsonl(self.batch_rel(node, key), rows, durable=False)  # readers check: stored_batch
        _recent.put((self.url, node, key), rows)  # replaces any rows of a file that failed the check

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

    def drop_root(self, url: str) -> None:
        with self._lock:
            for key in [k for k in self._data if k[0] == url]:
                self.rows -= len(self._data.pop(key))

    def put(self, key: tuple, rows: list[dict]) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            self.rows -= len(old) if old is not None else 0
            self._data[key] = rows
            self.rows += len(rows)
            while self.rows > self.max_rows and len(self._data) > 1:
                _, dropped = self._data.popitem(last=False)
                self.rows -= len(dropped)


_recent = _RecentBatches()


def forget_batches(url: str) -> None:
    """Drop the cached rows of every batch under the job root `url`."""
    _recent.drop_root(url)


def _protocols(fs) -> tuple:
    proto = fs.protocol
    return proto if isinstance(proto, tuple) else (proto,)
