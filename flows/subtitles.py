"""Subtitles of a finished job: SRT and WebVTT per audio item and language, and the segment JSON.

For every output row, each node whose output carries timestamped `segments` (a Transcript: the
source language; a Translation: the target language) gives one subtitle file per format, cue per
segment; `ITEM.segments.json` holds every such node's segments. File names: JobFolder.
"""
from __future__ import annotations

import datetime
import json

from flows.job_folder import JobFolder

FORMATS = ("srt", "vtt")


class SubtitleFormatError(ValueError):
    """An unknown subtitle format was asked for. A usage error."""


def parse_formats(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """'srt,vtt' or ['srt'] -> the formats, checked; None or '' -> none."""
    if not spec:
        return []
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    formats = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise SubtitleFormatError(f"unknown subtitle format {unknown[0]!r}: use {', '.join(FORMATS)} "
                                  "(comma-separated, e.g. --subtitles srt,vtt)")
    return formats


def write_subtitles(store, rows: list[dict], order: list[str], languages: dict[str, str | None],
                    formats: list[str]) -> dict[str, list[str]]:
    """Write the files of every row with segments; item id -> the written paths (relative to the job folder).

    `languages[node]` is the node's configured language, used when its output names none.
    """
    written: dict[str, list[str]] = {}
    for row in rows:
        timed = {n: row[n] for n in order if isinstance(row.get(n), dict) and row[n].get("segments") is not None}
        if not timed or not formats:
            continue
        paths = []
        for node, output in timed.items():
            language = output.get("language") or languages.get(node) or node
            cues = [s for s in output["segments"] if s.get("text", "").strip()]
            for fmt in formats:
                rel = JobFolder.subtitle_file(row["id"], language, fmt)
                store.write_bytes(rel, (to_srt(cues) if fmt == "srt" else to_vtt(cues)).encode("utf-8"))
                paths.append(rel)
        rel = JobFolder.segments_file(row["id"])
        body = {"id": row["id"], **{n: {"language": o.get("language") or languages.get(n),
                                        "segments": o["segments"]} for n, o in timed.items()}}
        store.write_bytes(rel, json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8"))
        written[row["id"]] = paths + [rel]
    return written


def _monotonic(cues: list[dict]) -> list[tuple[float, float, str]]:
    """(start, end, text) with start ≥ the previous end and end > start: players reject overlaps."""
    out, last = [], 0.0
    for c in cues:
        start = max(float(c["start"]), last)
        end = max(float(c["end"]), start + 0.001)
        out.append((start, end, " ".join(c["text"].split())))
        last = end
    return out


def to_srt(cues: list[dict]) -> str:
    import srt

    return srt.compose([srt.Subtitle(index=i + 1, start=datetime.timedelta(seconds=s),
                                     end=datetime.timedelta(seconds=e), content=t)
                        for i, (s, e, t) in enumerate(_monotonic(cues))], reindex=False)


def to_vtt(cues: list[dict]) -> str:
    blocks = ["WEBVTT"]
    for i, (s, e, t) in enumerate(_monotonic(cues)):
        text = t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")  # WebVTT's escapes; no "-->" left
        blocks.append(f"{i + 1}\n{_vtt_time(s)} --> {_vtt_time(e)}\n{text}")
    return "\n\n".join(blocks) + "\n"


def _vtt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"
