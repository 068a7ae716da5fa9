"""Batched whisper decoding across files, beam search included, with n-best.

openai-whisper's `DecodingTask.run` repeats the prompt tokens per beam but not
the audio features, so batch > 1 with beam_size > 1 fails (or mixes audio
across items). `BatchedDecodingTask` reuses every part of whisper's decoder
(logit filters, beam decoder, ranker, KV cache) and only changes the
orchestration: features are repeated per beam, and every finished candidate
is kept for an n-best list.

Sampling (temperature > 0, the fallback) draws from one seeded generator per
row instead of torch's global one, so a chunk decodes the same way whatever
else shares its batch, and a resumed job reproduces the first run exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from whisper.decoding import DecodingOptions, DecodingTask, GreedyDecoder
from whisper.utils import compression_ratio


@dataclass
class WindowResult:
    text: str
    tokens: list[int]
    sum_logprob: float
    avg_logprob: float
    no_speech_prob: float
    language: str
    nbest: list[tuple[str, float]]  # (text, sum of token log-probs), best first
    compression_ratio: float = 0.0  # gzip ratio of the text; whisper's repetition-loop signal
    temperature: float = 0.0


class SeededSampler(GreedyDecoder):
    """Whisper's sampling decoder, with one torch.Generator per row (batch-independent draws)."""

    def __init__(self, temperature: float, eot: int, seeds: list[int]):
        super().__init__(temperature, eot)
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def update(self, tokens, logits, sum_logprobs):
        probs = F.softmax(logits.float() / self.temperature, dim=-1).cpu()
        next_tokens = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        logprobs = F.log_softmax(logits.float(), dim=-1)
        next_tokens = next_tokens.to(logits.device)
        sum_logprobs += logprobs[torch.arange(logprobs.shape[0]), next_tokens] * (tokens[:, -1] != self.eot)
        next_tokens[tokens[:, -1] == self.eot] = self.eot
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=-1)
        return tokens, bool((tokens[:, -1] == self.eot).all())


class BatchedDecodingTask(DecodingTask):
    @torch.no_grad()
    def run_windows(self, mel: torch.Tensor, seeds: list[int] | None = None) -> list[WindowResult]:
        tok = self.tokenizer
        n_audio = mel.shape[0]
        if self.options.temperature > 0:  # one generator per (window, sample) row
            seeds = seeds if seeds is not None else list(range(n_audio))
            self.decoder = SeededSampler(self.options.temperature, tok.eot,
                                         [s * 1009 + k for s in seeds for k in range(self.n_group)])
        self.decoder.reset()
        features = self._get_audio_features(mel)
        tokens = torch.tensor([self.initial_tokens]).repeat(n_audio, 1)
        languages, _ = self._detect_language(features, tokens)  # fills the language token if unset

        group = self.n_group
        tokens = tokens.repeat_interleave(group, dim=0).to(features.device)
        tokens, sum_logprobs, no_speech = self._main_loop(features.repeat_interleave(group, dim=0), tokens)
        no_speech = no_speech[::group]
        tokens = tokens.reshape(n_audio, group, -1)
        sum_logprobs = sum_logprobs.reshape(n_audio, group)
        candidates, cand_logprobs = self.decoder.finalize(tokens, sum_logprobs)

        results = []
        for i in range(n_audio):
            seqs = [c[self.sample_begin:(c == tok.eot).nonzero()[0, 0]].tolist() for c in candidates[i]]
            best = self.sequence_ranker.rank([[torch.tensor(s) for s in seqs]], [cand_logprobs[i]])[0]
            # n-best by whisper's default ranking (length-normalised log-prob), best first
            order = sorted(range(len(seqs)), key=lambda j: cand_logprobs[i][j] / max(len(seqs[j]), 1),
                           reverse=True)
            order.remove(best)
            order.insert(0, best)
            nbest = [(tok.decode(seqs[j]).strip(), float(cand_logprobs[i][j])) for j in order]
            results.append(WindowResult(
                text=nbest[0][0], tokens=seqs[best], sum_logprob=float(cand_logprobs[i][best]),
                avg_logprob=float(cand_logprobs[i][best]) / (len(seqs[best]) + 1),
                no_speech_prob=float(no_speech[i]), language=languages[i], nbest=nbest,
                compression_ratio=compression_ratio(nbest[0][0]) if nbest[0][0] else 0.0,
                temperature=self.options.temperature))
        return results


def decode_windows(model, mel: torch.Tensor, options: DecodingOptions,
                   seeds: list[int] | None = None) -> list[WindowResult]:
    return BatchedDecodingTask(model, options).run_windows(mel, seeds)
