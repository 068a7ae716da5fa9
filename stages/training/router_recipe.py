"""Recipe `router`: fit the ensemble's member router (stages/methods/ensembling/member_router.py) on pairs.

    cascade train router --data dev.jsonl --model FEATURE_MEMBER --out build/router -p members=m0,m1,m2

The router reads source features from one member and learns per-source member weights that
minimise the ensemble's NLL of the references (or pick the best member: -p objective=best_member).
It is small and trained full-batch, so `--steps` counts epochs over all the pairs. `--model` is
the member whose features the router reads (it must be one of `members`; default: the first).
The folder loads with `MemberRouter.load` and the `ensemble` stage's `router` option.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from stages.training.recipe_options import RecipeOptions, split_list
from stages.training.mt_recipe import read_training_pairs


class RouterOptions(RecipeOptions):
    members: list[str] = Field(..., min_length=2, description="member folders (comma-separated)")
    steps: int = Field(300, ge=1, description="full-batch epochs")
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    hidden: int = Field(64, ge=1)
    top_k: int | None = Field(None, ge=1)
    objective: Literal["ensemble_nll", "best_member"] = "ensemble_nll"
    features: Literal["encoder", "embeddings"] = "encoder"

    _split = field_validator("members", mode="before")(split_list)

    @field_validator("members")
    @classmethod
    def _exist(cls, dirs: list[str]) -> list[str]:
        missing = [d for d in dirs if not (Path(d) / "config.json").exists()]
        if missing:
            raise ValueError(f"member not found (no config.json): {missing[0]}")
        return dirs

    def feature_member(self) -> int:
        resolved = [str(Path(m).resolve()) for m in self.members]
        here = str(Path(self.model).resolve())
        return resolved.index(here) if here in resolved else 0


def run(opts: RouterOptions, on_step=None) -> dict:
    from stages.methods.ensembling import load_member
    from stages.methods.ensembling.member_router import RouterConfig, train_router

    pairs = read_training_pairs(opts)
    config = RouterConfig(hidden=opts.hidden, top_k=opts.top_k, objective=opts.objective, features=opts.features,
                          feature_member=opts.feature_member(), epochs=opts.steps, lr=opts.lr,
                          weight_decay=opts.weight_decay, seed=opts.seed)
    members = [load_member(d, device=opts.torch_device(), name=Path(d).name) for d in opts.members]
    router, losses = train_router(members, [p.source for p in pairs], [p.target for p in pairs], config)
    if on_step:
        on_step(opts.steps, opts.steps, losses[-1])
    opts.out.mkdir(parents=True, exist_ok=True)
    router.save(opts.out)
    summary = {"out_dir": str(opts.out), "steps": len(losses), "first_loss": losses[0], "final_loss": losses[-1],
               "members": opts.members}
    (opts.out / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
