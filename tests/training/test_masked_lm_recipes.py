"""Recipes cmlm and mlm (stages/training/masked_lm_recipes.py): trained folders load in the stages that use them."""
import json

from transformers import AutoModelForMaskedLM

from stages.masked_diffusion import MaskedDiffusionConfig, MaskedDiffusionRepair, RepairInput
from stages.mask_predict import MaskPredict, MaskPredictConfig, MaskPredictInput
from stages.testing.tiny_checkpoints import save_bert_mlm
from stages.training.masked_lm_recipes import CMLMOptions, MLMOptions, run_cmlm, run_mlm
from tests.training.training_fixtures import first_and_last_loss, tiny_data  # noqa: F401  (fixture)


def test_cmlm_trains_and_the_mask_predict_stage_loads_it(tiny_data, tmp_path):  # noqa: F811
    result = run_cmlm(CMLMOptions(data=tiny_data["train"], model=str(tiny_data["start"]), out=tmp_path,
                                  dev=tiny_data["dev"], d_model=32, layers=1, heads=2, ffn=64, steps=30,
                                  batch_size=8, lr=3e-3, warmup=2, threads=1, eval_iterations=2))
    first, last = first_and_last_loss(result)
    assert last < 0.8 * first
    assert "dev_bleu_T2" in result["evals"][-1]
    assert json.loads((tmp_path / "cmlm_config.json").read_text())["d_model"] == 32
    [out] = MaskPredict(MaskPredictConfig(model=str(tmp_path), iterations=2, device="cpu")).process(
        [MaskPredictInput(text="the cat sat")])
    assert out.source_text == "the cat sat" and out.iterations >= 1


def test_mlm_trains_and_the_masked_diffusion_stage_loads_it(tmp_path):
    start = save_bert_mlm(tmp_path / "bert")
    (tmp_path / "text.txt").write_text("\n".join(["the cat sees the dog", "a small red car", "who reads a book ?",
                                                   "the man and the woman", "one two three"] * 6) + "\n")
    result = run_mlm(MLMOptions(data=tmp_path / "text.txt", model=str(start), out=tmp_path / "mlm", steps=40,
                                batch_size=8, lr=5e-3, warmup=2, threads=1, mask_prob=0.3))
    first, last = first_and_last_loss(result)
    assert last < first
    assert AutoModelForMaskedLM.from_pretrained(tmp_path / "mlm").config.hidden_size == 32
    [out] = MaskedDiffusionRepair(MaskedDiffusionConfig(model=str(tmp_path / "mlm"), device="cpu")).process(
        [RepairInput(text="the cat sees the dog")])
    assert out.source_text == "the cat sees the dog" and isinstance(out.text, str)
