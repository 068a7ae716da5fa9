"""Deliberation: source + draft joined for the second pass; empty drafts, first-pass drafts, repeated passes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows import run
from stages.deliberate import Deliberate
from stages.methods.refinement.second_pass import fit_draft, join_source_draft
from stages.translate import Translate
from stages.testing.tiny_checkpoints import save_marian
from stages.testing.tiny_tokenizers import word_tokenizer

DEMO_MT = Path(__file__).resolve().parents[2] / "assets" / "models" / "mt-en-de"
NEW = 12  # random models ramble: short outputs keep source + draft inside 64 positions
SOURCES = ["the cat sees a dog .", "who runs ?", "the big red house is not small"]


@pytest.fixture(scope="module")
def second_pass(tmp_path_factory):
    return save_marian(tmp_path_factory.mktemp("second"), seed=7)


def hf_beam(path, texts: list[str], beams: int = 4) -> list[str]:
    """Independent reference: the second pass run by hand on the joined text."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model, tok = AutoModelForSeq2SeqLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    out = []
    for text in texts:
        gen = model.generate(**tok([text], return_tensors="pt"), num_beams=beams, max_new_tokens=NEW)
        out.append(tok.decode(gen[0], skip_special_tokens=True).strip())
    return out


def test_join_tokenises_as_the_two_encodings_back_to_back():
    assert join_source_draft(" a b ", " c ", "</s>") == "a b</s> c"
    assert join_source_draft("a", "  ", "</s>") == "a</s>"
    toks = [word_tokenizer()]
    if (DEMO_MT / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        toks.append(AutoTokenizer.from_pretrained(DEMO_MT))
    for tok in toks:
        for src, draft in [("the cat sees a dog .", "die katze sieht"), ("who runs ?", "wer läuft ?")]:
            joined = tok(join_source_draft(src, draft, tok.eos_token))["input_ids"]
            assert joined == tok(src)["input_ids"] + tok(draft)["input_ids"]


def test_fit_draft_cuts_whole_words_at_the_end_until_the_join_fits():
    tok = word_tokenizer()
    src, draft = SOURCES[0], "die katze sieht einen hund die katze sieht"  # 6 + </s> + 8 + </s> = 16 tokens

    def n_tokens(d: str) -> int:
        return len(tok(join_source_draft(src, d, "</s>"))["input_ids"])

    assert n_tokens(draft) == 16
    assert fit_draft(tok, src, draft, "</s>", 16) == draft  # fits: unchanged
    assert fit_draft(tok, src, draft, "</s>", 12) == "die katze sieht einen"  # the longest prefix that fits
    assert n_tokens(fit_draft(tok, src, draft, "</s>", 12)) == 12
    assert fit_draft(tok, src, draft, "</s>", 9) == "die"
    assert fit_draft(tok, src, draft, "</s>", 8) == ""  # the source alone is 8: the draft goes, never the source
    assert fit_draft(tok, src, draft, "</s>", 3) == ""


def test_empty_draft_runs_and_equals_the_model_on_source_and_separator(second_pass):
    stage = Deliberate(model=str(second_pass), max_new_tokens=NEW)
    out = stage.run_batch([Deliberate.Input(source_text=s) for s in SOURCES])
    assert [o.text for o in out] == hf_beam(second_pass, [s + "</s>" for s in SOURCES])
    assert all(o.draft == "" and o.trace[0].info["draft_from"] == "none" for o in out)
    assert [len(o.trace) for o in out] == [2, 2, 2]


def test_second_pass_reads_source_and_draft(second_pass):
    drafts = ["die katze", "", "das haus ist klein"]
    out = Deliberate(model=str(second_pass), num_beams=2, max_new_tokens=NEW).run_batch(
        [Deliberate.Input(source_text=s, text=d) for s, d in zip(SOURCES, drafts)])
    expected = hf_beam(second_pass, [join_source_draft(s, d, "</s>") for s, d in zip(SOURCES, drafts)], beams=2)
    assert [o.text for o in out] == expected
    assert [o.trace[0].output for o in out] == drafts and [o.draft for o in out] == drafts
    assert all(o.trace[1].output == o.text for o in out)


def test_missing_drafts_come_from_the_first_pass_model(second_pass, tiny_marian):
    stage = Deliberate(model=str(second_pass), first_pass_model=str(tiny_marian), max_new_tokens=NEW)
    out = stage.run_batch([Deliberate.Input(source_text=SOURCES[0]), Deliberate.Input(source_text=SOURCES[1],
                                                                                      text="wer")])
    assert out[0].draft == hf_beam(tiny_marian, [SOURCES[0]])[0]
    assert out[0].trace[0].info["draft_from"] == "first_pass_model"
    assert out[1].draft == "wer" and out[1].trace[0].info["draft_from"] == "input"


def test_repeated_passes_feed_each_output_back(second_pass):
    stage = Deliberate(model=str(second_pass), passes=4, max_new_tokens=NEW)
    [out] = stage.run_batch([Deliberate.Input(source_text=SOURCES[2])])
    for prev, step in zip(out.trace, out.trace[1:]):
        assert step.output == hf_beam(second_pass, [join_source_draft(SOURCES[2], prev.output, "</s>")])[0]
    outputs = [t.output for t in out.trace]
    if out.stopped_because == "converged":
        assert outputs[-1] == outputs[-2]
    else:
        assert out.stopped_because == "cap" and len(outputs) == 5


def test_missing_source_fails_only_that_item(second_pass):
    out = Deliberate(model=str(second_pass), max_new_tokens=NEW).run_batch([Deliberate.Input(text="a draft"),
                                                        Deliberate.Input(source_text="the cat")])
    assert out[0].kind == "bad_input" and "source_text" in out[0].message
    assert out[1].source_text == "the cat"


def test_translate_then_deliberate_through_the_flow(tmp_path, tiny_marian, second_pass):
    pipe = Translate(model=str(tiny_marian), num_beams=2, max_new_tokens=NEW) >> Deliberate(
        model=str(second_pass), max_new_tokens=NEW)
    assert pipe.nodes["deliberate"].bindings == {"source_text": ("mt", "source_text"), "text": ("mt", "text")}
    items = [{"id": f"s{i}", "text": s} for i, s in enumerate(SOURCES)]
    result = run(pipe, items, out=str(tmp_path), job_id="delib", batch_size=2)
    assert result.exit_code == 0
    rows = [json.loads(x) for x in (tmp_path / "delib" / "outputs.jsonl").read_text().splitlines()]
    for row in rows:
        d = row["deliberate"]
        assert d["draft"] == row["mt"]["text"] == d["trace"][0]["output"]
        assert d["text"] == d["trace"][-1]["output"] and d["source_text"] == row["mt"]["source_text"]
