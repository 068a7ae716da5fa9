"""Model soups (Wortsman et al. 2022): uniform = linear merge with equal weights; greedy =
add fine-tunes in order of held-out score, keeping each only if the soup's score does not drop.
"""
from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Sequence, Tuple, Union

from stages.methods.merging.merge_config import MergeConfig, ModelEntry
from stages.methods.merging.merge_errors import MergeConfigError
from stages.methods.merging.merge_runner import run_merge

PathLike = Union[str, Path]


def soup_config(model_dirs: Sequence[PathLike], **config: Any) -> MergeConfig:
    """A linear merge with weight 1 per model, normalised: the plain average."""
    if not model_dirs:
        raise MergeConfigError("models: a soup needs at least one model")
    return MergeConfig(
        models=[ModelEntry(model=str(d), parameters={"weight": 1.0}) for d in model_dirs],
        merge_method="linear", **config)


def uniform_soup(model_dirs: Sequence[PathLike], out_dir: PathLike, **run_kwargs: Any) -> Path:
    """Average the parameters of `model_dirs` into `out_dir`."""
    return run_merge(soup_config(model_dirs), out_dir, **run_kwargs)


@dataclass
class GreedySoupResult:
    path: Path  # the final soup's model dir
    ingredients: List[Path]  # models kept, in the order added
    score: float  # held-out score of the final soup
    history: List[Tuple[Path, float, bool]] = field(default_factory=list)  # (candidate, soup score with it, kept)


def greedy_soup(
    candidates: Sequence[PathLike],
    score_fn: Callable[[Path], float],
    out_dir: PathLike,
    *,
    presorted: bool = False,
    **run_kwargs: Any,
) -> GreedySoupResult:
    """Greedy soup: higher score_fn(model_dir) is better.

    Candidates are ranked by their own held-out score (skipped if `presorted`); the soup
    starts with the best one, and each next candidate stays only if the uniform average
    of the soup plus it scores at least as well as the soup without it.
    """
    paths = [Path(c) for c in candidates]
    if not paths:
        raise MergeConfigError("candidates: a greedy soup needs at least one model")
    if presorted:
        first_score = float(score_fn(paths[0]))
    else:
        ranked = sorted(((float(score_fn(p)), i, p) for i, p in enumerate(paths)), key=lambda r: (-r[0], r[1]))
        paths = [p for _, _, p in ranked]
        first_score = ranked[0][0]
    out = Path(out_dir)
    work = out.parent / f".{out.name}.soup-{uuid.uuid4().hex[:8]}"
    try:
        ingredients, best = [paths[0]], first_score
        history = [(paths[0], first_score, True)]
        current = run_merge(soup_config(ingredients), work / "current", **run_kwargs)
        for candidate in paths[1:]:
            trial = run_merge(soup_config(ingredients + [candidate]), work / "trial", **run_kwargs)
            score = float(score_fn(trial))
            keep = score >= best
            history.append((candidate, score, keep))
            if keep:
                ingredients.append(candidate)
                best = score
                shutil.rmtree(current)
                trial.rename(current)
            else:
                shutil.rmtree(trial)
        if out.exists() and not any(out.iterdir()):
            out.rmdir()
        if out.exists():
            raise MergeConfigError(f"output dir {out} exists and is not empty")
        current.rename(out)
        return GreedySoupResult(out, ingredients, best, history)
    finally:
        shutil.rmtree(work, ignore_errors=True)
