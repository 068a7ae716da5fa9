"""Word-level KD from an ensemble teacher (stages/training/word_kd.py) and the distillation flows' pieces."""
import math

import pytest
import torch

from stages.methods.ensembling import LinearCombiner, LogLinearCombiner, load_member
from stages.training.word_kd import EnsembleTeacher, decoder_inputs_from_labels, kd_loss, word_kd_loss
from stages.methods.ensembling.member_sessions import Seq2SeqSession
from stages.testing.tiny_checkpoints import MARIAN_MEMBER, save_marian
from stages.testing.tiny_tokenizers import bpe_tokenizer, toy_corpus
from tests.ensemble_fixtures import marians, one_torch_thread  # noqa: F401  (fixtures)


def _hand_kd(student, teacher_probs, labels, alpha, temperature, ignore=-100):
    """Plain-Python KL and CE over the non-padding positions, then the mix."""
    kls, ces = [], []
    for b, row in enumerate(labels):
        for t, label in enumerate(row):
            if label == ignore:
                continue
            z = [v / temperature for v in student[b][t]]
            log_norm = math.log(sum(math.exp(v) for v in z))
            q = [v - log_norm for v in z]
            p = teacher_probs[b][t]
            kls.append(sum(pi * (math.log(pi) - qi) for pi, qi in zip(p, q) if pi > 0))
            raw_norm = math.log(sum(math.exp(v) for v in student[b][t]))
            ces.append(raw_norm - student[b][t][label])
    kl, ce = sum(kls) / len(kls), sum(ces) / len(ces)
    return kl, ce, alpha * temperature ** 2 * kl + (1 - alpha) * ce


def test_kd_loss_matches_hand_computation():
    student = [[[1.0, -0.5, 0.25, 2.0], [0.0, 0.3, -1.2, 0.7], [5.0, 5.0, 5.0, 5.0]],
               [[-0.4, 1.1, 0.9, 0.0], [2.2, -2.0, 0.1, 0.4], [0.6, 0.6, -0.3, 1.5]]]
    # Second row of the first input gives one token no mass: that term must count as 0, not NaN.
    teacher = [[[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]],
               [[0.7, 0.1, 0.1, 0.1], [0.05, 0.05, 0.6, 0.3], [0.4, 0.3, 0.2, 0.1]]]
    labels = [[3, 0, -100], [1, 2, 0]]
    alpha, temperature = 0.3, 2.0
    kl, ce, total = _hand_kd(student, teacher, labels, alpha, temperature)
    out = kd_loss(torch.tensor(student), torch.tensor(teacher).log(), torch.tensor(labels), alpha=alpha,
                  temperature=temperature)
    assert out.tokens == 5
    assert out.kl.item() == pytest.approx(kl, rel=1e-5)
    assert out.ce.item() == pytest.approx(ce, rel=1e-5)
    assert out.loss.item() == pytest.approx(total, rel=1e-5)
    # The T² factor and the α mix, read off the parts.
    assert out.loss.item() == pytest.approx(alpha * 4.0 * out.kl.item() + (1 - alpha) * out.ce.item(), rel=1e-6)
    assert kd_loss(torch.tensor(student), torch.tensor(teacher).log(), torch.tensor(labels), alpha=1.0,
                   temperature=temperature).loss.item() == pytest.approx(4.0 * kl, rel=1e-5)
    assert kd_loss(torch.tensor(student), torch.tensor(teacher).log(), torch.tensor(labels), alpha=0.0,
                   temperature=temperature).loss.item() == pytest.approx(ce, rel=1e-5)


def test_kd_loss_ignores_padding_positions():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 4, 6, generator=g)
    teacher = torch.log_softmax(torch.randn(2, 4, 6, generator=g), dim=-1)
    labels = torch.tensor([[1, 2, -100, -100], [3, 4, 5, -100]])
    base = kd_loss(student, teacher, labels, alpha=0.5, temperature=1.5)
    pad = labels == -100
    student2, teacher2 = student.clone(), teacher.clone()
    student2[pad] = torch.randn(int(pad.sum()), 6, generator=g) * 10
    teacher2[pad] = torch.log_softmax(torch.randn(int(pad.sum()), 6, generator=g), dim=-1)
    moved = kd_loss(student2, teacher2, labels, alpha=0.5, temperature=1.5)
    assert moved.loss.item() == pytest.approx(base.loss.item(), abs=1e-6)
    assert base.tokens == 5
    # ... while changing a counted position does change it.
    student2[0, 0] += torch.tensor([3.0, 0, 0, 0, 0, 0])
    assert kd_loss(student2, teacher2, labels, 0.5, 1.5).loss.item() != pytest.approx(base.loss.item(), abs=1e-4)


def test_kd_loss_refuses_bad_arguments():
    x, labels = torch.zeros(1, 2, 3), torch.tensor([[0, 1]])
    with pytest.raises(ValueError, match="alpha"):
        kd_loss(x, x, labels, alpha=1.5)
    with pytest.raises(ValueError, match="vocabulary"):
        kd_loss(x, torch.zeros(1, 2, 4), labels)
    with pytest.raises(ValueError, match="no target token"):
        kd_loss(x, x, torch.full((1, 2), -100))


def _batch(member, pairs):
    tok = member.tokenizer
    batch = tok([s for s, _ in pairs], text_target=[t for _, t in pairs], return_tensors="pt", padding=True)
    batch["labels"][batch["labels"] == tok.pad_token_id] = -100
    return dict(batch)


PAIRS = [("the cat sat on the mat", "a dog ran"), ("big red car", "the old man reads a book today"),
         ("bird sings", "fish swims slowly")]


@pytest.mark.parametrize("combiner,weights", [("linear", [0.5, 0.3, 0.2]), ("log_linear", [1.0, -0.5, 0.8])])
def test_teacher_equals_decoding_combination(marians, combiner, weights):  # noqa: F811
    """Teacher forcing gives, at every gold prefix, the distribution the ensemble decoder combines."""
    batch = _batch(marians[0], PAIRS)
    cfg = marians[0].model.config
    dec_in = decoder_inputs_from_labels(batch["labels"], cfg.decoder_start_token_id, cfg.pad_token_id)
    teacher = EnsembleTeacher(marians, weights=weights, combiner=combiner).log_probs(
        batch["input_ids"], batch["attention_mask"], dec_in)
    gold = batch["labels"].masked_fill(batch["labels"] == -100, cfg.pad_token_id)
    sessions = [Seq2SeqSession(m, [s for s, _ in PAIRS], 1, use_cache=False, decoder_start_token_id=0)
                for m in marians]
    w = torch.tensor([weights] * len(PAIRS))
    combine = LinearCombiner() if combiner == "linear" else LogLinearCombiner()
    keep = batch["labels"] != -100
    for t in range(gold.shape[1]):
        step = combine(torch.stack([s.next_log_probs(gold[:, :t]) for s in sessions]), w)
        rows = keep[:, t]
        torch.testing.assert_close(teacher[rows, t], step[rows], atol=1e-5, rtol=1e-5)


def test_teacher_temperature_and_zero_weights(marians):  # noqa: F811
    batch = _batch(marians[0], PAIRS)
    dec_in = decoder_inputs_from_labels(batch["labels"], 0, 0)
    args = (batch["input_ids"], batch["attention_mask"], dec_in)
    at_one = EnsembleTeacher(marians[:2], weights=[1.0, 3.0]).log_probs(*args)
    at_three = EnsembleTeacher(marians[:2], weights=[1.0, 3.0], temperature=3.0).log_probs(*args)
    torch.testing.assert_close(at_three, torch.log_softmax(at_one / 3.0, dim=-1))
    assert at_three.exp().sum(-1).sub(1).abs().max() < 1e-5
    # An unnormalised combiner (Marian-style log-linear sum) still yields a distribution, the normalised one.
    raw = EnsembleTeacher(marians[:2], weights=[1.0, 3.0], combiner=LogLinearCombiner(normalize=False))
    normed = EnsembleTeacher(marians[:2], weights=[1.0, 3.0], combiner="log_linear")
    torch.testing.assert_close(raw.log_probs(*args), normed.log_probs(*args))
    assert raw.log_probs(*args).exp().sum(-1).sub(1).abs().max() < 1e-5
    # A zero-weight member is never run and changes nothing.
    calls = []
    hook = marians[2].model.register_forward_hook(lambda *a: calls.append(1))
    try:
        with_zero = EnsembleTeacher(marians, weights=[1.0, 3.0, 0.0]).log_probs(*args)
    finally:
        hook.remove()
    assert calls == []
    torch.testing.assert_close(with_zero, at_one)


def test_kl_is_zero_when_student_is_the_one_member_teacher(tmp_path):
    tok = bpe_tokenizer("metaspace", 120)
    path = save_marian(tmp_path / "m", tok, seed=3, **MARIAN_MEMBER)
    teacher = EnsembleTeacher([load_member(path, device="cpu")], temperature=2.0)
    student = load_member(path, device="cpu").model.eval()
    out = word_kd_loss(student, teacher, _batch(teacher.members[0], PAIRS), alpha=1.0)
    assert out.kl.item() == pytest.approx(0.0, abs=1e-6)
    other = load_member(save_marian(tmp_path / "o", tok, seed=4, **MARIAN_MEMBER), device="cpu").model.eval()
    assert word_kd_loss(other, teacher, _batch(teacher.members[0], PAIRS), alpha=1.0).kl.item() > 1e-2


def test_word_kd_steps_reduce_kl(marians, tmp_path):  # noqa: F811
    teacher = EnsembleTeacher(marians, combiner="linear", temperature=2.0)
    student = load_member(save_marian(tmp_path / "s", marians[0].tokenizer, seed=11, **MARIAN_MEMBER),
                          device="cpu").model.train()
    src = toy_corpus(16, seed=5)
    batch = _batch(marians[0], list(zip(src, reversed(src))))
    torch.manual_seed(0)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    grads_reach_teacher = []
    kls = []
    for _ in range(15):
        out = word_kd_loss(student, teacher, batch, alpha=0.9)
        opt.zero_grad()
        out.loss.backward()
        grads_reach_teacher.append(any(p.grad is not None for m in marians for p in m.model.parameters()))
        opt.step()
        kls.append(out.kl.item())
    assert not any(grads_reach_teacher)
    student.eval()
    final = word_kd_loss(student, teacher, batch, alpha=0.9).kl.item()
    assert final < 0.6 * kls[0], (kls[0], final)


def test_decoder_inputs_match_marian_shift(marians):  # noqa: F811
    batch = _batch(marians[0], PAIRS)
    model = marians[0].model
    ours = decoder_inputs_from_labels(batch["labels"], model.config.decoder_start_token_id,
                                      model.config.pad_token_id)
    assert torch.equal(ours, model.prepare_decoder_input_ids_from_labels(labels=batch["labels"]))


def test_word_kd_training_loop_runs_the_members_budget(marians, tmp_path):  # noqa: F811
    """The flow's loop on tiny models: the given number of steps, a saved student that moved from its start."""
    from safetensors.torch import load_file

    from experiments.train_distill import train_word_kd
    from demo.train_demo_mt import MTTrainConfig

    init = save_marian(tmp_path / "init", marians[0].tokenizer, seed=7, **MARIAN_MEMBER)
    src = toy_corpus(40, seed=2)
    cfg = MTTrainConfig(out_dir=tmp_path / "student", init_from=init, max_steps=3, batch_size=8, warmup=1,
                        threads=1, dev_sentences=3)
    teacher = EnsembleTeacher(marians, temperature=2.0)
    result = train_word_kd(cfg, teacher, list(zip(src, reversed(src))), alpha=0.5)
    assert result["steps"] == 3
    before, after = load_file(init / "model.safetensors"), load_file(tmp_path / "student" / "model.safetensors")
    moved = [k for k in before if k in after and not torch.allclose(before[k].float(), after[k].float(), atol=1e-3)]
    assert moved, "no weight changed"
    assert load_member(tmp_path / "student", device="cpu").model.config.d_model == 32


def test_missing_teacher_names_the_training_command(tmp_path):
    from experiments.train_distill import steps_for, teacher_dirs

    with pytest.raises(FileNotFoundError, match="experiments.train_members bagging"):
        teacher_dirs(tmp_path, k=2)
    assert steps_for(6000, 16) == 16 * 94  # the members' budget: ceil(6000 / 64) steps per epoch
