"""The job folder OUT/JOB_ID: every file name in it, the job id's rules, and its hygiene.

    job.json          the pipeline spec, the micro-batches, the input errors
    manifest.jsonl    the input items, in order
    progress.json     finished batches per stage, while the job runs
    stages/<node>/<key>.jsonl   one stored stage × batch (see flows/store.py)
    outputs.jsonl errors.jsonl summary.json   written when the job ends
    subtitles/ITEM.LANG.srt|vtt, subtitles/ITEM.segments.json   with `--subtitles` (flows/subtitles.py)

No other module spells these names. Writes go through flows.store.RunStore,
atomically via `<file>.tmp-<host>-<pid>-<n>` files that this class cleans up.
"""
from __future__ import annotations

import errno
import hashlib
import itertools
import os
import re
import shutil
import socket
import time
from pathlib import Path

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_MIN_FREE_BYTES = 1 << 20  # less than this before the start: refuse instead of dying halfway
_STALE_SECONDS = 3600  # temp files of another machine: older than this, their writer is gone
_HOST = socket.gethostname()
_temp_counter = itertools.count()  # temp names need only be unique; uuid4 reads os.urandom, slow on some VMs


class JobFolderError(ValueError):
    """The job folder cannot be used: a bad job id, an unwritable --out, a full disk. A usage error."""


class NoSpaceLeft(RuntimeError):
    """The disk filled up while the job ran. Finished batches are kept: free space and rerun to resume."""


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE


class JobFolder:
    JOB = "job.json"
    MANIFEST = "manifest.jsonl"
    PROGRESS = "progress.json"
    SUMMARY = "summary.json"
    OUTPUTS = "outputs.jsonl"
    ERRORS = "errors.jsonl"
    STAGES = "stages"
    SUBTITLES = "subtitles"
    TEMP_MARK = ".tmp-"

    def __init__(self, root: str):
        """An existing (or to-be) job folder at `root`: a local path or an fsspec URI."""
        self.root = str(root)
        self.local = "://" not in self.root

    @classmethod
    def for_job(cls, out: str, job_id: str) -> "JobFolder":
        """OUT/JOB_ID, after checking that the job id is a plain name that stays inside OUT."""
        check_job_id(job_id)
        out = str(out)
        if "://" in out:
            return cls(f"{out.rstrip('/')}/{job_id}")
        base = Path(os.path.expanduser(out)).resolve()
        root = (base / job_id).resolve()
        if root.parent != base:  # a symlink named like the job that points elsewhere
            raise JobFolderError(f"job folder {base / job_id} resolves to {root}, outside --out {base}")
        return cls(str(root))

    @staticmethod
    def batch_file(node: str, key: str) -> str:
        return f"{JobFolder.STAGES}/{node}/{key}.jsonl"

    @staticmethod
    def subtitle_file(item_id: str, language: str, fmt: str) -> str:
        """subtitles/ITEM.LANG.FMT (FMT: srt, vtt)."""
        return f"{JobFolder.SUBTITLES}/{_file_stem(item_id)}.{_file_stem(language)}.{fmt}"

    @staticmethod
    def segments_file(item_id: str) -> str:
        return f"{JobFolder.SUBTITLES}/{_file_stem(item_id)}.segments.json"

    @staticmethod
    def temp_name(path: str) -> str:
        """A sibling name for an atomic write, unique per host, process and write."""
        return f"{path}{JobFolder.TEMP_MARK}{_HOST}-{os.getpid()}-{next(_temp_counter)}"

    def path(self, rel: str = "") -> str:
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def is_job(self) -> bool:
        if self.local:
            return os.path.isfile(self.path(self.JOB))
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.path(self.JOB))
        return fs.exists(path)

    # -- before the start -----------------------------------------------
    def prepare(self, inputs: list = ()) -> None:
        """Make the folder and check it can take the job; raise JobFolderError (one line) if not.

        Checked: the folder holds none of the inputs (a job writes manifest.jsonl and
        summary.json there, which would overwrite the user's own), it can be created and
        written, and its disk is not full. Temp files of dead writers are removed.
        """
        if not self.local:
            return
        root = Path(self.root)
        for entry in inputs:
            if isinstance(entry, (str, os.PathLike)) and "://" not in str(entry):
                given = Path(os.path.expanduser(str(entry))).resolve()
                if given == root or root in given.parents:
                    raise JobFolderError(f"the job folder {root} holds the input {entry}; a job must not write "
                                         "into its inputs: choose another --out or --job-id")
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / f".write-probe{self.TEMP_MARK}{_HOST}-{os.getpid()}-{next(_temp_counter)}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise JobFolderError(f"cannot write the job folder {root}: {exc.strerror or exc}") from None
        free = self.free_bytes()
        if free is not None and free < _MIN_FREE_BYTES:
            raise JobFolderError(f"the disk of {root} is full ({free // 1024} KiB free): free some space first")
        self.remove_temp_files()

    def free_bytes(self, near: str | None = None) -> int | None:
        try:
            return shutil.disk_usage(near or self.root).free
        except OSError:
            return None

    def no_space_message(self, exc: OSError, job_id: str) -> str:
        where = exc.filename or self.root
        folder = os.path.dirname(where) if not os.path.isdir(where) else where
        free = self.free_bytes(folder if os.path.isdir(folder) else None)
        left = f" ({free / 1e6:.1f} MB free now)" if free is not None else ""
        return (f"no space left on the device writing {where}{left}: free space on that disk, then rerun "
                f"with --job-id {job_id} to resume (finished batches are kept)")

    # -- hygiene ----------------------------------------------------------
    def remove_temp_files(self, include_own: bool = False) -> int:
        """Delete leftover temp files of this job whose writer is gone; returns how many.

        A writer is gone when its process on this host is dead (or is this process and
        `include_own`, after our own failed run), or, for another host, after an hour:
        a second process on the same job may be writing right now.
        """
        if not self.local or not os.path.isdir(self.root):
            return 0
        removed = 0
        for folder, _, names in os.walk(self.root):
            for name in names:
                if self.TEMP_MARK not in name:
                    continue
                path = os.path.join(folder, name)
                if self._writer_gone(name.rsplit(self.TEMP_MARK, 1)[1], path, include_own):
                    try:
                        os.remove(path)
                        removed += 1
                    except FileNotFoundError:  # its writer renamed or removed it just now
                        pass
        return removed

    @staticmethod
    def _writer_gone(tag: str, path: str, include_own: bool) -> bool:
        host, _, pid_text = tag.rpartition("-")[0].rpartition("-")  # "<host>-<pid>-<n>"; hosts may hold '-'
        if host != _HOST:
            try:
                return time.time() - os.path.getmtime(path) > _STALE_SECONDS
            except OSError:
                return False
        if not pid_text.isdigit():
            return False
        pid = int(pid_text)
        if pid == os.getpid():
            return include_own
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False


def _file_stem(name: str) -> str:
    """An item id as a plain file name; ids that needed changes get a digest, so two never collide."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".-") or "_"
    return safe if safe == name else f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def check_job_id(job_id: str) -> str:
    """A job id is a plain folder name: letters, digits, '.', '_', '-', not starting with '.' or '-'."""
    if not isinstance(job_id, str) or not _PLAIN_NAME.fullmatch(job_id) or len(job_id) > 200:
        raise JobFolderError(f"job id {job_id!r}: use a plain name of letters, digits, '.', '_' and '-' that "
                             "starts with a letter or digit (no '.', '..', hidden names or folders)")
    return job_id
