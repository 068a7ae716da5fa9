"""Read the bytes of input files safely: regular files only, under a size cap, text by its BOM.

Opening a FIFO blocks for ever and /dev/zero never ends, so the file type is
checked before any read; anything that is not a readable regular file under
the cap is an InputFileError, which becomes one item's error.
"""
from __future__ import annotations

import codecs
import hashlib
import os
import stat
from pathlib import Path

import fsspec

MAX_INPUT_BYTES = int(os.environ.get("CASCADE_MAX_INPUT_BYTES", 8 << 30))  # per file read or hashed

# Longest first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")]


class InputFileError(ValueError):
    """One input file cannot be read or hashed (not a regular file, too big, unreadable): one item error."""


def read_text_file(path: Path) -> bytes:
    """The bytes of a .txt or .jsonl input, as UTF-8 (a BOM names another encoding)."""
    try:
        _check_regular(str(path), os.stat(path) if os.path.lexists(path) else None)
        with open(path, "rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    _check_size(str(path), len(data))
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            if encoding == "utf-8":
                return data[len(bom):]
            try:
                return data[len(bom):].decode(encoding).encode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputFileError(f"{path} starts with a {encoding} byte-order mark but is not {encoding}: "
                                     f"{exc.reason} at byte {exc.start}") from None
    return data


def file_digest(path: str) -> str:
    """sha256 of a regular file's bytes (local path or fsspec URI); InputFileError if it cannot be."""
    try:
        fs, target = fsspec.core.url_to_fs(path)
        if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            _check_regular(path, os.stat(target) if os.path.lexists(target) else None)
        else:
            info = fs.info(target)
            if info.get("type") != "file":
                raise InputFileError(f"{path} is not a file (a {info.get('type', 'folder')})")
        h = hashlib.sha256()
        size = 0
        with fs.open(target, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                size += len(chunk)
                _check_size(path, size)  # a file that grows while it is read stops here too
                h.update(chunk)
        return h.hexdigest()
    except FileNotFoundError:
        raise InputFileError(f"file not found: {path}") from None
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def _check_regular(path: str, st: os.stat_result | None) -> None:
    if st is None:
        raise InputFileError(f"file not found: {path}")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket")
        raise InputFileError(f"{path} is not a regular file ({kind}); only regular files are read")
    _check_size(path, st.st_size)


def _check_size(path: str, size: int) -> None:
    if size > MAX_INPUT_BYTES:
        raise InputFileError(f"{path} is over the input size cap of {MAX_INPUT_BYTES} bytes "
                             "(raise CASCADE_MAX_INPUT_BYTES to read it)")
