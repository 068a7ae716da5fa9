"""The one training loop every recipe uses (nanoGPT-style: one file, one LR schedule).

    trainee = Trainee(model, loss=lambda model, examples, step: ..., save=lambda model, folder: ...)
    result = fit(trainee, examples, LoopConfig(steps=500), out_dir)

AdamW (weight decay on matrices only), linear warmup then cosine decay to
`min_lr_ratio` of the peak, gradient clipping, a checkpoint folder `checkpoint-STEP` every `save_every` steps (the
recipe's own `save`, so a checkpoint loads like the final model) and resume
from the newest one. Batch `s` is a pure function of (seed, s) — a shuffled
pass per epoch — so a resumed run sees exactly the batches it would have seen.
No Prefect here; `flows/train_flow.py` wraps a recipe in a flow for progress.
"""
from __future__ import annotations

import functools
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
WEIGHTS_FILE = "model.safetensors"


class LoopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1000, ge=1, description="optimizer steps (the schedule's length)")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup: int = Field(100, ge=0, description="linear warmup steps")
    min_lr_ratio: float = Field(0.02, ge=0, le=1, description="the cosine ends at lr × this")
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    clip_norm: float | None = Field(1.0, gt=0, description="max gradient norm; None = no clipping")
    save_every: int | None = Field(None, ge=1, description="write checkpoint-STEP folders")
    eval_every: int | None = Field(None, ge=1, description="call the eval hook every this many steps")
    log_every: int = Field(25, ge=1)
    max_minutes: float | None = Field(None, gt=0, description="stop early after this long (the schedule "
                                      "then runs on time: progress = max(step, elapsed) fraction)")
    resume: bool = Field(True, description="continue from the newest checkpoint in the output folder")
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")


def lr_factor(step: int, progress: float, warmup: int, min_lr_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then cosine from 1 to `min_lr_ratio` as `progress` goes 0 → 1."""
    cosine = min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return min((step + 1) / warmup, cosine) if warmup else cosine


@functools.lru_cache(maxsize=8)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Example indices of batch `step`: consecutive slices of one shuffled pass per epoch."""
    if n == 0:
        raise ValueError("no training examples")
    start = step * batch_size
    return [_epoch_order(n, seed, p // n)[p % n] for p in range(start, start + batch_size)]


@dataclass
class Trainee:
    """What a recipe hands the loop: the model, its loss on a list of examples, and how to save it."""

    model: torch.nn.Module
    loss: Callable[[torch.nn.Module, list[Any], int], torch.Tensor]  # (model, examples, step) -> scalar
    save: Callable[[torch.nn.Module, Path], None]  # writes a folder that loads like the final model
    evaluate: Callable[[torch.nn.Module], dict] | None = None  # eval hook: metrics on held-out data


@dataclass
class TrainResult:
    out_dir: str
    steps: int
    first_step: int  # > 0 when resumed (or started part-way through a schedule)
    seconds: float
    losses: list[dict] = field(default_factory=list)  # {"step", "loss"} every log_every steps
    evals: list[dict] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def checkpoint_dirs(out_dir: str | Path) -> list[Path]:
    """checkpoint-STEP folders of a run, oldest first (only complete ones: the state file is written last)."""
    found = [p for p in Path(out_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
             and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def load_weights(model: torch.nn.Module, folder: Path) -> None:
    """Copy a checkpoint's safetensors into `model`; keys a save dropped must be tied to loaded ones."""
    from safetensors.torch import load_file

    state = load_file(str(folder / WEIGHTS_FILE))
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = {t.data_ptr() for k, t in model.state_dict().items() if k in state}
    untied = [k for k in missing if model.state_dict()[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise ValueError(f"checkpoint {folder} does not fit the model: missing {untied[:3]}, "
                         f"unexpected {list(unexpected)[:3]}")


def fit(trainee: Trainee, examples: Sequence[Any], cfg: LoopConfig, out_dir: str | Path,
        on_step: Callable[[int, int, float], None] | None = None, first_step: int = 0) -> TrainResult:
    """Train for cfg.steps optimizer steps (from `first_step`, or the newest checkpoint) and save to out_dir.

    `on_step(step, total, loss)` reports progress. `first_step` starts part-way through the
    schedule with a fresh optimizer (e.g. an upcycled model continuing its dense parent's run).
    """
    out_dir = Path(out_dir)
    model = trainee.model
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    params = [p for p in model.parameters() if p.requires_grad]
    # Decay matrices only; biases and norm gains are left alone (nanoGPT's rule).
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas)
    result = TrainResult(out_dir=str(out_dir), steps=cfg.steps, first_step=first_step, seconds=0.0)
    step = first_step
    previous = checkpoint_dirs(out_dir) if cfg.resume else []
    if previous:
        step = _resume(model, opt, previous[-1], result)
    t0 = time.time()
    budget = 60 * cfg.max_minutes if cfg.max_minutes else None

    def progress(s: int) -> float:
        return max(s / cfg.steps, (time.time() - t0) / budget if budget else 0.0)

    model.train()
    torch.manual_seed(cfg.seed)
    while step < cfg.steps and progress(step) < 1.0:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, progress(step), cfg.warmup, cfg.min_lr_ratio)
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout and masking noise per step: resumable
        batch = [examples[i] for i in batch_indices(len(examples), cfg.batch_size, step, cfg.seed)]
        loss = trainee.loss(model, batch, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        opt.step()
        step += 1
        value = loss.item()
        if step % cfg.log_every == 0 or step in (first_step + 1, cfg.steps):
            result.losses.append({"step": step, "loss": round(value, 5)})
        if on_step:
            on_step(step, cfg.steps, value)
        if trainee.evaluate and cfg.eval_every and step % cfg.eval_every == 0:
            result.evals.append({"step": step, **_evaluate(trainee)})
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
            folder = _checkpoint(trainee, opt, out_dir / f"checkpoint-{step}", step, result, time.time() - t0)
            result.checkpoints.append(str(folder))
    if trainee.evaluate and not (result.evals and result.evals[-1]["step"] == step):
        result.evals.append({"step": step, **_evaluate(trainee)})
    result.steps = step
    result.seconds = round(result.seconds + time.time() - t0, 2)
    model.eval()
    trainee.save(model, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return result


def _evaluate(trainee: Trainee) -> dict:
    trainee.model.eval()
    try:
        return trainee.evaluate(trainee.model)
    finally:
        trainee.model.train()


def _checkpoint(trainee: Trainee, opt: torch.optim.Optimizer, folder: Path, step: int, result: TrainResult,
                elapsed: float) -> Path:
    trainee.model.eval()
    trainee.save(trainee.model, folder)
    trainee.model.train()
    if not (folder / WEIGHTS_FILE).exists():
        raise ValueError(f"the recipe's save wrote no {WEIGHTS_FILE} into {folder}: resume needs it")
    torch.save(opt.state_dict(), folder / OPTIMIZER_FILE)
    state = {"step": step, "first_step": result.first_step, "seconds": round(result.seconds + elapsed, 2),
             "losses": result.losses, "evals": result.evals}
    (folder / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")  # last: marks the folder complete
    return folder


def _resume(model: torch.nn.Module, opt: torch.optim.Optimizer, folder: Path, result: TrainResult) -> int:
    load_weights(model, folder)
    opt.load_state_dict(torch.load(folder / OPTIMIZER_FILE, weights_only=True))
    state = json.loads((folder / STATE_FILE).read_text())
    result.first_step = state["first_step"]
    result.losses, result.evals = state["losses"], state["evals"]
    result.seconds = state["seconds"]
    result.checkpoints = [str(p) for p in checkpoint_dirs(folder.parent)]
    return state["step"]
