"""Long-form ASR with the real tiny.en on CPU: two reference systems and our cascade, side by side.

(a) openai-whisper `model.transcribe`, one file at a time, greedy with its
    default temperature fallback, on the checkpoint converted from CTranslate2;
(b) faster-whisper `BatchedInferencePipeline`, int8, batch 8, greedy, on the
    original CTranslate2 folder (its default silero VAD cuts the audio);
(c) our cascade: the `transcribe` pipeline through `flows.run` (model load excluded).

Printed: WER (jiwer over the whole files, whisper's EnglishTextNormalizer on
both sides), seconds (wall and CPU), segment boundaries (median |dt| to (a)'s and to the
reference sentence times, over boundaries matched within 1 s, with how many match
in each direction), then one JSON line.

    python -m benchmarks.bench_longform                     # 12 files, ~44 min of audio
    python -m benchmarks.bench_longform --files 3 --max-minutes 1   # a quick run
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np

from benchmarks.common import print_json_line, print_table
from demo.make_longform_audio import LongformFile, build_longform, excerpt

MATCH_WITHIN = 1.0  # seconds: a boundary further than this from any other is unmatched


@dataclasses.dataclass
class SystemRun:
    name: str
    seconds: float  # wall time over all files, model load excluded
    cpu_seconds: float  # CPU time of the process over the same span: steadier than wall time on a busy machine
    texts: list[str]  # one hypothesis per file
    segments: list[list[tuple[float, float, str]]]  # per file: (start, end, text)


def run_transcribe(audios: list[np.ndarray], threads: int) -> SystemRun:
    """(a) openai-whisper's own long-form loop, per file."""
    import torch
    import whisper

    from scripts.convert_ct2_whisper import converted_tiny_en

    torch.set_num_threads(threads)
    model = whisper.load_model(str(converted_tiny_en()), device="cpu")
    texts, segments = [], []
    start, cpu = time.perf_counter(), time.process_time()
    for audio in audios:
        result = model.transcribe(audio, language="en", fp16=False, verbose=None)
        texts.append(result["text"])
        segments.append([(s["start"], s["end"], s["text"]) for s in result["segments"]])
    return SystemRun("(a) whisper transcribe", time.perf_counter() - start, time.process_time() - cpu, texts,
                     segments)


def run_faster_whisper(audios: list[np.ndarray], threads: int, batch_size: int) -> SystemRun:
    """(b) faster-whisper's batched pipeline, int8."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from scripts.convert_ct2_whisper import bundled_tiny_en

    model = WhisperModel(str(bundled_tiny_en()), device="cpu", compute_type="int8", cpu_threads=threads)
    pipeline = BatchedInferencePipeline(model)
    texts, segments = [], []
    start, cpu = time.perf_counter(), time.process_time()
    for audio in audios:
        found, _ = pipeline.transcribe(audio, language="en", batch_size=batch_size, beam_size=1)
        found = [(s.start, s.end, s.text) for s in found]  # a generator: decoding happens here
        texts.append("".join(t for _, _, t in found))
        segments.append(found)
    return SystemRun(f"(b) faster-whisper batched int8 x{batch_size}", time.perf_counter() - start,
                     time.process_time() - cpu, texts, segments)


def run_cascade(audios: list[np.ndarray], threads: int) -> SystemRun | None:
    """(c) our cascade: the `transcribe` pipeline (stages/asr.py, VAD-packed chunks batched across files)
    through `flows.run`, as a user runs it. A one-second warm-up job first loads the model and starts
    Prefect's temporary server, so the timed job, like (a) and (b), excludes the model load."""
    import tempfile
    from pathlib import Path

    import soundfile as sf
    import torch

    from flows.run_job import run
    from pipelines.speech_translation import transcribe
    from scripts.convert_ct2_whisper import converted_tiny_en

    torch.set_num_threads(threads)
    pipe = transcribe(model=str(converted_tiny_en()), language="en", device="cpu")
    with tempfile.TemporaryDirectory(prefix="bench-longform-") as tmp:
        folder = Path(tmp)
        sf.write(folder / "warmup.wav", audios[0][:16_000], 16_000)
        run(pipe, [str(folder / "warmup.wav")], out=str(folder / "runs"), job_id="warmup")
        paths = []
        for k, audio in enumerate(audios):
            paths.append(folder / f"file{k:03d}.wav")
            sf.write(paths[-1], audio, 16_000)
        start, cpu = time.perf_counter(), time.process_time()
        result = run(pipe, [str(p) for p in paths], out=str(folder / "runs"), job_id="bench",
                     batch_size=len(paths))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        by_id = {row["id"]: row["asr"] for row in result.outputs}
        rows = [by_id.get(p.stem, {"text": "", "segments": []}) for p in paths]  # a failed file counts as empty
    return SystemRun("(c) cascade transcribe", seconds, cpu_seconds, [r["text"] for r in rows],
                     [[(s["start"], s["end"], s["text"]) for s in r["segments"]] for r in rows])


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    import jiwer
    from whisper.normalizers import EnglishTextNormalizer

    normalise = EnglishTextNormalizer()
    pairs = [(normalise(r), normalise(h)) for r, h in zip(refs, hyps)]
    return jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def boundaries(segments: list[tuple[float, float, str]]) -> np.ndarray:
    return np.array(sorted({round(t, 2) for s, e, _ in segments for t in (s, e)}))


def boundary_offset(ours: list[np.ndarray], theirs: list[np.ndarray]) -> tuple[float | None, float, float]:
    """Median |dt| from each of `ours` to the nearest of `theirs` (pairs within MATCH_WITHIN only), the
    fraction of `ours` so matched, and the fraction of `theirs` that has one of `ours` within MATCH_WITHIN."""
    deltas, n_ours, covered, n_theirs = [], 0, 0, 0
    for mine, other in zip(ours, theirs):
        n_ours, n_theirs = n_ours + len(mine), n_theirs + len(other)
        if len(mine) and len(other):
            d = np.abs(mine[:, None] - other[None, :])
            nearest = d.min(axis=1)
            deltas += nearest[nearest <= MATCH_WITHIN].tolist()
            covered += int((d.min(axis=0) <= MATCH_WITHIN).sum())
    median = statistics.median(deltas) if deltas else None
    return median, len(deltas) / max(n_ours, 1), covered / max(n_theirs, 1)


def reference_boundaries(f: LongformFile) -> np.ndarray:
    return np.array(sorted({t for s in f.sentences for t in (s.start, s.end)}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=12, help="use the first N long-form files")
    parser.add_argument("--max-minutes", type=float, help="cut each file after the last sentence within M minutes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--show-segments", type=int, default=3, help="print the first K segments of file 1")
    args = parser.parse_args(argv)

    files = build_longform(n_files=max(12, args.files), seed=args.seed)[: args.files]
    cut = [excerpt(f, args.max_minutes * 60 if args.max_minutes else None) for f in files]
    audios, refs = [a for a, _ in cut], [f for _, f in cut]
    audio_seconds = sum(f.seconds for f in refs)
    print(f"{len(refs)} files, {audio_seconds / 60:.1f} min of audio, {args.threads} threads")

    runs = [run_transcribe(audios, args.threads), run_faster_whisper(audios, args.threads, args.batch_size)]
    ours = run_cascade(audios, args.threads)
    if ours is not None:
        runs.append(ours)

    truth = [reference_boundaries(f) for f in refs]
    base = [boundaries(s) for s in runs[0].segments]
    rows, wer = [], {}
    for run in runs:
        mine = [boundaries(s) for s in run.segments]
        wer[run.name] = word_error_rate([f.text for f in refs], run.texts)
        to_a = "-" if run is runs[0] else _fmt(*boundary_offset(mine, base))
        rows.append([run.name, 100 * wer[run.name], run.seconds, run.cpu_seconds, audio_seconds / run.seconds,
                     sum(len(s) for s in run.segments), to_a, _fmt(*boundary_offset(mine, truth))])
    print_table("long-form ASR, real tiny.en on CPU",
                ["system", "WER %", "seconds", "CPU s", "x real time", "segments",
                 "|dt| to (a) s (ours matched / (a) covered)",
                 "|dt| to ref sentence bounds s (ours matched / ref covered)"], rows)
    for run in runs:
        head = run.segments[0][: args.show_segments] if run.segments else []
        print(run.name, "first segments of", refs[0].id, ":",
              "; ".join(f"[{s:.2f}-{e:.2f}]{t[:40]}" for s, e, t in head))

    a, b = runs[0], runs[1]
    c_offset = boundary_offset([boundaries(s) for s in ours.segments], base)[0] if ours else None
    print_json_line({
        "files": len(refs), "audio_minutes": round(audio_seconds / 60, 2),
        "wer_transcribe": round(100 * wer[a.name], 2), "wer_faster_whisper": round(100 * wer[b.name], 2),
        "seconds_transcribe": round(a.seconds, 2), "seconds_faster_whisper": round(b.seconds, 2),
        "cpu_seconds_transcribe": round(a.cpu_seconds, 2), "cpu_seconds_faster_whisper": round(b.cpu_seconds, 2),
        "wer_cascade": round(100 * wer[ours.name], 2) if ours else None,
        "seconds_cascade": round(ours.seconds, 2) if ours else None,
        "longform_wer_delta": round(100 * (wer[ours.name] - wer[a.name]), 2) if ours else None,
        "speedup_vs_transcribe": round(a.seconds / ours.seconds, 2) if ours else None,
        "speed_vs_faster_whisper": round(b.seconds / ours.seconds, 2) if ours else None,
        "median_boundary_offset_vs_transcribe": round(c_offset, 3) if c_offset is not None else None,
    })


def _fmt(offset: float | None, matched: float, covered: float) -> str:
    return "-" if offset is None else f"{offset:.2f} ({100 * matched:.0f}% / {100 * covered:.0f}%)"


if __name__ == "__main__":
    main()
