"""Batched whisper decoding across files, beam search included, with n-best.

openai-whisper's `DecodingTask.run` repeats the prompt tokens per beam but not
the audio features, so batch > 1 with beam_size > 1 fails (or mixes audio
across items). `BatchedDecodingTask` reuses every part of whisper's decoder
(logit filters, beam decoder, ranker, KV cache) and only changes the
orchestration: features are repeated per beam, and every finished candidate
is kept for an n-best list.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from whisper.decoding import DecodingOptions, DecodingTask


@dataclass
class WindowResult:
    text: str
    tokens: list[int]
    sum_logprob: float
    avg_logprob: float
    no_speech_prob: float
    language: str
    nbest: list[tuple[str, float]]  # (text, sum of token log-probs), best first


class BatchedDecodingTask(DecodingTask):
    @torch.no_grad()
    def run_windows(self, mel: torch.Tensor) -> list[WindowResult]:
        self.decoder.reset()
        tok = self.tokenizer
        n_audio = mel.shape[0]
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
                no_speech_prob=float(no_speech[i]), language=languages[i], nbest=nbest))
        return results


def decode_windows(model, mel: torch.Tensor, options: DecodingOptions) -> list[WindowResult]:
    return BatchedDecodingTask(model, options).run_windows(mel)
