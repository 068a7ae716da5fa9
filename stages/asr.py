"""Speech recognition with openai-whisper: batched across files, long audio, n-best."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from stages.runtime.audio_decoding import SAMPLE_RATE, load_audio, split_windows
from stages.base import ItemFailure, Stage, StageConfig
from stages.runtime.model_cache import load_cached, path_identity, pick_device
from stages.payloads import AudioClip, Hypothesis, Transcript


class WhisperASRConfig(StageConfig):
    model: str = Field("tiny", description="whisper model name (downloads when online) or checkpoint path")
    language: str | None = Field(None, description="spoken language; None = detect (English-only models: en)")
    task: Literal["transcribe", "translate"] = "transcribe"
    beam_size: int | None = Field(None, ge=1, description="None = greedy")
    patience: float | None = None
    length_penalty: float | None = None
    nbest: int = Field(0, ge=0, description="keep this many hypotheses (≤ beam size) per item")
    fp16: bool | None = Field(None, description="None = fp16 on GPU, fp32 on CPU")
    decode_batch: int = Field(16, ge=1, description="audio windows decoded together")
    max_seconds: float = Field(4 * 3600, gt=0, description="longer files are refused per item, by their header's "
                               "duration before decoding (CLI: -p max_seconds=N)")
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    download_root: str | None = None

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

        if value is None or value in LANGUAGES:
            return value
        if value.lower() in TO_LANGUAGE_CODE:
            return TO_LANGUAGE_CODE[value.lower()]
        raise ValueError(f"unknown language {value!r}; use a whisper code such as en, de, fr")


class WhisperASR(Stage):
    """Audio file -> transcript (openai-whisper)."""

    Input = AudioClip
    Output = Transcript
    Config = WhisperASRConfig
    kind = "asr"
    uses_gpu = True

    def model_identity(self) -> str:
        return path_identity(self.config.model)

    def load(self):
        import whisper

        device = pick_device(self.config.device)
        return load_cached("whisper", self.config.model, device, torch.float32, lambda: whisper.load_model(
            self.config.model, device=device, download_root=self.config.download_root))

    def options(self, model):
        from whisper import DecodingOptions

        cfg = self.config
        language = cfg.language if model.is_multilingual else "en"
        beam = cfg.beam_size if cfg.beam_size and cfg.beam_size > 1 else None
        if cfg.nbest > 1 and not beam:
            raise ValueError("nbest > 1 needs beam_size ≥ nbest")
        fp16 = cfg.fp16 if cfg.fp16 is not None else model.device.type == "cuda"
        return DecodingOptions(task=cfg.task, language=language, beam_size=beam, patience=cfg.patience,
                               length_penalty=cfg.length_penalty, without_timestamps=True, fp16=fp16)

    def process(self, batch: list[AudioClip]) -> list:
        from whisper.audio import HOP_LENGTH

        model = self.load()
        n_frames = 2 * model.dims.n_audio_ctx
        window = n_frames * HOP_LENGTH
        results: list = [None] * len(batch)
        windows: list[tuple[int, np.ndarray]] = []  # (item index, samples)
        for i, clip in enumerate(batch):
            try:
                samples = load_audio(clip.audio, self.config.max_seconds)
            except ItemFailure as failure:
                results[i] = failure
                continue
            windows += [(i, piece) for piece in split_windows(samples, window)]

        decoded = self.decode([w for _, w in windows], model, n_frames)
        per_item: dict[int, list] = {}
        for (i, piece), res in zip(windows, decoded):
            per_item.setdefault(i, []).append((piece, res))
        for i, parts in per_item.items():
            results[i] = self.stitch(parts, batch[i])
        return results

    def decode(self, pieces: list[np.ndarray], model, n_frames: int):
        import whisper

        from stages.methods.whisper_batch import decode_windows

        options = self.options(model)
        dtype = torch.float16 if options.fp16 else torch.float32
        out = []
        step = self.config.decode_batch
        for b in range(0, len(pieces), step):
            mels = torch.stack([window_mel(p, model.dims.n_mels, n_frames) for p in pieces[b:b + step]])
            out += decode_windows(model, mels.to(model.device, dtype), options)
        return out

    def stitch(self, parts, clip: AudioClip) -> Transcript:
        """Join the windows of one file; windows whisper judges silent contribute no text."""
        cfg = self.config
        kept = [r for _, r in parts if not (r.no_speech_prob > cfg.no_speech_threshold
                                            and r.avg_logprob < cfg.logprob_threshold)]
        n_tokens = sum(len(r.tokens) + 1 for r in kept)
        avg = sum(r.sum_logprob for r in kept) / n_tokens if kept else None
        nbest = None
        if cfg.nbest and len(parts) == 1 and kept:
            nbest = [Hypothesis(text=t, score=s) for t, s in kept[0].nbest[: cfg.nbest]]
        return Transcript(
            text=" ".join(r.text for r in kept if r.text).strip(),
            language=parts[0][1].language,
            avg_logprob=avg,
            no_speech_prob=min(r.no_speech_prob for _, r in parts),
            duration=sum(len(p) for p, _ in parts) / SAMPLE_RATE,
            nbest=nbest,
        )


def window_mel(samples: np.ndarray, n_mels: int, n_frames: int) -> torch.Tensor:
    """Log-mel of one window, zero-padded to the model's fixed frame count (as whisper.pad_or_trim does)."""
    import whisper

    mel = whisper.log_mel_spectrogram(torch.from_numpy(np.ascontiguousarray(samples)), n_mels)
    return whisper.pad_or_trim(mel, n_frames)
