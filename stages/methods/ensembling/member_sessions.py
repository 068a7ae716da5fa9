"""One member's decoding state for one batch: its encoder output or prompt and its own KV cache.

`next_log_probs(generated)` returns the member's next-token log-probs for
every row given the tokens generated so far. With `use_cache` the member
feeds only the newest token and keeps a transformers `Cache` object, which
`reorder(rows)` permutes when beam search reorders its rows; without it the
member re-runs the whole prefix each step (the reference the cache is
tested against, and the benchmark's slow path).
"""

from __future__ import annotations

import inspect

import torch
from transformers.modeling_outputs import BaseModelOutput

from stages.methods.ensembling.ensemble_members import Member


def _cache_argument(model) -> str:
    """transformers 5 calls the cache `cache`; 4.x called it `past_key_values`."""
    params = inspect.signature(type(model).forward).parameters  # the class's: instances may wrap forward
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(outputs):
    cache = outputs.get("cache")
    return cache if cache is not None else outputs.get("past_key_values")


class MemberSession:
    """Shared plumbing; subclasses build the forward inputs."""

    def __init__(self, member: Member, use_cache: bool):
        self.member = member
        self.model = member.model
        self.device = member.device
        self.use_cache = use_cache
        self.cache = None
        self._cache_arg = _cache_argument(self.model)
        self.calls = 0

    @property
    def prompt_len(self) -> int:
        raise NotImplementedError

    def _forward_inputs(self, generated: torch.Tensor) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def next_log_probs(self, generated: torch.Tensor) -> torch.Tensor:
        inputs = self._forward_inputs(generated.to(self.device))
        if self.use_cache:
            inputs[self._cache_arg] = self.cache
        outputs = self.model(**inputs, use_cache=self.use_cache, return_dict=True)
        if self.use_cache:
            self.cache = _returned_cache(outputs)
        self.calls += 1
        logits = outputs.logits[:, -1, :].to(dtype=torch.float32)
        return torch.log_softmax(logits, dim=-1)

    def reorder(self, rows: torch.Tensor) -> None:
        # Without a cache the rows' prefixes come from the selector, already reordered.
        if self.use_cache and self.cache is not None:
            if not hasattr(self.cache, "reorder_cache"):
                raise TypeError(f"member {self.member.name!r} returned a {type(self.cache).__name__} cache, which "
                                "cannot be reordered for beam search; use a transformers Cache or use_cache=False")
            self.cache.reorder_cache(rows.to(self.device))


class Seq2SeqSession(MemberSession):
    """Encoder runs once per batch; its output is repeated for the beams of each input."""

    def __init__(self, member: Member, sources: list[str], rows_per_input: int, use_cache: bool,
                 decoder_start_token_id: int):
        super().__init__(member, use_cache)
        batch = member.encode_sources(sources)
        with torch.no_grad():
            encoded = self.model.get_encoder()(**batch, return_dict=True)
        self.encoder_outputs = BaseModelOutput(
            last_hidden_state=encoded.last_hidden_state.repeat_interleave(rows_per_input, dim=0))
        self.source_mask = batch["attention_mask"].repeat_interleave(rows_per_input, dim=0)
        self.start = torch.full((self.source_mask.shape[0], 1), decoder_start_token_id, dtype=torch.long,
                                device=self.device)

    @property
    def prompt_len(self) -> int:
        return 1

    def _forward_inputs(self, generated: torch.Tensor) -> dict:
        if self.use_cache and generated.shape[1] > 0:
            decoder_input_ids = generated[:, -1:]
        else:
            decoder_input_ids = torch.cat((self.start, generated), dim=1)
        return {"encoder_outputs": self.encoder_outputs, "attention_mask": self.source_mask,
                "decoder_input_ids": decoder_input_ids}


class CausalSession(MemberSession):
    """Left-padded prompt; positions count real tokens only, as `generate` computes them."""

    def __init__(self, member: Member, sources: list[str], rows_per_input: int, use_cache: bool):
        super().__init__(member, use_cache)
        batch = member.encode_sources(sources)
        self.prompt = batch["input_ids"].repeat_interleave(rows_per_input, dim=0)
        mask = batch["attention_mask"].repeat_interleave(rows_per_input, dim=0)
        positions = mask.long().cumsum(-1) - 1
        self.prompt_positions = positions.masked_fill(mask == 0, 0)
        # `generate` drops an all-ones mask (faster attention path); do the same for identical numerics.
        self.prompt_mask = None if bool((mask == 1).all()) else mask
        params = inspect.signature(type(self.model).forward).parameters
        self.accepts_positions = "position_ids" in params
        self.logits_to_keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    @property
    def prompt_len(self) -> int:
        return self.prompt.shape[1]

    def _forward_inputs(self, generated: torch.Tensor) -> dict:
        t = generated.shape[1]
        new_positions = self.prompt_positions[:, -1:] + torch.arange(1, t + 1, device=self.device)
        if self.use_cache and t > 0:
            input_ids, positions = generated[:, -1:], new_positions[:, -1:]
        else:
            input_ids = torch.cat((self.prompt, generated), dim=1)
            positions = torch.cat((self.prompt_positions, new_positions), dim=1)
        inputs = {"input_ids": input_ids, **self.logits_to_keep}
        if self.accepts_positions:
            inputs["position_ids"] = positions
        if self.prompt_mask is not None:
            inputs["attention_mask"] = torch.cat((self.prompt_mask, self.prompt_mask.new_ones(len(input_ids), t)), 1)
        return inputs


def open_session(member: Member, sources: list[str], rows_per_input: int, use_cache: bool,
                 decoder_start_token_id: int | None) -> MemberSession:
    if member.is_encoder_decoder:
        if decoder_start_token_id is None:
            raise ValueError(f"member {member.name!r}: no decoder_start_token_id in options or generation config")
        return Seq2SeqSession(member, sources, rows_per_input, use_cache, decoder_start_token_id)
    return CausalSession(member, sources, rows_per_input, use_cache)
