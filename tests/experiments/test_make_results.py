"""docs/RESULTS.md is rendered from the records alone: no number on the page that the record does not hold."""
from __future__ import annotations

import copy
import json
import random
import re
import string
import sys
from pathlib import Path

import pytest

from experiments import make_results
from experiments.make_results import SECTIONS
from experiments.page_render import Goal, Section, render_section, section_values

ROOT = Path(__file__).resolve().parents[2]
BY_NAME = {s.name: s for s in SECTIONS}
# A number standing on its own: not part of a name such as bench_load, top-k or asr_stage1_model.pt.
NUMBER = re.compile(r"(?<![\w.\-−])[-−]?\d+(?:\.\d+)?(?![\w])")


def stored(name: str) -> dict:
    return json.loads((ROOT / "docs" / "results" / f"{name}.json").read_text())


def fields(section: Section) -> set[str]:
    """Every placeholder the section's how-text and findings use."""
    names = set()
    for text in [section.how, *[t for f in section.findings for t in (f.then, f.otherwise)]]:
        names |= {name for _, name, _, _ in string.Formatter().parse(text) if name}
    return names


def scramble(value, rng: random.Random):
    """The same shape with new numbers, far from any constant a template might hard-code."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return rng.randint(101, 999)
    if isinstance(value, float):
        return round(rng.uniform(101, 999), 3)
    if isinstance(value, list):
        return [scramble(v, rng) for v in value]
    if isinstance(value, dict):
        return {k: scramble(v, rng) for k, v in value.items()}
    if isinstance(value, str) and re.fullmatch(r"\d+/\d+", value):
        return f"{rng.randint(101, 999)}/{rng.randint(101, 999)}"
    return value


def fake_record(section: Section, seed: int) -> dict:
    """The stored record's keys with scrambled numbers, plus every field an older record lacks."""
    rng = random.Random(seed)
    rec = scramble(copy.deepcopy(stored(section.name)), rng)
    rec.setdefault("setup", {})
    rec.pop("table", None)
    rec |= {"date": "2031-07-19", "seconds": 417.3, "commit": "abc1234", "machine": {"cpus": 113, "gpus": 0}}
    figures = rec["figures"]
    for k in [k for k in figures if k.startswith("ratio_b")]:  # per-size compute, new in the JSON line
        figures.setdefault(k.replace("ratio_b", "compute_ms_b"), round(rng.uniform(101, 999), 1))
    values = section_values(section, rec)
    for name in fields(section) - set(values):
        rec["setup"][name] = rng.randint(101, 999)
    return rec


def allowed_numbers(section: Section, rec: dict) -> list[float]:
    """Numbers the record holds (values, and digits in its keys and strings), goal targets, derived numbers."""
    out: list[float] = []

    def walk(x):
        if isinstance(x, bool):
            return
        if isinstance(x, (int, float)):
            out.append(float(x))
        elif isinstance(x, str):
            out.extend(float(n) for n in re.findall(r"\d+(?:\.\d+)?", x))
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(rec)
    out += [float(g.target) for g in section.goals.values() if isinstance(g.target, (int, float))]
    out += [float(v) for k, v in section_values(section, rec).items()
            if k in section.derived and isinstance(v, (int, float))]
    return out


def prose_numbers(lines: list[str]) -> list[str]:
    """Numbers on the page outside the command's own printed table (the code fence)."""
    text, fenced = [], False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            text.append(line)
    return NUMBER.findall("\n".join(text))


def matches(shown: str, allowed: list[float]) -> bool:
    x = float(shown.replace("−", "-"))
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    tol = 0.5 * 10 ** -decimals + 1e-9
    return any(abs(x - a) <= tol or abs(x - 100 * a) <= tol for a in allowed)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", list(BY_NAME))
def test_every_number_on_the_page_comes_from_the_record(name, seed):
    section = BY_NAME[name]
    rec = fake_record(section, seed)
    lines = render_section(section, rec)
    page = "\n".join(lines)
    assert "n/a" not in page, page  # the fake record has every field, so nothing is left unfilled
    allowed = allowed_numbers(section, rec)
    strays = [n for n in prose_numbers(lines) if not matches(n, allowed)]
    assert not strays, f"numbers not in the record: {strays}\n{page}"
    for k, v in rec["figures"].items():  # the fake figures themselves are on the page
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            assert f"| {k} | {v:g} |" in page


def test_a_hard_coded_figure_is_caught():
    section = copy.copy(BY_NAME["overhead"])
    section.how += " Two earlier runs gave 1.01 and 1.05."
    rec = fake_record(section, 0)
    lines = render_section(section, rec)
    strays = [n for n in prose_numbers(lines) if not matches(n, allowed_numbers(section, rec))]
    assert strays == ["1.01"]  # 1.05 is the section's goal


def _page(name: str, **figures) -> str:
    rec = stored(name)
    rec["figures"] |= figures
    return "\n".join(render_section(BY_NAME[name], rec))


def test_verdict_flips_with_the_figures():
    assert "the claim does not hold here" in _page("distill", word_kd_kept=0.2, seq_kd_kept=0.7)
    assert "word_kd_kept = 0.2, goal ≥ 0.5" in _page("distill", word_kd_kept=0.2, seq_kd_kept=0.7)
    assert "the claim holds" in _page("distill", word_kd_kept=0.6, seq_kd_kept=0.7)
    assert "the claim holds" in _page("overhead", overhead_ratio=1.04)
    assert "overhead_ratio = 1.06, goal ≤ 1.05" in _page("overhead", overhead_ratio=1.06)
    # a goal relative to another figure: every trial identical
    assert "the claim holds" in _page("faults", crash_trials=4, crash_identical=4, crash_items_exactly_once=4)
    assert "crash_identical = 3, goal = crash_trials" in _page("faults", crash_trials=4, crash_identical=3,
                                                              crash_items_exactly_once=4)
    # kept is None when the teacher gains nothing: no verdict rather than a guess
    assert "not judged" in _page("distill", word_kd_kept=None)


def test_findings_flip_with_the_figures():
    worse = _page("refine_quality", asr_wer_before=20.0, asr_repair_threshold_wer_after=25.0)
    better = _page("refine_quality", asr_wer_before=25.0, asr_repair_threshold_wer_after=20.0)
    assert "ASR repair makes WER worse (20 → 25" in worse and "lowers" not in worse
    assert "ASR repair lowers WER (25 → 20" in better and "makes WER worse" not in better
    draft_helps = _page("refine_quality", bleu_deliberation=90.0, bleu_second_pass_empty_draft=80.0)
    assert "reading the draft helps" in draft_helps
    assert "not from reading the draft" in _page("refine_quality", bleu_deliberation=80.0,
                                                 bleu_second_pass_empty_draft=90.0)
    assert "an expert is dead" in _page("moe_quality", **{"moe-scratch-nobal_min_expert_share": 0.0})
    assert "an expert is dead" not in _page("moe_quality", **{"moe-scratch-nobal_min_expert_share": 0.1})
    assert "souping adds to the best fine-tune" in _page("merge_quality", soup_greedy_bleu=93.0,
                                                         soup_best_ingredient_bleu=91.0)


def test_derived_figures_are_computed_from_the_record():
    page = _page("distill", seq_corpus_same_as_gold=0.75, word_kd_kept=0.25, ensemble_gain=3.5)
    assert "differs from gold on 25% of the training sources" in page  # 1 − 0.75
    assert "keeps 25% of that gain" in page
    page = _page("overhead", ratio_b16=1.5, ratio_b64=1.1, ratio_b256=1.01)
    assert "16: 1.50×, 64: 1.10×, 256: 1.01×" in page


def test_a_field_the_record_lacks_renders_na_with_the_command():
    rec = stored("cascade")
    rec["setup"] = {}
    page = "\n".join(render_section(BY_NAME["cascade"], rec))
    assert "micro-batches of n/a" in page
    assert "rerun `python -m benchmarks.bench_cascade`" in page


def test_run_section_stores_setup_commit_and_history(tmp_path, monkeypatch):
    monkeypatch.setattr(make_results, "STORE", tmp_path)
    script = "import json, sys; print('a table'); print(json.dumps({'ratio': float(sys.argv[1]), 'setup': {'n': 3}}))"
    section = Section("toy", "Toy", [sys.executable, "-c", script, "1.5"], "n = {n}", {"ratio": Goal("<=", 2)})
    first = make_results.run_section(section)
    assert first["figures"] == {"ratio": 1.5} and first["setup"] == {"n": 3} and first["history"] == []
    assert first["table"] == ["a table"] and first["machine"]["cpus"] >= 1
    section.command[-1] = "2.5"
    second = make_results.run_section(section)
    assert second["figures"] == {"ratio": 2.5}
    assert second["history"] == [{"date": first["date"], "commit": first["commit"], "figures": {"ratio": 1.5}}]
    assert json.loads((tmp_path / "toy.json").read_text()) == second
    page = "\n".join(render_section(section, second))
    assert "ratio 1.5" in page and "does not hold" in page


def test_make_results_target_calls_the_module():
    makefile = (ROOT / "Makefile").read_text()
    assert "-m experiments.make_results" in makefile.split("results:")[1].split("\n\n")[0]


def test_the_readme_table_is_written_between_its_markers_only(tmp_path):
    from experiments.make_results import README_END, README_START, write_readme_table

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\n| old | 1 |\n{README_END}\nafter\n")
    write_readme_table(["| new | 2 |"], readme)
    assert readme.read_text() == f"intro\n{README_START}\n| new | 2 |\n{README_END}\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        write_readme_table(["| x |"], readme)
