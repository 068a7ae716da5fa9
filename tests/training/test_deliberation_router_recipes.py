"""Recipes deliberation and router (stages/training/deliberation_recipe.py, router_recipe.py)."""
import json
from collections import Counter

import pytest
import torch

from stages.ensemble import EnsembleTranslate, EnsembleTranslateConfig
from stages.translate import SourceText
from stages.deliberate import Deliberate, DeliberateConfig, DraftInput
from stages.methods.ensembling.member_router import MemberRouter
from tests.training.training_fixtures import save_tiny_marian
from stages.training.deliberation_recipe import DeliberationOptions, run as run_deliberation
from stages.training.router_recipe import RouterOptions, run as run_router
from tests.training.training_fixtures import first_and_last_loss, tiny_data  # noqa: F401  (fixture)


def test_deliberation_drafts_by_kind_and_the_stage_loads_the_second_pass(tiny_data, tmp_path):  # noqa: F811
    result = run_deliberation(DeliberationOptions(
        data=tiny_data["train"], model=str(tiny_data["start"]), out=tmp_path, first_pass=str(tiny_data["start"]),
        draft_first_pass=0.25, draft_corrupted=0.25, draft_clean=0.25, draft_empty=0.25,
        steps=25, batch_size=8, lr=3e-3, warmup=2, threads=1))
    rows = [json.loads(line) for line in (tmp_path / "drafts.jsonl").read_text().splitlines()]
    assert len(rows) == 32 and set(Counter(r["kind"] for r in rows)) == {"first_pass", "corrupted", "clean", "empty"}
    for r in rows:
        if r["kind"] == "clean":
            assert r["draft"] == r["target"]
        if r["kind"] == "empty":
            assert r["draft"] == ""
    first, last = first_and_last_loss(result)
    assert last < 0.8 * first
    [out] = Deliberate(DeliberateConfig(model=str(tmp_path), device="cpu", max_new_tokens=8)).process(
        [DraftInput(source_text="the cat sat", text="sat cat")])
    assert isinstance(out.text, str)


def test_deliberation_needs_a_drafter_for_first_pass_drafts(tiny_data, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="-p first_pass=DIR"):
        DeliberationOptions(data=tiny_data["train"], model=str(tiny_data["start"]), out=tmp_path)


def test_router_learns_to_lower_the_ensemble_nll_and_loads(tiny_data, tmp_path):  # noqa: F811
    members = [str(save_tiny_marian(tmp_path / f"m{i}", tiny_data["tokenizer"], seed=20 + i)) for i in range(2)]
    result = run_router(RouterOptions(data=tiny_data["train"], model=members[0], out=tmp_path / "router",
                                      members=",".join(members), steps=60, hidden=8, threads=1))
    assert result["final_loss"] < result["first_loss"]
    router = MemberRouter.load(tmp_path / "router")
    weights = router.weights(torch.randn(3, router.in_dim))
    assert weights.shape == (3, 2) and torch.allclose(weights.sum(-1), torch.ones(3))
    stage = EnsembleTranslate(EnsembleTranslateConfig(members=members, router=str(tmp_path / "router"),
                                                      device="cpu", max_new_tokens=6, num_beams=2))
    [out] = stage.process([SourceText(text="the cat sat")])
    assert isinstance(out.text, str)
