"""Recipes mt, bagged, checkpoints (stages/training/mt_recipe.py, member_recipes.py) on tiny data."""
import json

import torch
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM

from stages.methods.ensembling import load_member
from stages.training.member_recipes import BaggedOptions, CheckpointOptions, run_bagged, run_checkpoints
from stages.training.mt_recipe import MTOptions, run
from tests.training.training_fixtures import first_and_last_loss, tiny_data  # noqa: F401  (fixture)

FAST = dict(steps=30, batch_size=8, lr=3e-3, warmup=2, threads=1)


def test_mt_fine_tune_lowers_the_loss_and_saves_a_loadable_model(tiny_data, tmp_path):  # noqa: F811
    result = run(MTOptions(data=tiny_data["train"], model=str(tiny_data["start"]), out=tmp_path / "mt",
                           dev=tiny_data["dev"], **FAST))
    first, last = first_and_last_loss(result)
    assert last < 0.8 * first
    assert "dev_bleu" in result["evals"][-1]
    trained = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "mt")
    start = AutoModelForSeq2SeqLM.from_pretrained(tiny_data["start"])
    assert not torch.allclose(trained.model.shared.weight, start.model.shared.weight)


def test_mt_from_a_config_dir_starts_from_random_weights(tiny_data, tmp_path):  # noqa: F811
    opts = dict(data=tiny_data["train"], model=str(tiny_data["config_only"]), **{**FAST, "steps": 2})
    a = run(MTOptions(out=tmp_path / "a", seed=1, **opts))
    b = run(MTOptions(out=tmp_path / "b", seed=2, **opts))
    assert a["steps"] == b["steps"] == 2
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert not torch.equal(wa["model.shared.weight"], wb["model.shared.weight"])  # two seeds, two inits
    assert load_member(tmp_path / "a", device="cpu").model.config.d_model == 32


def test_bagged_members_see_different_resamples_and_differ(tiny_data, tmp_path):  # noqa: F811
    result = run_bagged(BaggedOptions(data=tiny_data["train"], model=str(tiny_data["start"]), out=tmp_path / "bag",
                                      k=2, **{**FAST, "steps": 4}))
    members = json.loads((tmp_path / "bag" / "members.json").read_text())["members"]
    assert members == [str(tmp_path / "bag" / f"member-{i}") for i in range(2)]
    assert all(m["unique_pairs"] < 32 for m in result["members"])  # resampled with replacement
    w0, w1 = (load_file(f"{m}/model.safetensors") for m in members)
    assert not torch.allclose(w0["model.shared.weight"], w1["model.shared.weight"])
    again = run_bagged(BaggedOptions(data=tiny_data["train"], model=str(tiny_data["start"]), out=tmp_path / "bag",
                                     k=2, **{**FAST, "steps": 4}))
    assert again["members"][0]["unique_pairs"] is None  # finished members are skipped on a rerun


def test_checkpoint_series_are_loadable_members(tiny_data, tmp_path):  # noqa: F811
    result = run_checkpoints(CheckpointOptions(data=tiny_data["train"], model=str(tiny_data["start"]),
                                               out=tmp_path / "ckpt", save_every=3, **{**FAST, "steps": 7}))
    assert [m.rsplit("/", 1)[-1] for m in result["members"]] == ["checkpoint-3", "checkpoint-6", "ckpt"]
    members = [load_member(m, device="cpu") for m in result["members"]]
    w3, w6 = (m.model.model.shared.weight for m in members[:2])
    assert not torch.allclose(w3, w6)


def test_bagged_member_i_is_plain_training_on_resample_i(tiny_data, tmp_path):  # noqa: F811
    """Member 1 = the mt recipe on bootstrap resample 1 with seed + 1; on the full data it would differ."""
    from stages.training.member_recipes import bootstrap
    from tests.training.training_fixtures import write_jsonl

    opts = dict(model=str(tiny_data["start"]), **{**FAST, "steps": 4})
    run_bagged(BaggedOptions(data=tiny_data["train"], out=tmp_path / "bag", k=2, bootstrap_seed=7, seed=5, **opts))
    resamples = [bootstrap(tiny_data["pairs"], 7 + i) for i in range(2)]
    assert resamples[0] != resamples[1]  # two members, two different resamples
    by_hand = write_jsonl(tmp_path / "resample-1.jsonl", resamples[1])
    run(MTOptions(data=by_hand, out=tmp_path / "by-hand", seed=6, **opts))
    run(MTOptions(data=tiny_data["train"], out=tmp_path / "full", seed=6, **opts))
    member = load_file(tmp_path / "bag" / "member-1" / "model.safetensors")
    same = load_file(tmp_path / "by-hand" / "model.safetensors")
    full = load_file(tmp_path / "full" / "model.safetensors")
    assert all(torch.equal(member[k], same[k]) for k in member)
    assert not torch.equal(member["model.shared.weight"], full["model.shared.weight"])


def test_checkpoint_members_are_one_run_and_decode_as_an_ensemble(tiny_data, tmp_path):  # noqa: F811
    from stages.ensemble import EnsembleTranslate
    from stages.translate import SourceText

    opts = dict(data=tiny_data["train"], model=str(tiny_data["start"]), **{**FAST, "steps": 7})
    result = run_checkpoints(CheckpointOptions(out=tmp_path / "ckpt", save_every=3, **opts))
    assert json.loads((tmp_path / "ckpt" / "members.json").read_text())["members"] == result["members"]
    run(MTOptions(out=tmp_path / "plain", **opts))  # the same run without checkpoints ends in the same weights
    last, plain = load_file(tmp_path / "ckpt" / "model.safetensors"), load_file(tmp_path / "plain" / "model.safetensors")
    assert all(torch.equal(last[k], plain[k]) for k in last)
    weights = [load_file(f"{m}/model.safetensors")["model.shared.weight"] for m in result["members"]]
    assert all(not torch.equal(weights[i], weights[j]) for i in range(3) for j in range(i + 1, 3))
    sources = [SourceText(text=s) for s, _ in tiny_data["pairs"][:4]]
    ens = EnsembleTranslate(members=result["members"], num_beams=1, max_new_tokens=8).process(sources)
    alone = EnsembleTranslate(members=result["members"][-1:], num_beams=1, max_new_tokens=8).process(sources)
    assert len(ens) == 4 and all(e.source_text == s.text for e, s in zip(ens, sources))
    assert any(abs(e.score - a.score) > 1e-4 for e, a in zip(ens, alone))  # the earlier checkpoints take part
