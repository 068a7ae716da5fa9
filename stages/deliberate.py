"""Deliberation as a stage: a second-pass seq2seq model rewrites a first-pass draft while reading the source.

The second pass is a Marian-style model whose encoder reads
`source </s> draft` (see stages/methods/refinement/second_pass.py; train one on your
pairs with `cascade train deliberation --data PAIRS --model START --out DIR -p first_pass=DRAFTER`).
Wire it after any translator:

    Translate(model="assets/models/mt-en-de") >> Deliberate(model="build/deliberation/second-pass")

(`text` = the draft and `source_text` = the source bind by name.) With
`first_pass_model` set, items that arrive without a draft get one from that
model; with neither, the second pass runs on an empty draft.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from stages.base import ItemFailure, Stage, StageConfig
from stages.runtime.hf_loading import hf_identity, load_hf
from stages.methods.refinement.second_pass import Drafted, deliberate, join_source_draft
from stages.methods.refinement.refine_loop import RefineOutput
from stages.methods.refinement.seq2seq_part import Seq2Seq, Seq2SeqOptions


class DraftInput(BaseModel):
    source_text: str | None = Field(None, description="the source sentence")
    text: str = Field("", description="the first-pass draft (may be empty)")


class _Deliberated(BaseModel):
    text: str
    source_text: str
    draft: str = Field(description="the first-pass draft the second pass read")
    language: str | None = None


class Deliberated(RefineOutput, _Deliberated):
    """text first, then the refinement fields (iterations, stopped_because, trace)."""


class DeliberateConfig(StageConfig):
    model: str = Field(..., description="the second-pass model (hub id or local dir)")
    revision: str | None = None
    first_pass_model: str | None = Field(None, description="drafts items that arrive without one")
    passes: int = Field(1, ge=1, description="second-pass rounds; each reads the previous output as its draft")
    separator: str | None = Field(None, description="between source and draft; None = the tokenizer's EOS")
    num_beams: int = Field(4, ge=1)
    max_new_tokens: int = Field(128, ge=1)
    stop_when_unchanged: bool = True
    target_lang: str | None = None
    batch_size: int = Field(32, ge=1)
    dtype: str = "auto"


class Deliberate(Stage):
    """(source, draft) -> final text, with a trace: draft at iteration 0, second pass(es) after."""

    Input = DraftInput
    Output = Deliberated
    Config = DeliberateConfig
    kind = "deliberate"
    uses_gpu = True

    def model_identity(self) -> str:
        c = self.config
        first = hf_identity(c.first_pass_model, None) if c.first_pass_model else ""
        return f"{hf_identity(c.model, c.revision)} first={first}"

    def _seq2seq(self, model: str, revision: str | None) -> Seq2Seq:
        c = self.config
        options = Seq2SeqOptions(model=model, revision=revision, num_beams=c.num_beams,
                                 max_new_tokens=c.max_new_tokens, batch_size=c.batch_size)
        return Seq2Seq(*load_hf("AutoModelForSeq2SeqLM", model, c.device, c.dtype, revision), options)

    def process(self, batch: list[DraftInput]) -> list:
        c = self.config
        second = self._seq2seq(c.model, c.revision)
        first = self._seq2seq(c.first_pass_model, None) if c.first_pass_model else None
        separator = c.separator if c.separator is not None else second.tok.eos_token
        limit = getattr(second.model.config, "max_position_embeddings", None) or 1_000_000
        results: list = [None] * len(batch)
        todo: list[int] = []
        for i, item in enumerate(batch):
            if item.source_text is None:
                results[i] = ItemFailure("no source_text: the second pass reads the source and the draft; "
                                         "connect the translator's source_text (or give it in the input)")
                continue
            # the draft may grow with later passes; the first join is the check we can make up front
            n = len(second.tok(join_source_draft(item.source_text, item.text, separator))["input_ids"])
            if n > limit:
                results[i] = ItemFailure(f"source + draft is {n} tokens, over the model's {limit} positions")
                continue
            todo.append(i)
        states = deliberate(second, [Drafted(batch[i].source_text, batch[i].text) for i in todo], c.passes,
                            separator, first, c.stop_when_unchanged)
        for i, s in zip(todo, states):
            results[i] = Deliberated(text=s.output, source_text=batch[i].source_text, draft=s.trace[0].output,
                                     language=c.target_lang, **s.result_fields())
        return results
