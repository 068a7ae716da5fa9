"""Decoding options: one frozen config, with Hugging Face `generate` semantics.

Lengths follow `generate`: `max_length` / `min_length` count the decoder prompt
(the decoder start token of a seq2seq model, or the whole left-padded prompt of
a causal LM), `max_new_tokens` / `min_new_tokens` count generated tokens only.
Internally everything is resolved to counts of generated tokens
(`Lengths`), measured against the prompt of the first active member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# `generate` falls back to 20 new tokens when no length is configured anywhere.
DEFAULT_MAX_NEW_TOKENS = 20


class EnsembleOptions(BaseModel):
    """How to search. Token ids left as None are taken from the first member."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_beams: int = Field(1, ge=1)
    num_return_sequences: int = Field(1, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=1)
    min_new_tokens: int = Field(0, ge=0)
    min_length: int = Field(0, ge=0)
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    eos_token_ids: tuple[int, ...] | None = None
    pad_token_id: int | None = None
    decoder_start_token_id: int | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    use_cache: bool = True

    @classmethod
    def from_generation_config(cls, generation_config: Any, **overrides: Any) -> "EnsembleOptions":
        """Read a transformers `GenerationConfig` (a model's defaults), then apply overrides.

        Raises on settings this loop does not implement (sampling, repetition
        penalties, multi-token bad words), rather than silently ignoring them.
        """
        gc = generation_config
        _refuse_unsupported(gc)
        suppress = list(gc.suppress_tokens or [])
        eos = _as_tuple(gc.eos_token_id)
        for bad in gc.bad_words_ids or []:
            if len(bad) != 1:
                raise ValueError(f"bad_words_ids with several tokens ({bad}) are not supported; only single tokens")
            if eos is None or bad[0] not in eos:  # `generate` never bans EOS through bad words
                suppress.append(bad[0])
        values: dict[str, Any] = {
            "num_beams": gc.num_beams or 1,
            "num_return_sequences": gc.num_return_sequences or 1,
            "max_new_tokens": gc.max_new_tokens,
            "max_length": gc.max_length,
            "min_new_tokens": gc.min_new_tokens or 0,
            "min_length": gc.min_length or 0,
            "length_penalty": 1.0 if gc.length_penalty is None else gc.length_penalty,
            "early_stopping": False if gc.early_stopping is None else gc.early_stopping,
            "eos_token_ids": eos,
            "pad_token_id": gc.pad_token_id,
            "decoder_start_token_id": gc.decoder_start_token_id,
            "forced_bos_token_id": gc.forced_bos_token_id,
            "forced_eos_token_id": gc.forced_eos_token_id,
            "suppress_tokens": tuple(suppress),
            "begin_suppress_tokens": tuple(gc.begin_suppress_tokens or ()),
            "use_cache": True if gc.use_cache is None else gc.use_cache,
        }
        if overrides.get("max_new_tokens") is not None and "max_length" not in overrides:
            values["max_length"] = None  # `generate`: max_new_tokens wins over a configured max_length
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class Lengths:
    """Length limits resolved to generated-token counts for one batch."""

    prompt_len: int
    max_new: int
    min_new: int


def resolve_lengths(options: EnsembleOptions, prompt_len: int) -> Lengths:
    if options.max_new_tokens is not None:
        max_new = options.max_new_tokens
    elif options.max_length is not None:
        max_new = options.max_length - prompt_len
    else:
        max_new = DEFAULT_MAX_NEW_TOKENS
    if max_new < 1:
        raise ValueError(f"max_length={options.max_length} leaves no room after a prompt of {prompt_len} tokens")
    min_new = max(options.min_new_tokens, options.min_length - prompt_len, 0)
    return Lengths(prompt_len=prompt_len, max_new=max_new, min_new=min_new)


def _as_tuple(token_ids: Any) -> tuple[int, ...] | None:
    if token_ids is None:
        return None
    if isinstance(token_ids, int):
        return (token_ids,)
    return tuple(int(t) for t in token_ids)


def _refuse_unsupported(gc: Any) -> None:
    problems = []
    if gc.do_sample:
        problems.append("do_sample=True")  # temperature / top-k / top-p only matter when sampling
    for name in ("repetition_penalty", "encoder_repetition_penalty"):
        if getattr(gc, name, None) not in (None, 1.0):
            problems.append(f"{name}={getattr(gc, name)}")
    for name in ("no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "sequence_bias",
                 "exponential_decay_length_penalty"):
        if getattr(gc, name, None):
            problems.append(f"{name}={getattr(gc, name)}")
    if getattr(gc, "guidance_scale", None) not in (None, 1, 1.0):
        problems.append(f"guidance_scale={gc.guidance_scale}")
    if problems:
        raise ValueError(
            "ensemble decoding does not implement these generation settings: "
            + ", ".join(problems)
            + "; clear them in the model's generation config, or pass EnsembleOptions explicitly"
        )
