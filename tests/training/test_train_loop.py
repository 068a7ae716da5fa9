"""The one training loop (stages/training/train_loop.py): schedule, batch order, checkpoints, resume."""
import json
import math

import pytest
import torch

from stages.training.train_loop import LoopConfig, Trainee, batch_indices, checkpoint_dirs, fit, lr_factor


def test_lr_factor_warms_up_linearly_then_follows_the_cosine_to_the_floor():
    assert lr_factor(0, 0.0, warmup=4, min_lr_ratio=0.1) == pytest.approx(0.25)
    assert lr_factor(3, 0.0, warmup=4, min_lr_ratio=0.1) == pytest.approx(1.0)
    # halfway: floor + (1 - floor) * 0.5 * (1 + cos(pi / 2))
    assert lr_factor(50, 0.5, warmup=4, min_lr_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(99, 1.0, warmup=4, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(10, 0.25, warmup=0, min_lr_ratio=0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_batches_cover_each_epoch_once_and_depend_only_on_seed_and_step():
    n, bs = 10, 4
    first_epoch = [i for s in range(2) for i in batch_indices(n, bs, s, seed=1)] + batch_indices(n, bs, 2, 1)[:2]
    assert sorted(first_epoch) == list(range(n))
    assert batch_indices(n, bs, 7, seed=1) == batch_indices(n, bs, 7, seed=1)
    assert batch_indices(n, bs, 0, seed=1) != batch_indices(n, bs, 0, seed=2)


class _Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(3, 1)


def _trainee(seen: list):
    torch.manual_seed(0)
    model = _Regression()
    target = torch.tensor([[1.0], [-2.0], [0.5]])

    def loss(m, batch, step):
        seen.append((step, tuple(batch)))
        x = torch.tensor([[float(b), 1.0, -float(b) / 2] for b in batch])
        return ((m.w(x) - x @ target) ** 2).mean()

    def save(m, folder):
        from safetensors.torch import save_model

        folder.mkdir(parents=True, exist_ok=True)
        save_model(m, str(folder / "model.safetensors"))

    return Trainee(model, loss, save)


def test_loss_decreases_and_checkpoints_are_written(tmp_path):
    cfg = LoopConfig(steps=40, batch_size=4, lr=0.05, warmup=2, save_every=10, log_every=5)
    result = fit(_trainee([]), list(range(12)), cfg, tmp_path / "run")
    assert result.losses[-1]["loss"] < 0.2 * result.losses[0]["loss"]
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["checkpoint-10", "checkpoint-20", "checkpoint-30"]
    assert json.loads((tmp_path / "run" / "train.json").read_text())["steps"] == 40


def test_resume_continues_from_the_last_checkpoint_with_the_same_batches_and_weights(tmp_path):
    cfg = LoopConfig(steps=30, batch_size=4, lr=0.05, warmup=2, save_every=10)
    straight_seen = []
    straight = _trainee(straight_seen)
    fit(straight, list(range(12)), cfg, tmp_path / "straight")

    interrupted_seen = []
    interrupted = _trainee(interrupted_seen)

    def crash_at_25(m, batch, step, loss=interrupted.loss):
        if step == 25:
            raise KeyboardInterrupt
        return loss(m, batch, step)

    with pytest.raises(KeyboardInterrupt):
        fit(Trainee(interrupted.model, crash_at_25, interrupted.save), list(range(12)), cfg, tmp_path / "resumed")
    resumed_seen = []
    resumed = _trainee(resumed_seen)  # a fresh process: new random weights, overwritten by checkpoint-20
    result = fit(resumed, list(range(12)), cfg, tmp_path / "resumed")
    assert result.first_step == 0 and result.steps == 30
    assert [s for s, _ in resumed_seen] == list(range(20, 30))  # continued after the last checkpoint
    assert resumed_seen == straight_seen[20:]  # the same batches as the uninterrupted run
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_no_resume_starts_over(tmp_path):
    cfg = LoopConfig(steps=12, batch_size=4, save_every=5)
    fit(_trainee([]), list(range(8)), cfg, tmp_path)
    seen = []
    fit(_trainee(seen), list(range(8)), cfg.model_copy(update={"resume": False}), tmp_path)
    assert seen[0][0] == 0
