"""Mask-Predict as a stage: non-autoregressive translation with a CMLM, refined over T iterations.

    MaskPredict(model="build/cmlm", iterations=10, length_beam=3)

The model folder is written by `cascade train cmlm` (stages/training/masked_lm_recipes.py;
the model: stages/methods/refinement/cmlm.py).
Each output's trace holds the best length candidate after every iteration of
this T's schedule; for quality against T, run once per T (the re-masking
schedule n = N·(T−t)/T depends on T).
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from stages.base import Stage, StageConfig
from stages.runtime.model_cache import load_cached, path_identity, pick_device, pick_dtype
from stages.runtime.token_limits import fit_token_limit
from stages.methods.refinement.cmlm import load_cmlm
from stages.methods.refinement.refine_loop import RefineOutput, refine_loop
from stages.methods.refinement.mask_predict_steps import MaskPredictStep


class MaskPredictInput(BaseModel):
    text: str
    language: str | None = None


class _MaskPredicted(BaseModel):
    text: str
    source_text: str
    language: str | None = None
    score: float | None = Field(None, description="mean log-prob of the chosen candidate's tokens")


class MaskPredicted(RefineOutput, _MaskPredicted):
    """text first, then the refinement fields (iterations, stopped_because, trace)."""


class MaskPredictConfig(StageConfig):
    model: str = Field(..., description="a CMLM folder (`cascade train cmlm`)")
    iterations: int = Field(10, ge=1, description="T: decoder passes per item")
    length_beam: int = Field(3, ge=1, description="ℓ: length candidates decoded in parallel")
    max_length: int | None = Field(None, ge=1, description="longest target; None = the model's limit")
    stop_when_unchanged: bool = Field(False, description="stop an item early once its output repeats")
    target_lang: str | None = None
    batch_size: int = Field(64, ge=1)
    dtype: str = "float32"


class MaskPredict(Stage):
    Input = MaskPredictInput
    Output = MaskPredicted
    Config = MaskPredictConfig
    kind = "mask_predict"
    uses_gpu = True

    def model_identity(self) -> str:
        return path_identity(self.config.model)

    def load(self):
        c = self.config
        dev = pick_device(c.device)
        dt = pick_dtype(c.dtype, dev)
        return load_cached("cmlm", c.model, dev, dt, lambda: load_cmlm(c.model, dev, dt))

    def process(self, batch: list[MaskPredictInput]) -> list:
        c = self.config
        model, tok = self.load()
        limit = model.config.max_source_positions
        results, todo = fit_token_limit(tok, [item.text for item in batch], limit,
                                        "source has {n} tokens, over the CMLM's {limit} source positions")
        step = MaskPredictStep(model, tok, c.iterations, c.length_beam, c.max_length, c.batch_size)
        states = refine_loop([batch[i].text for i in todo], step, c.iterations,
                             stop_when_unchanged=c.stop_when_unchanged)
        for i, s in zip(todo, states):
            results[i] = MaskPredicted(text=s.output, source_text=batch[i].text, language=c.target_lang,
                                       score=s.score, **s.result_fields())
        return results
