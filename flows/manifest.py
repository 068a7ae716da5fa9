"""Turn what the user points at (files, folders, JSONL, dicts) into input items.

An item is a dict with an `id` and the fields the pipeline's root stages read;
extra fields (references such as `ref_de`) ride along for metrics. Items that
do not validate become per-item errors here, before any model loads.

Ids that come from paths are relative to the common folder of all the files
named (`spk1/a`, `spk2/a`), so files of the same name in two folders stay two
items; only explicit duplicate ids are an error. Bytes are read and hashed by
flows/input_files.py: regular files only, so a FIFO or a device is an item
error, not a hang.
"""
from __future__ import annotations

import json
import logging
import os
import typing
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipelines.graph import Pipeline, input_model_of
from stages.base import ItemError
from stages.payloads import FileRef
from flows.input_files import InputFileError, file_digest, read_text_file
from flows.job_folder import JobFolder

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".opus", ".webm", ".mp4", ".aiff", ".aif"}
TEXT_EXTS = {".txt"}

log = logging.getLogger(__name__)


class InputError(ValueError):
    """The inputs cannot be read at all (missing path, unknown format). A usage error, exit 2."""


def file_fields(pipe: Pipeline) -> list[str]:
    """Input fields that hold paths to files (marked FilePath in the payload types)."""
    return [name for name, info in pipe.input_fields().items()
            if any(isinstance(m, FileRef) for m in info.metadata)
            or any(isinstance(m, FileRef) for m in typing.get_args(info.annotation)[1:])]


def read_inputs(pipe: Pipeline, inputs: list[Any], allow_outside_paths: bool = False) -> list[dict]:
    """Expand paths and dicts into raw item dicts (not validated yet).

    File paths inside a .jsonl must lie under that file's folder unless `allow_outside_paths`.
    """
    fields = file_fields(pipe)
    sources: list[dict | Path] = []
    for entry in inputs:
        if isinstance(entry, dict):
            sources.append(dict(entry))
            continue
        path = Path(os.path.expanduser(str(entry)))
        if not path.exists():
            raise InputError(f"input not found: {entry}")
        if path.is_dir():
            sources += _folder_inputs(path, entry)
        else:
            sources.append(path)
    names = path_ids([s for s in sources if isinstance(s, Path)])
    items: list[dict] = []
    for source in sources:
        if isinstance(source, dict):
            items.append(source)
        else:
            items += _read_file(source, names[source], fields, allow_outside_paths)
    return items


def _folder_inputs(folder: Path, entry: Any) -> list[Path]:
    manifest = folder / JobFolder.MANIFEST  # an input folder may hold a manifest, as a job folder does
    if manifest.exists():
        return [manifest]
    readable, skipped = [], Counter()
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if not p.is_file():
            skipped["folder" if p.is_dir() else "not a regular file"] += 1
        elif p.suffix.lower() in AUDIO_EXTS | TEXT_EXTS | {".jsonl"}:
            readable.append(p)
        else:
            skipped[p.suffix.lower() or "no extension"] += 1
    if not readable:
        raise InputError(f"{entry}: no audio, .txt or .jsonl files in this folder")
    if skipped:  # said at the start, so a missing clip is not a surprise at the end
        log.warning("%s: skipped %d entries that are not inputs (%s)", entry, sum(skipped.values()),
                    ", ".join(f"{n} {kind}" for kind, n in sorted(skipped.items())))
    return readable


def path_ids(paths: list[Path]) -> dict[Path, str]:
    """Item-id stems for files: the path relative to the files' common folder, without the suffix.

    The suffix stays where dropping it would merge two files (a.wav and a.flac). One folder's
    files keep their bare names, as they always had.
    """
    if not paths:
        return {}
    absolute = {p: os.path.abspath(p) for p in paths}
    root = os.path.commonpath([os.path.dirname(a) for a in absolute.values()])
    rel = {p: Path(os.path.relpath(a, root)).as_posix() for p, a in absolute.items()}
    bare = {p: r[: len(r) - len(p.suffix)] if p.suffix else r for p, r in rel.items()}
    owners: dict[str, set[str]] = {}
    for p in paths:
        owners.setdefault(bare[p], set()).add(absolute[p])
    return {p: bare[p] if len(owners[bare[p]]) == 1 else rel[p] for p in paths}


def _read_file(path: Path, name: str, fields: list[str], allow_outside_paths: bool) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or suffix in TEXT_EXTS:
        try:
            data = read_text_file(path)
        except InputFileError as exc:
            return [{"id": name, "_invalid": str(exc)}]
        if suffix == ".jsonl":
            return _read_jsonl(path, data, name, fields, allow_outside_paths)
        items = []
        for n, line in _lines(data, path):
            if isinstance(line, _Bad):
                items.append({"id": f"{name}:{n}", "_invalid": line.why})
            elif line.strip():
                items.append({"id": f"{name}:{n}", "text": line})
        return items
    if not fields:
        raise InputError(f"{path}: this pipeline reads no audio (its input fields have no file path)")
    return [{"id": name, fields[0]: str(path)}]


class _Bad(typing.NamedTuple):
    why: str


def _lines(data: bytes, path: Path):
    """(line number, text) per line; a line that is not clean UTF-8 text fails alone."""
    for i, raw in enumerate(data.splitlines()):
        if b"\x00" in raw:  # UTF-16 without a byte-order mark, or a binary file named .txt
            yield i + 1, _Bad(f"line {i + 1} of {path} holds NUL bytes (UTF-16 without a byte-order mark? "
                              "save it as UTF-8)")
            continue
        try:  # not replacement characters: a badly encoded line would be translated as garbage
            yield i + 1, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield i + 1, _Bad(f"line {i + 1} of {path} is not UTF-8: {exc}")


def _read_jsonl(path: Path, data: bytes, name: str, fields: list[str], allow_outside_paths: bool) -> list[dict]:
    items = []
    folder = os.path.realpath(path.parent)
    for n, line in _lines(data, path):
        line_id = f"{name}:{n}"
        if isinstance(line, _Bad):
            items.append({"id": line_id, "_invalid": line.why})
            continue
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            item = {"id": line_id, "_invalid": f"line {n} of {path} is not JSON: {exc}"}
        except RecursionError:
            item = {"id": line_id, "_invalid": f"line {n} of {path} is nested too deeply to read"}
        if not isinstance(item, dict):
            item = {"id": line_id, "_invalid": f"line {n} of {path} is not an object"}
        if "id" not in item:
            item["id"] = line_id
        elif (problem := id_problem(item["id"])) is not None:
            item = {"id": line_id, "_invalid": f"line {n} of {path}: {problem}"}
        for field in fields:  # relative paths are relative to the manifest's folder
            value = item.get(field)
            if not isinstance(value, str) or ("://" in value and not value.startswith("file://")):
                continue
            local = value.removeprefix("file://")
            full = local if os.path.isabs(local) else str(path.parent / local)
            if not allow_outside_paths and not _inside(os.path.realpath(full), folder):
                item = {"id": item["id"], "_invalid": f"{field}: {value} is outside the folder of {path}; "
                        "pass --allow-outside-paths to read files elsewhere"}
                break
            item[field] = full
        items.append(item)
    return items


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def id_problem(value: Any) -> str | None:
    """Why `value` cannot be an item id, or None. Ids are non-empty strings or integers."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"id must be a non-empty string or an integer, got {json.dumps(value)[:40]}"
    if isinstance(value, str) and not value.strip():
        return "id must be a non-empty string or an integer, got an empty string"
    return None


def validate_items(pipe: Pipeline, raw: list[dict]) -> tuple[list[dict], list[ItemError]]:
    """Validate every item against the pipeline's input model; hash referenced files."""
    model = input_model_of(pipe)
    files = file_fields(pipe)
    items, errors, seen = [], [], set()
    for n, raw_item in enumerate(raw):
        item_id = str(raw_item.get("id", n))
        problem = id_problem(raw_item["id"]) if "id" in raw_item else None
        if problem:
            item_id = f"#{n + 1}"  # the item's place in the inputs: the only name it has
        if item_id in seen:
            errors.append(_input_error(item_id, f"duplicate item id {item_id!r}; ids must be unique"))
            continue
        seen.add(item_id)
        if problem or "_invalid" in raw_item:
            errors.append(_input_error(item_id, problem or raw_item["_invalid"]))
            continue
        try:
            model.model_validate(raw_item)
        except ValidationError as exc:
            errors.append(_input_error(item_id, describe_validation(exc)))
            continue
        item = {**raw_item, "id": item_id}
        # Content digests make the cache key follow the bytes, not the file name.
        try:
            item["_digests"] = {f: file_digest(item[f]) for f in files if isinstance(item.get(f), str)}
        except InputFileError as exc:
            errors.append(_input_error(item_id, str(exc)))
            continue
        items.append(item)
    return items, errors


def _input_error(item_id: str, message: str) -> ItemError:
    return ItemError(item_id=item_id, stage="input", kind="invalid_input", message=message)


def describe_validation(exc: ValidationError) -> str:
    """A pydantic error on one line: `field: problem; field: problem`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
