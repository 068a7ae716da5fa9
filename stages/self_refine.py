"""Self-Refine as a stage: generate -> feedback -> refine until the critic is satisfied or the cap.

Prompted LMs (one instruction-tuned model plays all three parts):

    SelfRefine(model="Qwen/Qwen2.5-0.5B-Instruct", max_iterations=4)

Small models with a metric critic and re-decoding (keep the better-scored draft):

    SelfRefine(generator={"kind": "seq2seq", "model": "assets/models/mt-en-de"},
               critic={"kind": "round_trip", "model": "build/mt-de-en", "threshold": 70},
               refiner={"kind": "redecode", "do_sample": True}, keep_best=True)

Every output carries its trace (each iteration's draft, score and feedback)
and why it stopped; see stages/methods/refinement/refine_report.py for per-iteration quality.
"""
from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from stages.base import Stage, StageConfig
from stages.runtime.hf_loading import hf_identity, load_hf
from stages.methods.refinement.refine_loop import RefineOutput
from stages.methods.refinement.self_refine_loop import (CriticSpec, GeneratorSpec, LMScoreCriticSpec, PromptCriticSpec,
                                       PromptGeneratorSpec, PromptRefinerSpec, RedecodeSpec, RefinerSpec,
                                       RoundTripCriticSpec, Seq2SeqGeneratorSpec, build_critic, build_generator,
                                       build_refiner, self_refine)


class RefineInput(BaseModel):
    text: str = Field(..., description="the task / source text")
    language: str | None = None


class _Refined(BaseModel):
    text: str
    source_text: str
    language: str | None = None
    score: float | None = Field(None, description="the critic's score of the final output (metric critics)")


class SelfRefined(RefineOutput, _Refined):
    """text first, then the refinement fields (iterations, stopped_because, trace)."""


class SelfRefineConfig(StageConfig):
    model: str | None = Field(None, description="model of every part that names none (hub id or local dir)")
    generator: GeneratorSpec = Field(default_factory=PromptGeneratorSpec)
    critic: CriticSpec = Field(default_factory=PromptCriticSpec)
    refiner: RefinerSpec | None = Field(None, description="None: prompt_lm after a prompt_lm generator, "
                                        "redecode (sampling) after a seq2seq generator")
    max_iterations: int = Field(4, ge=1, description="drafts per item at most, the first one included")
    keep_best: bool = Field(False, description="a refined draft replaces the current one only if scored higher")
    stop_when_unchanged: bool | None = Field(None, description="stop when a draft repeats; None = unless keep_best")
    language: str | None = Field(None, description="language of the outputs, copied to each output")
    dtype: str = "auto"
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _models_named(self):
        if self.refiner is None:
            gen = self.generator
            self.refiner = PromptRefinerSpec() if isinstance(gen, PromptGeneratorSpec) else RedecodeSpec(
                model=gen.model, max_new_tokens=gen.max_new_tokens)
        if not (self.generator.model or self.model):
            raise ValueError("name a model: `model` (used by every part) or `generator.model`")
        if isinstance(self.critic, RoundTripCriticSpec) and not self.critic.model:
            raise ValueError("the round_trip critic needs its own `model`: a reverse (target->source) translator")
        if isinstance(self.critic, LMScoreCriticSpec) and not (self.critic.model or self.model):
            raise ValueError("the lm_score critic needs a causal LM: set critic.model")
        seq2seq = isinstance(self.generator, Seq2SeqGeneratorSpec)
        for part in (self.critic, self.refiner):
            if seq2seq and isinstance(part, (PromptCriticSpec, PromptRefinerSpec)) and not (part.model or self.model):
                raise ValueError(f"a prompt_lm {'critic' if part is self.critic else 'refiner'} needs a causal LM, "
                                 "not the seq2seq generator: set its model (or pick a metric critic / redecode)")
        return self


class SelfRefine(Stage):
    """Text -> refined text with a per-item trace (Self-Refine; pluggable generator, critic, refiner)."""

    Input = RefineInput
    Output = SelfRefined
    Config = SelfRefineConfig
    kind = "self_refine"
    uses_gpu = True

    def part_models(self) -> dict[str, str]:
        c = self.config
        gen_model = c.generator.model or c.model
        fallback = gen_model if isinstance(c.generator, Seq2SeqGeneratorSpec) else (c.model or gen_model)
        return {"generator": gen_model, "critic": c.critic.model or fallback, "refiner": c.refiner.model or fallback}

    def model_identity(self) -> str:
        return " ".join(f"{part}={hf_identity(m, None)}" for part, m in self.part_models().items())

    def _load(self, auto_cls: str, model: str, revision: str | None):
        c = self.config
        return load_hf(auto_cls, model, c.device, c.dtype, revision, c.trust_remote_code)

    def process(self, batch: list[RefineInput]) -> list:
        c, models = self.config, self.part_models()
        states = self_refine(
            [item.text for item in batch],
            build_generator(c.generator, models["generator"], self._load),
            build_critic(c.critic, models["critic"], self._load),
            build_refiner(c.refiner, models["refiner"], self._load),
            c.max_iterations, c.keep_best, c.stop_when_unchanged)
        return [SelfRefined(text=s.output, source_text=item.text, language=c.language, score=s.score,
                            **s.result_fields()) for item, s in zip(batch, states)]
