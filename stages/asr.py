"""Speech recognition with openai-whisper: voice-activity chunks of all files decoded in batches,
temperature fallback, timestamped segments, n-best."""
from __future__ import annotations

import hashlib
import os
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from stages.runtime.audio_decoding import SAMPLE_RATE, load_audio
from stages.base import ConfigError, ItemFailure, Stage, StageConfig
from stages.runtime.model_cache import load_cached, path_identity, pick_device
from stages.methods.speech_chunking import pack_chunks
from stages.methods.voice_activity import VoiceActivityOptions, speech_regions, why_no_speech
from stages.methods.whisper_fallback import FallbackRules, decode_with_fallback
from stages.payloads import AudioClip, Hypothesis, Segment, TimedWord, Transcript


MAX_PEAK = 1000.0  # 60 dB above full scale: float samples beyond this are not audio


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
    vad: bool = Field(True, description="skip silence and noise, cut long audio at pauses (False: fixed windows)")
    vad_floor_db: float = Field(-50.0, description="sound quieter than this (dBFS) is never speech")
    vad_pad: float = Field(0.1, ge=0, description="seconds kept before and after each stretch of speech")
    chunk_seconds: float | None = Field(None, gt=0, description="longest chunk, hence segment; None = one window")
    max_pause: float | None = Field(3.0, gt=0, description="a pause this long (s) always starts a new chunk")
    temperatures: list[float] = Field([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], min_length=1,
                                      description="fallback ladder; [0] = greedy only, no fallback")
    best_of: int | None = Field(None, ge=1, description="samples per chunk at temperature > 0")
    compression_ratio_threshold: float | None = Field(2.4, description="above: a repetition loop, decode again")
    logprob_threshold: float | None = Field(-1.0, description="mean token log-prob below: decode again")
    no_speech_threshold: float | None = Field(0.6, description="with a low log-prob: the chunk is silent")
    word_timestamps: bool = Field(False, description="time every word (whisper's alignment heads; one more pass)")
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

    def preflight(self) -> None:
        """An unknown model name is a usage error before any audio is read (a path is checked by the flow)."""
        import whisper

        name = self.config.model
        if not os.path.exists(os.path.expanduser(name)) and name not in whisper.available_models():
            raise ConfigError(f"unknown whisper model {name!r}: give a checkpoint path or one of "
                              f"{', '.join(whisper.available_models())}")

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
        """Gate and cut every file at voice activity, decode the chunks of all files together, join per file."""
        from whisper.audio import HOP_LENGTH

        model = self.load()
        n_frames = 2 * model.dims.n_audio_ctx
        window = n_frames * HOP_LENGTH
        max_len = min(window, int(self.config.chunk_seconds * SAMPLE_RATE)) if self.config.chunk_seconds else window
        results: list = [None] * len(batch)
        audio: dict[int, np.ndarray] = {}
        chunks: list[tuple[int, int, int]] = []  # (item index, first sample, end sample), in file order
        for i, clip in enumerate(batch):
            try:
                audio[i] = load_audio(clip.audio, self.config.max_seconds)
                spans, reason = self.plan(audio[i], max_len)
            except ItemFailure as failure:
                results[i] = failure
                continue
            if not spans:
                results[i] = Transcript(text="", duration=len(audio[i]) / SAMPLE_RATE, note=reason)
            chunks += [(i, s, e) for s, e in spans]

        decoded = self.decode(chunks, audio, model, n_frames)
        words = self.align(chunks, decoded, audio, model, n_frames) if self.config.word_timestamps else {}
        per_item: dict[int, list] = {}
        for k, ((i, s, e), res) in enumerate(zip(chunks, decoded)):
            per_item.setdefault(i, []).append((s, e, res, words.get(k)))
        for i, parts in per_item.items():
            if results[i] is None:
                results[i] = self.stitch(parts, len(audio[i]))
        return results

    def plan(self, samples: np.ndarray, max_len: int) -> tuple[list[tuple[int, int]], str | None]:
        """The chunks to decode, or none and why. A clip that fits one window is decoded whole, as it is."""
        cfg = self.config
        loud = np.flatnonzero(np.abs(samples) > MAX_PEAK)
        if loud.size:  # whisper's mel overflows to inf/NaN, and such values are no recording anyway
            raise ItemFailure(f"audio samples out of range from {_clock(loud[0] / SAMPLE_RATE)} "
                              f"(peak {np.abs(samples).max():.3g}; audio lies within ±1)", kind="bad_input")
        if not cfg.vad:
            regions = [(0, len(samples))]
        else:
            vad = VoiceActivityOptions(floor_db=cfg.vad_floor_db, pad=cfg.vad_pad)
            regions = speech_regions(samples, SAMPLE_RATE, vad)
            if not regions:
                return [], why_no_speech(samples, SAMPLE_RATE, vad)
        if len(samples) <= max_len:
            return [(0, len(samples))], None
        max_pause = int(cfg.max_pause * SAMPLE_RATE) if cfg.max_pause else None
        return pack_chunks(regions, samples, max_len, max_pause), None

    def decode(self, chunks, audio, model, n_frames: int):
        """Decode all chunks in batches, with temperature fallback; mels are made batch by batch."""
        cfg = self.config
        options = self.options(model)
        dtype = torch.float16 if options.fp16 else torch.float32

        def mel_of(ids: list[int]) -> torch.Tensor:
            mels = [window_mel(audio[i][s:e], model.dims.n_mels, n_frames) for i, s, e in (chunks[k] for k in ids)]
            return torch.stack(mels).to(model.device, dtype)

        seeds = [_digest_seed(audio[i][s:e]) for i, s, e in chunks]
        return decode_with_fallback(model, mel_of, len(chunks), options, self.rules(), cfg.decode_batch, seeds)

    def rules(self) -> FallbackRules:
        cfg = self.config
        return FallbackRules(temperatures=tuple(cfg.temperatures), best_of=cfg.best_of,
                             compression_ratio_threshold=cfg.compression_ratio_threshold,
                             logprob_threshold=cfg.logprob_threshold, no_speech_threshold=cfg.no_speech_threshold)

    def align(self, chunks, decoded, audio, model, n_frames: int) -> dict[int, list[TimedWord]]:
        """Word times of every chunk whose words are kept, in the file's time."""
        from whisper.tokenizer import get_tokenizer

        from stages.methods.word_alignment import align_words

        out, rules = {}, self.rules()
        for k, ((i, s, e), r) in enumerate(zip(chunks, decoded)):
            if not r.tokens or not np.isfinite(r.avg_logprob) or rules.silent(r) or rules.loops(r):
                continue
            tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages,
                                      language=r.language, task=self.config.task)
            mel = window_mel(audio[i][s:e], model.dims.n_mels, n_frames).to(model.device)
            out[k] = [TimedWord(word=w, start=a, end=b, probability=p)
                      for w, a, b, p in align_words(model, tokenizer, r.tokens, mel, e - s, s / SAMPLE_RATE)]
        return out

    def stitch(self, parts, n_samples: int):
        """Join the chunks of one file in order; chunks judged silent or stuck in a loop add no text."""
        cfg, rules = self.config, self.rules()
        for s, e, r, _ in parts:
            if not (np.isfinite(r.avg_logprob) and np.isfinite(r.no_speech_prob)):
                return ItemFailure(f"the model gave non-finite scores for audio {_span(s, e)} "
                                   "(broken weights or audio); nothing was transcribed", kind="bad_input")
        silent = [(s, e) for s, e, r, _ in parts if rules.silent(r)]
        looping = [(s, e) for s, e, r, _ in parts if not rules.silent(r) and rules.loops(r)]
        kept = [(s, e, r, w) for s, e, r, w in parts if not rules.silent(r) and not rules.loops(r)]
        segments = [Segment(start=s / SAMPLE_RATE, end=e / SAMPLE_RATE, text=r.text,
                            avg_logprob=r.avg_logprob, no_speech_prob=r.no_speech_prob,
                            compression_ratio=r.compression_ratio, temperature=r.temperature, words=w)
                    for s, e, r, w in kept if r.text]
        n_tokens = sum(len(r.tokens) + 1 for _, _, r, _ in kept)
        nbest = None
        if cfg.nbest and len(parts) == 1 and kept and kept[0][2].temperature == 0:
            nbest = [Hypothesis(text=t, score=sc) for t, sc in kept[0][2].nbest[: cfg.nbest]]
        notes = []
        if silent:
            notes.append(f"{len(silent)} of {len(parts)} chunks judged silent by the model "
                         f"(no_speech_prob > {cfg.no_speech_threshold}, avg_logprob < {cfg.logprob_threshold})")
        if looping:
            notes.append(f"{len(looping)} of {len(parts)} chunks dropped: a repetition loop at every "
                         f"temperature ({', '.join(_span(s, e) for s, e in looping)})")
        if not segments and not notes:
            notes.append("the model decoded no words")
        return Transcript(
            text=" ".join(seg.text for seg in segments).strip(),
            language=parts[0][2].language,
            avg_logprob=sum(r.sum_logprob for _, _, r, _ in kept) / n_tokens if kept else None,
            no_speech_prob=min(r.no_speech_prob for _, _, r, _ in parts),
            duration=n_samples / SAMPLE_RATE,
            nbest=nbest,
            segments=segments,
            note="; ".join(notes) or None,
        )


def _span(start: int, end: int) -> str:
    return f"{_clock(start / SAMPLE_RATE)}-{_clock(end / SAMPLE_RATE)}"


def _clock(seconds: float) -> str:
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes // 60)}:{int(minutes % 60):02d}:{sec:06.3f}"


def _digest_seed(samples: np.ndarray) -> int:
    """A sampling seed from the chunk's own audio: the same chunk samples the same way in any batch."""
    return int.from_bytes(hashlib.blake2b(samples.tobytes(), digest_size=6).digest(), "little")


def window_mel(samples: np.ndarray, n_mels: int, n_frames: int) -> torch.Tensor:
    """Log-mel of one window, zero-padded to the model's fixed frame count (as whisper.pad_or_trim does)."""
    import whisper

    mel = whisper.log_mel_spectrogram(torch.from_numpy(np.ascontiguousarray(samples)), n_mels)
    return whisper.pad_or_trim(mel, n_frames)
