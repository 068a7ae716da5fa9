"""Temperature fallback for batched whisper decoding, with whisper's own thresholds.

As in `whisper.transcribe`: a window whose text compresses too well (a
repetition loop, gzip ratio > 2.4) or whose mean token log-prob is too low
(< -1.0) is decoded again at the next temperature, unless the model itself
calls the window silent (no-speech prob > 0.6 with that low log-prob). Here
only the failed windows go round again, still in batches, so a long file
whose every window is fine costs one greedy pass.

When every temperature fails, the attempt that passed the compression check
with the best log-prob is kept (faster-whisper's choice); a window that loops
at every temperature is kept too, flagged, and the caller decides.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from whisper.decoding import DecodingOptions

from stages.methods.whisper_batch import WindowResult, decode_windows


@dataclass(frozen=True)
class FallbackRules:
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    best_of: int | None = None  # samples per window at temperature > 0 (None = one)

    def silent(self, r: WindowResult) -> bool:
        """Whisper's no-speech gate: the model says silence and is not confident of any words."""
        return (self.no_speech_threshold is not None and r.no_speech_prob > self.no_speech_threshold
                and self.logprob_threshold is not None and r.avg_logprob < self.logprob_threshold)

    def loops(self, r: WindowResult) -> bool:
        return self.compression_ratio_threshold is not None and r.compression_ratio > self.compression_ratio_threshold

    def failed(self, r: WindowResult) -> bool:
        if self.silent(r):
            return False  # silence is a verdict, not a failure: no point sampling it
        low = self.logprob_threshold is not None and r.avg_logprob < self.logprob_threshold
        return self.loops(r) or low


def decode_with_fallback(model, mel_of: Callable[[list[int]], torch.Tensor], n_windows: int,
                         options: DecodingOptions, rules: FallbackRules = FallbackRules(),
                         batch_size: int = 16, seeds: list[int] | None = None,
                         decode: Callable = decode_windows) -> list[WindowResult]:
    """Best result per window. `mel_of(indices)` builds the mel batch of those windows on demand,
    so a long file never holds all its mels at once; `seeds[i]` seeds window i's sampling."""
    attempts: list[list[WindowResult]] = [[] for _ in range(n_windows)]
    pending = list(range(n_windows))
    for temperature in rules.temperatures:
        if not pending:
            break
        opts = options if temperature == 0 else dataclasses.replace(
            options, temperature=temperature, beam_size=None, patience=None, best_of=rules.best_of)  # whisper samples without beams
        for b in range(0, len(pending), batch_size):
            ids = pending[b:b + batch_size]
            results = decode(model, mel_of(ids), opts, [seeds[i] for i in ids] if seeds else ids)
            for i, r in zip(ids, results):
                attempts[i].append(r)
        pending = [i for i in pending if rules.failed(attempts[i][-1])]
    return [_pick(tries, rules) for tries in attempts]


def _pick(tries: list[WindowResult], rules: FallbackRules) -> WindowResult:
    if not rules.failed(tries[-1]):
        return tries[-1]
    readable = [r for r in tries if not rules.loops(r)]
    return max(readable or tries, key=lambda r: r.avg_logprob)
