"""Turn what the user points at (files, folders, JSONL, dicts) into input items.

An item is a dict with an `id` and the fields the pipeline's root stages read;
extra fields (references such as `ref_de`) ride along for metrics. Items that
do not validate become per-item errors here, before any model loads.
"""
from __future__ import annotations

import json
import os
import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipelines.graph import Pipeline, input_model_of
from stages.base import ItemError
from stages.payloads import FileRef
from flows.job_folder import JobFolder
from flows.store import file_digest

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".opus", ".webm", ".mp4", ".aiff", ".aif"}
TEXT_EXTS = {".txt"}


class InputError(ValueError):
    """The inputs cannot be read at all (missing path, unknown format). A usage error, exit 2."""


def file_fields(pipe: Pipeline) -> list[str]:
    """Input fields that hold paths to files (marked FilePath in the payload types)."""
    return [name for name, info in pipe.input_fields().items()
            if any(isinstance(m, FileRef) for m in info.metadata)
            or any(isinstance(m, FileRef) for m in typing.get_args(info.annotation)[1:])]


def read_inputs(pipe: Pipeline, inputs: list[Any]) -> list[dict]:
    """Expand paths and dicts into raw item dicts (not validated yet)."""
    audio_field = (file_fields(pipe) or [None])[0]
    items: list[dict] = []
    for entry in inputs:
        if isinstance(entry, dict):
            items.append(dict(entry))
            continue
        path = Path(os.path.expanduser(str(entry)))
        if not path.exists():
            raise InputError(f"input not found: {entry}")
        if path.is_dir():
            manifest = path / JobFolder.MANIFEST  # an input folder may hold a manifest, as a job folder does
            if manifest.exists():
                items += _read_jsonl(manifest, audio_field)
                continue
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            readable = [p for p in files if p.suffix.lower() in AUDIO_EXTS | TEXT_EXTS | {".jsonl"}]
            if not readable:
                raise InputError(f"{entry}: no audio, .txt or .jsonl files in this folder")
            for p in readable:
                items += _read_file(p, audio_field)
        else:
            items += _read_file(path, audio_field)
    return items


def _read_file(path: Path, audio_field: str | None) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, audio_field)
    if suffix in TEXT_EXTS:
        items = []
        for i, raw in enumerate(path.read_bytes().splitlines()):
            try:  # a line that is not UTF-8 fails alone instead of turning into replacement characters
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                items.append({"id": f"{path.stem}:{i + 1}", "_invalid": f"line {i + 1} of {path} is not UTF-8: {exc}"})
                continue
            if line.strip():
                items.append({"id": f"{path.stem}:{i + 1}", "text": line})
        return items
    if audio_field is None:
        raise InputError(f"{path}: this pipeline reads no audio (its input fields have no file path)")
    return [{"id": path.stem, audio_field: str(path)}]


def _read_jsonl(path: Path, audio_field: str | None) -> list[dict]:
    items = []
    for i, raw in enumerate(path.read_bytes().splitlines()):
        if not raw.strip():
            continue
        try:  # line by line: one badly encoded line is one bad item, not an unreadable file
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            items.append({"id": f"{path.stem}:{i + 1}", "_invalid": f"line {i + 1} of {path} is not UTF-8: {exc}"})
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            item = {"id": f"{path.stem}:{i + 1}", "_invalid": f"line {i + 1} of {path} is not JSON: {exc}"}
        if not isinstance(item, dict):
            item = {"id": f"{path.stem}:{i + 1}", "_invalid": f"line {i + 1} of {path} is not an object"}
        item.setdefault("id", f"{path.stem}:{i + 1}")
        # Relative file paths in a manifest are relative to the manifest's folder.
        value = item.get(audio_field) if audio_field else None
        if isinstance(value, str) and "://" not in value and not os.path.isabs(value):
            item[audio_field] = str(path.parent / value)
        items.append(item)
    return items


def validate_items(pipe: Pipeline, raw: list[dict]) -> tuple[list[dict], list[ItemError]]:
    """Validate every item against the pipeline's input model; hash referenced files."""
    model = input_model_of(pipe)
    files = file_fields(pipe)
    items, errors, seen = [], [], set()
    for n, raw_item in enumerate(raw):
        item_id = str(raw_item.get("id", n))
        if item_id in seen:
            errors.append(ItemError(item_id=item_id, stage="input", kind="invalid_input",
                                    message=f"duplicate item id {item_id!r}; ids must be unique"))
            continue
        seen.add(item_id)
        if "_invalid" in raw_item:
            errors.append(ItemError(item_id=item_id, stage="input", kind="invalid_input",
                                    message=raw_item["_invalid"]))
            continue
        try:
            model.model_validate(raw_item)
        except ValidationError as exc:
            msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            errors.append(ItemError(item_id=item_id, stage="input", kind="invalid_input", message=msg))
            continue
        item = {**raw_item, "id": item_id}
        # Content digests make the cache key follow the bytes, not the file name.
        item["_digests"] = {f: file_digest(item[f]) for f in files if isinstance(item.get(f), str)}
        items.append(item)
    return items, errors
