"""Self-Refine: prompted LM parts (tiny GPT-2), metric critics, re-decoding with keep-best, the stage."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from stages.methods.refinement.critics import Feedback, LMScoreCritic, RoundTripCritic
from stages.methods.refinement.refine_loop import RefineStep
from stages.methods.refinement.prompting import PromptLM, PromptLMOptions, fill
from stages.methods.refinement.self_refine_loop import (PromptCritic, PromptGenerator, PromptRefiner, render_history,
                                       self_refine)
from stages.methods.refinement.seq2seq_part import Seq2Seq, Seq2SeqOptions
from stages.base import stage_from_spec
from stages.self_refine import SelfRefine

TASKS = ["the cat sees", "who is the dog", "a big red house is"]


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval(), AutoTokenizer.from_pretrained(tiny_gpt2)


@pytest.fixture(scope="module")
def marian(tiny_marian):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return AutoModelForSeq2SeqLM.from_pretrained(tiny_marian).eval(), AutoTokenizer.from_pretrained(tiny_marian)


def hf_greedy(model, tok, prompt: str, new: int) -> str:
    """Independent reference: one unpadded prompt through HF generate."""
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=new, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_fill_replaces_only_named_slots():
    assert fill('{"a": {input}} {other}', input="x") == '{"a": x} {other}'


def test_prompt_lm_matches_hf_generate_in_a_padded_batch(gpt2):
    model, tok = gpt2
    lm = PromptLM(model, tok, PromptLMOptions(max_new_tokens=5, batch_size=3))
    assert lm(TASKS) == [hf_greedy(model, tok, t, 5) for t in TASKS]


def test_chat_template_wraps_prompts_with_the_system_prompt(gpt2):
    model, tok = gpt2
    tok = type(tok).from_pretrained(tok.name_or_path)  # a copy: the fixture's tokenizer stays template-free
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    lm = PromptLM(model, tok, PromptLMOptions(system_prompt="be brief", max_new_tokens=3))
    assert lm.uses_chat and lm.render("the cat") == "<system>be brief<user>the cat<assistant>"
    assert not PromptLM(model, tok, PromptLMOptions(chat_template="never")).uses_chat


def test_refiner_sees_the_input_and_the_history(gpt2):
    model, tok = gpt2
    trace = [RefineStep(iteration=i, output=f"draft{i}", feedback=f"fb{i}") for i in range(4)]
    refiner = PromptRefiner(PromptLM(model, tok, PromptLMOptions()), "{input} | {history} | {feedback} |", 2)
    assert refiner.prompt("the task", trace) == \
        "the task | Draft 3: draft2\nFeedback 3: fb2\nDraft 4: draft3\nFeedback 4: fb3 | fb3 |"
    assert render_history(trace[:1], 5) == "Draft 1: draft0\nFeedback 1: fb0"


def test_done_marker_stops_an_item_and_the_refine_prompt_carries_the_history(gpt2):
    model, tok = gpt2
    lm = PromptLM(model, tok, PromptLMOptions(max_new_tokens=4))
    gen = PromptGenerator(lm, "{input}")
    feedback_template = "{input} {output} feedback"
    first_drafts = [hf_greedy(model, tok, t, 4) for t in TASKS]
    feedback = [hf_greedy(model, tok, f"{t} {d} feedback", 4) for t, d in zip(TASKS, first_drafts)]
    # a marker only one item's first feedback contains: that item stops at once, the others go on
    unique = [(i, f.split()[0]) for i, f in enumerate(feedback)
              if f and sum(f.split()[0] in g.lower() for g in feedback) == 1]
    assert unique, feedback
    stop, marker = unique[0]
    critic = PromptCritic(lm, feedback_template, marker)
    refiner = PromptRefiner(lm, "{input} {history} better", 3)
    states = self_refine(TASKS, gen, critic, refiner, max_iterations=3, stop_when_unchanged=False)
    assert states[stop].stopped_because == "criterion" and len(states[stop].trace) == 1
    assert [s.trace[0].output for s in states] == first_drafts
    assert [s.trace[0].feedback for s in states] == feedback
    other = next(i for i in range(len(TASKS)) if i != stop)
    s = states[other]
    assert len(s.trace) > 1
    prompt = f"{TASKS[other]} Draft 1: {first_drafts[other]}\nFeedback 1: {feedback[other]} better"
    assert s.trace[1].output == hf_greedy(model, tok, prompt, 4)


def test_lm_score_critic_equals_minus_hf_loss(gpt2):
    model, tok = gpt2
    critic = LMScoreCritic(model, tok, threshold=-3.0, batch_size=2)
    texts = ["the cat sees a dog", "who", "a big red house is not small and the dog runs"]
    got = critic.score(texts)
    for text, score in zip(texts, got):
        assert tok.bos_token_id is None  # so the critic starts from EOS, as GPT-2 does
        ids = torch.tensor([[tok.eos_token_id] + tok(text)["input_ids"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss
        assert score == pytest.approx(-float(loss), abs=1e-5)
    assert [f.done for f in critic(texts, texts)] == [s >= -3.0 for s in got]


def test_seq2seq_score_equals_minus_hf_loss(marian):
    model, tok = marian
    scorer = Seq2Seq(model, tok, Seq2SeqOptions(batch_size=2))
    pairs = [("the cat", "die katze sieht"), ("who runs ?", "wer"), ("a", "das haus ist klein und rot")]
    got = scorer.score([s for s, _ in pairs], [t for _, t in pairs])
    for (src, tgt), score in zip(pairs, got):
        enc = tok(src, text_target=tgt, return_tensors="pt")
        with torch.no_grad():
            loss = model(**enc).loss
        assert score == pytest.approx(-float(loss), abs=1e-5)


def test_round_trip_critic_scores_chrf_against_the_source():
    import sacrebleu

    class Reverse:
        def decode(self, texts):
            return [t.replace("katze", "cat") for t in texts]

    critic = RoundTripCritic(Reverse(), threshold=50)
    fb = critic(["the cat", "the cat"], ["the katze", "zzz"])
    assert fb[0].score == pytest.approx(sacrebleu.sentence_chrf("the cat", ["the cat"]).score) == 100
    assert fb[0].done and not fb[1].done and fb[1].text == "back-translation: zzz"


def test_keep_best_keeps_the_higher_scored_draft():
    class Gen:
        def __call__(self, inputs):
            return ["v0" for _ in inputs]

    class Ref:
        def __call__(self, inputs, traces, iteration):
            return [f"v{iteration}" for _ in inputs]

    class Critic:  # v1 is worse than v0, v2 better, v3 worse
        scores = {"v0": 0.5, "v1": 0.1, "v2": 0.9, "v3": 0.2}

        def __call__(self, inputs, outputs):
            return [Feedback(score=self.scores[o]) for o in outputs]

    [s] = self_refine(["x"], Gen(), Critic(), Ref(), max_iterations=4, keep_best=True)
    assert [t.output for t in s.trace] == ["v0", "v0", "v2", "v2"]  # unchanged output does not stop keep-best
    assert s.trace[1].info == {"candidate": "v1", "candidate_score": 0.1, "kept": "previous"}
    assert s.stopped_because == "cap" and s.score == 0.9


def test_stage_seq2seq_redecode_keep_best(tiny_marian, marian):
    model, tok = marian
    stage = SelfRefine(generator={"kind": "seq2seq", "model": str(tiny_marian), "num_beams": 2, "max_new_tokens": 8},
                       critic={"kind": "seq2seq_score", "threshold": 0.0},  # never reached: runs to the cap
                       refiner={"kind": "redecode", "seed": 3, "max_new_tokens": 8}, keep_best=True, max_iterations=3)
    assert stage.config.refiner.model is None and set(stage.part_models().values()) == {str(tiny_marian)}
    out = stage.run_batch([SelfRefine.Input(text=t) for t in TASKS])
    enc = tok(TASKS, return_tensors="pt", padding=True)
    ref = tok.batch_decode(model.generate(**enc, num_beams=2, max_new_tokens=8), skip_special_tokens=True)
    assert [o.trace[0].output for o in out] == [r.strip() for r in ref]
    for o in out:
        scores = [t.score for t in o.trace]
        assert scores == sorted(scores) and o.iterations == 3 and o.stopped_because == "cap"
        assert o.text == o.trace[-1].output and o.source_text in TASKS
    tried = [{t.output for t in o.trace} | {t.info["candidate"] for t in o.trace if t.info} for o in out]
    assert any(len(t) > 1 for t in tried)  # re-decoding did propose other drafts
    again = stage.run_batch([SelfRefine.Input(text=t) for t in TASKS])
    assert [o.trace for o in again] == [o.trace for o in out]  # seeded sampling: reproducible


def test_stage_config_checks_and_defaults(tiny_gpt2):
    with pytest.raises(ValidationError, match="reverse"):
        SelfRefine(model="m", critic={"kind": "round_trip"})
    with pytest.raises(ValidationError, match="name a model"):
        SelfRefine()
    with pytest.raises(ValidationError, match="causal LM"):
        SelfRefine(generator={"kind": "seq2seq", "model": "mt"})  # the default critic is a prompted LM
    seq = SelfRefine(generator={"kind": "seq2seq", "model": "mt"}, critic={"kind": "seq2seq_score"})
    assert seq.config.refiner.kind == "redecode" and seq.part_models() == dict.fromkeys(
        ["generator", "critic", "refiner"], "mt")
    rebuilt = stage_from_spec(seq.spec())  # how workers in other processes get the stage
    assert rebuilt.config == seq.config and rebuilt.fingerprint() == seq.fingerprint()
    stage = SelfRefine(model=str(tiny_gpt2), max_iterations=2, critic={"kind": "prompt_lm", "max_new_tokens": 3,
                                                                      "done_marker": "zzz"})
    assert stage.config.refiner.kind == "prompt_lm"
    [out] = stage.run_batch([SelfRefine.Input(text="the cat")])
    assert out.iterations in (1, 2) and out.trace[0].feedback is not None
