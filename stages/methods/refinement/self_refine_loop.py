"""Self-Refine: y0 = generate(x); each round the critic judges y_t and, unless it is done, a refiner writes y_t+1.

Three pluggable parts, each picked by `kind` in the config:

    generator  prompt_lm (a prompted causal LM) | seq2seq (beam search)
    critic     prompt_lm (feedback text, done on a marker) | round_trip | lm_score | seq2seq_score
    refiner    prompt_lm (sees the input and the history of drafts + feedback)
               | redecode (decode again with another sampling seed / a wider beam)

One iteration = one draft and its feedback, so the trace pairs every output
with what the critic said about it. With `keep_best`, a new draft replaces the
current one only when the critic scores it higher (the rejected candidate is
kept in the trace's `info`).
"""
from __future__ import annotations

from typing import Annotated, Callable, Literal, Protocol, Union

from pydantic import BaseModel, ConfigDict, Field

from stages.methods.refinement.critics import Critic, LMScoreCritic, PromptCritic, RoundTripCritic, Seq2SeqScoreCritic
from stages.methods.refinement.refine_loop import ItemState, RefineStep, refine_loop
from stages.methods.refinement.prompting import DEFAULT_FEEDBACK, DEFAULT_GENERATE, DEFAULT_REFINE, PromptLM, PromptLMOptions, fill
from stages.methods.refinement.seq2seq_part import Seq2Seq, Seq2SeqOptions

# -- config of each part ----------------------------------------------------


class PromptGeneratorSpec(PromptLMOptions):
    kind: Literal["prompt_lm"] = "prompt_lm"
    template: str = Field(DEFAULT_GENERATE, description="slots: {input}")


class Seq2SeqGeneratorSpec(Seq2SeqOptions):
    kind: Literal["seq2seq"] = "seq2seq"


class PromptCriticSpec(PromptLMOptions):
    kind: Literal["prompt_lm"] = "prompt_lm"
    template: str = Field(DEFAULT_FEEDBACK, description="slots: {input} {output} {done}")
    done_marker: str = Field("DONE", description="case-insensitive; feedback containing it stops the item")


class RoundTripCriticSpec(Seq2SeqOptions):
    kind: Literal["round_trip"] = "round_trip"
    threshold: float = Field(60.0, description="chrF (0-100) of the back-translation against the input")


class LMScoreCriticSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    kind: Literal["lm_score"] = "lm_score"
    model: str | None = None
    revision: str | None = None
    threshold: float = Field(-1.0, description="mean log-prob per token")
    batch_size: int = Field(32, ge=1)


class Seq2SeqScoreCriticSpec(Seq2SeqOptions):
    kind: Literal["seq2seq_score"] = "seq2seq_score"
    threshold: float = Field(-0.5, description="mean log-prob per target token")


class PromptRefinerSpec(PromptLMOptions):
    kind: Literal["prompt_lm"] = "prompt_lm"
    template: str = Field(DEFAULT_REFINE, description="slots: {input} {history} {output} {feedback}")
    history_window: int = Field(3, ge=1, description="latest drafts (with their feedback) shown to the refiner")


class RedecodeSpec(Seq2SeqOptions):
    kind: Literal["redecode"] = "redecode"
    num_beams: int = Field(1, ge=1)
    do_sample: bool = True
    seed: int = Field(0, description="iteration t samples with seed + t")
    beam_growth: int = Field(0, ge=0, description="iteration t uses num_beams + beam_growth * t beams")


GeneratorSpec = Annotated[Union[PromptGeneratorSpec, Seq2SeqGeneratorSpec], Field(discriminator="kind")]
CriticSpec = Annotated[Union[PromptCriticSpec, RoundTripCriticSpec, LMScoreCriticSpec, Seq2SeqScoreCriticSpec],
                       Field(discriminator="kind")]
RefinerSpec = Annotated[Union[PromptRefinerSpec, RedecodeSpec], Field(discriminator="kind")]

# -- the parts ----------------------------------------------------------------


class Generator(Protocol):
    def __call__(self, inputs: list[str]) -> list[str]: ...


class Refiner(Protocol):
    def __call__(self, inputs: list[str], traces: list[list[RefineStep]], iteration: int) -> list[str]: ...


class PromptGenerator:
    def __init__(self, lm: PromptLM, template: str):
        self.lm, self.template = lm, template

    def __call__(self, inputs: list[str]) -> list[str]:
        return self.lm([fill(self.template, input=x) for x in inputs])


class Seq2SeqGenerator:
    def __init__(self, seq2seq: Seq2Seq):
        self.seq2seq = seq2seq

    def __call__(self, inputs: list[str]) -> list[str]:
        return self.seq2seq.decode(inputs)


def render_history(trace: list[RefineStep], window: int) -> str:
    """'Draft k: …' / 'Feedback k: …' lines for the latest `window` iterations (numbered from 1)."""
    lines = []
    for step in trace[-window:]:
        lines.append(f"Draft {step.iteration + 1}: {step.output}")
        if step.feedback:
            lines.append(f"Feedback {step.iteration + 1}: {step.feedback}")
    return "\n".join(lines)


class PromptRefiner:
    def __init__(self, lm: PromptLM, template: str, history_window: int):
        self.lm, self.template, self.window = lm, template, history_window

    def prompt(self, source: str, trace: list[RefineStep]) -> str:
        last = trace[-1]
        return fill(self.template, input=source, history=render_history(trace, self.window), output=last.output,
                    feedback=last.feedback or "")

    def __call__(self, inputs: list[str], traces: list[list[RefineStep]], iteration: int) -> list[str]:
        return self.lm([self.prompt(x, t) for x, t in zip(inputs, traces)])


class RedecodeRefiner:
    def __init__(self, seq2seq: Seq2Seq, seed: int, beam_growth: int):
        self.seq2seq, self.seed, self.beam_growth = seq2seq, seed, beam_growth

    def __call__(self, inputs: list[str], traces: list[list[RefineStep]], iteration: int) -> list[str]:
        beams = self.seq2seq.options.num_beams + self.beam_growth * iteration
        return self.seq2seq.decode(inputs, seed=self.seed + iteration, num_beams=beams)


# -- building parts from specs -------------------------------------------------

# (auto class, model, revision) -> (model, tokenizer); the stage passes the process-wide cache.
Loader = Callable[[str, str, str | None], tuple]


def _prompt_lm(spec: PromptLMOptions, model: str, load: Loader) -> PromptLM:
    return PromptLM(*load("AutoModelForCausalLM", model, spec.revision), spec)


def _seq2seq(spec: Seq2SeqOptions, model: str, load: Loader) -> Seq2Seq:
    return Seq2Seq(*load("AutoModelForSeq2SeqLM", model, spec.revision), spec)


def build_generator(spec, model: str, load: Loader) -> Generator:
    if isinstance(spec, PromptGeneratorSpec):
        return PromptGenerator(_prompt_lm(spec, model, load), spec.template)
    return Seq2SeqGenerator(_seq2seq(spec, model, load))


def build_critic(spec, model: str, load: Loader) -> Critic:
    if isinstance(spec, PromptCriticSpec):
        return PromptCritic(_prompt_lm(spec, model, load), spec.template, spec.done_marker)
    if isinstance(spec, RoundTripCriticSpec):
        return RoundTripCritic(_seq2seq(spec, model, load), spec.threshold)
    if isinstance(spec, LMScoreCriticSpec):
        return LMScoreCritic(*load("AutoModelForCausalLM", model, spec.revision), spec.threshold, spec.batch_size)
    return Seq2SeqScoreCritic(_seq2seq(spec, model, load), spec.threshold)


def build_refiner(spec, model: str, load: Loader) -> Refiner:
    if isinstance(spec, PromptRefinerSpec):
        return PromptRefiner(_prompt_lm(spec, model, load), spec.template, spec.history_window)
    return RedecodeRefiner(_seq2seq(spec, model, load), spec.seed, spec.beam_growth)


# -- the step -------------------------------------------------------------------


def _better(new: float | None, old: float | None) -> bool:
    return new is not None and (old is None or new > old)


class SelfRefineStep:
    """The loop's `step`: draft (or refine) the active items, then critique the new drafts."""

    def __init__(self, generator: Generator, critic: Critic, refiner: Refiner, keep_best: bool = False):
        self.generator, self.critic, self.refiner, self.keep_best = generator, critic, refiner, keep_best

    def __call__(self, states: list[ItemState], iteration: int) -> None:
        inputs = [s.input for s in states]
        if iteration == 0:
            drafts = self.generator(inputs)
        else:
            drafts = self.refiner(inputs, [s.trace for s in states], iteration)
        for s, draft, fb in zip(states, drafts, self.critic(inputs, drafts)):
            if self.keep_best and iteration > 0 and not _better(fb.score, s.score):
                s.info = {"candidate": draft, "candidate_score": fb.score, "kept": "previous"}
                continue
            s.output, s.score, s.feedback, s.done = draft, fb.score, fb.text, fb.done


def self_refine(inputs: list[str], generator: Generator, critic: Critic, refiner: Refiner, max_iterations: int = 4,
                keep_best: bool = False, stop_when_unchanged: bool | None = None) -> list[ItemState]:
    """Run Self-Refine over a batch. `stop_when_unchanged` None = on, unless `keep_best` (a losing
    candidate leaves the output unchanged, yet the next seed may still win)."""
    if stop_when_unchanged is None:
        stop_when_unchanged = not keep_best
    step = SelfRefineStep(generator, critic, refiner, keep_best)
    return refine_loop(inputs, step, max_iterations, stop_when_unchanged=stop_when_unchanged)
