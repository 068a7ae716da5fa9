"""`cascade train` as a Prefect flow: one task runs the recipe; progress goes to a Prefect progress artifact.

The recipe itself (stages/training/) knows nothing of Prefect; it calls `on_step(step, total, loss)`,
and this module turns that into artifact updates (at most every few seconds) and console lines.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact


class _Progress:
    """Throttled progress: Prefect's artifact (when a run context exists) and an optional echo."""

    def __init__(self, recipe: str, echo: Callable[[str], None] | None, every_seconds: float = 5.0):
        self.recipe, self.echo, self.every = recipe, echo, every_seconds
        self.last = 0.0
        try:
            self.artifact = create_progress_artifact(0.0, key=f"train-{recipe}", description=f"cascade train {recipe}")
        except Exception:  # noqa: BLE001 - progress is a courtesy, never a reason to fail training
            self.artifact = None

    def __call__(self, step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if now - self.last < self.every and step < total:
            return
        self.last = now
        if self.artifact is not None:
            try:
                update_progress_artifact(self.artifact, 100.0 * step / total)
            except Exception:  # noqa: BLE001
                self.artifact = None
        if self.echo:
            self.echo(f"{self.recipe} step {step}/{total} loss {loss:.4f}")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@task(name="train-recipe", persist_result=False, retries=0)
def train_task(recipe: str, options: dict, show_progress: bool = False) -> dict:
    from stages.training.recipe_table import run_recipe

    return run_recipe(recipe, options, on_step=_Progress(recipe, _stderr if show_progress else None))


@flow(name="train-models", persist_result=False)
def train_flow(recipe: str, options: dict, show_progress: bool = False) -> dict:
    """Train RECIPE with `options` (the recipe's options fields, already validated by the caller)."""
    summary = train_task(recipe, options, show_progress)
    try:
        create_markdown_artifact(f"`cascade train {recipe}` wrote `{options['out']}`", key=f"train-{recipe}-result")
    except Exception:  # noqa: BLE001
        pass
    return summary
