"""Recipes word-kd and seq-kd (stages/training/distill_recipes.py) against plain transformers calls."""
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from tests.training.training_fixtures import save_tiny_marian
from stages.training.distill_recipes import SeqKDOptions, WordKDOptions, run_seq_kd, run_word_kd
from stages.training.train_loop import batch_indices
from tests.training.training_fixtures import tiny_data  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def teachers(tiny_data):  # noqa: F811
    return [str(save_tiny_marian(tiny_data["root"] / f"teacher-{i}", tiny_data["tokenizer"], seed=10 + i))
            for i in range(2)]


@pytest.fixture(scope="module")
def student_without_dropout(tiny_data):  # noqa: F811
    """The start model with dropout 0, so the recipe's first loss is a deterministic function of the weights."""
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_data["start"])
    model.config.dropout = model.config.attention_dropout = model.config.activation_dropout = 0.0
    folder = tiny_data["root"] / "student"
    model.save_pretrained(folder)
    tiny_data["tokenizer"].save_pretrained(folder)
    return folder


def test_word_kd_first_loss_equals_a_hand_computation(tiny_data, teachers, student_without_dropout, tmp_path):  # noqa: F811
    alpha, temperature, batch_size = 0.3, 2.0, 4
    result = run_word_kd(WordKDOptions(data=tiny_data["train"], model=str(student_without_dropout), out=tmp_path,
                                       teacher=",".join(teachers), alpha=alpha, temperature=temperature,
                                       label_smoothing=0.0, steps=1, batch_size=batch_size, warmup=0, threads=1))
    # The same first batch, by hand: the teacher is the uniform mixture of the members' probabilities, tempered.
    tok = AutoTokenizer.from_pretrained(student_without_dropout)
    pairs = [tiny_data["pairs"][i] for i in batch_indices(32, batch_size, 0, seed=0)]
    enc = tok([s for s, _ in pairs], text_target=[t for _, t in pairs], return_tensors="pt", padding=True)
    labels = enc.pop("labels")
    labels[labels == tok.pad_token_id] = -100
    student = AutoModelForSeq2SeqLM.from_pretrained(student_without_dropout).eval()
    with torch.no_grad():
        z = student(**enc, labels=labels).logits
        mixture = torch.stack([AutoModelForSeq2SeqLM.from_pretrained(t).eval()(**enc, labels=labels).logits.softmax(-1)
                               for t in teachers]).mean(0)
    keep = labels != -100
    p = mixture[keep] ** (1 / temperature)
    p = p / p.sum(-1, keepdim=True)
    kl = (p * (p.log() - F.log_softmax(z[keep] / temperature, -1))).sum(-1).mean()
    ce = F.cross_entropy(z[keep], labels[keep])
    expected = alpha * temperature ** 2 * kl + (1 - alpha) * ce
    assert result["losses"][0]["loss"] == pytest.approx(expected.item(), abs=1e-4)


def test_seq_kd_targets_are_the_teachers_beam_outputs(tiny_data, teachers, tmp_path):  # noqa: F811
    result = run_seq_kd(SeqKDOptions(data=tiny_data["train"], model=str(tiny_data["start"]), out=tmp_path,
                                     teacher=teachers[0], beams=3, max_new_tokens=12, steps=3, batch_size=8,
                                     threads=1))
    rows = [json.loads(line) for line in (tmp_path / "distilled.jsonl").read_text().splitlines()]
    teacher = AutoModelForSeq2SeqLM.from_pretrained(teachers[0]).eval()
    tok = AutoTokenizer.from_pretrained(teachers[0])
    sources = [s for s, _ in tiny_data["pairs"]]
    with torch.no_grad():
        out = teacher.generate(**tok(sources, return_tensors="pt", padding=True), num_beams=3, max_new_tokens=12)
    assert [r["target"] for r in rows] == tok.batch_decode(out, skip_special_tokens=True)
    assert [r["source"] for r in rows] == sources
    assert result["steps"] == 3 and AutoModelForSeq2SeqLM.from_pretrained(tmp_path) is not None


def test_word_kd_refuses_a_missing_teacher(tiny_data, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="teacher member not found"):
        WordKDOptions(data=tiny_data["train"], model=str(tiny_data["start"]), out=tmp_path, teacher="nowhere")
