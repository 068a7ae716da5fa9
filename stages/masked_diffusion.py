"""Masked-diffusion repair as a stage: any HF masked LM re-masks doubtful tokens and fills them back in.

    WhisperASR(model=...) >> MaskedDiffusionRepair(model="build/mlm-en", steps=4, remask_fraction=0.15)

Any masked LM works; `cascade train mlm --data TEXT --model BERT_DIR --out DIR` trains one on your text.

Input is Transcript-like (`text`, `language` bind by name after ASR); the
output keeps the original as `source_text` and the trace shows the masked text
at iteration 0 and each unmasking step after (stages/methods/refinement/unmasking_steps.py).
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from stages.base import Stage, StageConfig
from stages.runtime.hf_loading import hf_identity, load_hf
from stages.runtime.token_limits import fit_token_limit
from stages.methods.refinement.refine_loop import RefineOutput, refine_loop
from stages.methods.refinement.unmasking_steps import MaskedDiffusionStep


class RepairInput(BaseModel):
    text: str
    language: str | None = None


class _Repaired(BaseModel):
    text: str
    source_text: str = Field(description="the text before repair")
    language: str | None = None


class Repaired(RefineOutput, _Repaired):
    """text first, then the refinement fields (iterations, stopped_because, trace)."""


class MaskedDiffusionConfig(StageConfig):
    model: str = Field(..., description="any AutoModelForMaskedLM (hub id or local dir)")
    revision: str | None = None
    steps: int = Field(4, ge=1, description="unmasking steps (linear schedule)")
    remask_fraction: float = Field(0.15, ge=0, le=1, description="re-mask at most this share of the tokens; "
                                   "1.0 = all-mask start")
    confidence_threshold: float | None = Field(None, ge=0, le=1, description="only tokens the MLM gives "
                                               "a lower probability may be re-masked")
    max_tokens: int = Field(512, ge=2, description="longer texts fail per item (never cut silently)")
    dtype: str = "auto"
    trust_remote_code: bool = False


class MaskedDiffusionRepair(Stage):
    Input = RepairInput
    Output = Repaired
    Config = MaskedDiffusionConfig
    kind = "masked_diffusion"
    uses_gpu = True

    def model_identity(self) -> str:
        return hf_identity(self.config.model, self.config.revision)

    def process(self, batch: list[RepairInput]) -> list:
        c = self.config
        model, tok = load_hf("AutoModelForMaskedLM", c.model, c.device, c.dtype, c.revision, c.trust_remote_code)
        limit = min(c.max_tokens, getattr(model.config, "max_position_embeddings", None) or c.max_tokens)
        results, todo = fit_token_limit(tok, [item.text for item in batch], limit,
                                        "text has {n} tokens, over max_tokens={limit}; split it")
        step = MaskedDiffusionStep(model, tok, c.steps, c.remask_fraction, c.confidence_threshold, limit)
        states = refine_loop([batch[i].text for i in todo], step, c.steps + 1)
        for i, s in zip(todo, states):
            results[i] = Repaired(text=s.output, source_text=batch[i].text, language=batch[i].language,
                                  **s.result_fields())
        return results
