"""Every `cascade train` recipe as one row: name -> (module, options class, run function, summary).

Rows name their module as a string, so listing recipes (`cascade train --help`) imports no torch;
`recipe(name)` imports the one asked for.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable, NamedTuple

if TYPE_CHECKING:
    from stages.training.recipe_options import RecipeOptions


class RecipeRow(NamedTuple):
    module: str
    options: str
    run: str
    summary: str


_T = "stages.training."
RECIPES: dict[str, RecipeRow] = {
    "mt": RecipeRow(_T + "mt_recipe", "MTOptions", "run", "fine-tune a seq2seq model, or train one from a config dir"),
    "bagged": RecipeRow(_T + "member_recipes", "BaggedOptions", "run_bagged",
                        "K ensemble members, each on its own bootstrap resample (-p k=5)"),
    "checkpoints": RecipeRow(_T + "member_recipes", "CheckpointOptions", "run_checkpoints",
                             "one run whose checkpoint series are ensemble members (--save-every)"),
    "word-kd": RecipeRow(_T + "distill_recipes", "WordKDOptions", "run_word_kd",
                         "word-level KD: T²·KL to an ensemble teacher + CE (-p teacher=DIR,DIR)"),
    "seq-kd": RecipeRow(_T + "distill_recipes", "SeqKDOptions", "run_seq_kd",
                        "sequence-level KD: train on the teacher's beam outputs (-p teacher=DIR,DIR)"),
    "moe": RecipeRow(_T + "moe_recipes", "MoEOptions", "run_moe", "a mixture-of-experts Marian from scratch"),
    "upcycle": RecipeRow(_T + "moe_recipes", "MoEOptions", "run_upcycle",
                         "sparse upcycling: a dense Marian's FFNs become experts, then train"),
    "cmlm": RecipeRow(_T + "masked_lm_recipes", "CMLMOptions", "run_cmlm",
                      "a conditional masked LM for the mask_predict stage"),
    "mlm": RecipeRow(_T + "masked_lm_recipes", "MLMOptions", "run_mlm",
                     "a masked LM for the masked_diffusion stage"),
    "deliberation": RecipeRow(_T + "deliberation_recipe", "DeliberationOptions", "run",
                              "the deliberate stage's second pass on source+draft (-p first_pass=DIR)"),
    "router": RecipeRow(_T + "router_recipe", "RouterOptions", "run",
                        "the ensemble's member router (-p members=DIR,DIR)"),
}


class UnknownRecipe(ValueError):
    pass


def recipe(name: str) -> tuple[type["RecipeOptions"], Callable[..., dict]]:
    """(options class, run(options, on_step=None) -> summary) of a recipe."""
    if name not in RECIPES:
        raise UnknownRecipe(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    row = RECIPES[name]
    module = importlib.import_module(row.module)
    return getattr(module, row.options), getattr(module, row.run)


def check_data(name: str, options: "RecipeOptions") -> int:
    """Read the training (and dev) data as the recipe will, so bad rows fail before any flow or model; returns the count."""
    from stages.training.train_data import read_pairs, read_texts

    if name == "mlm":
        if options.dev:
            read_texts(options.dev, options.field)
        return len(read_texts(options.data, options.field, options.split))
    if options.dev:
        read_pairs(options.dev, options.source_field, options.target_field)
    return len(read_pairs(options.data, options.source_field, options.target_field, options.split))


def run_recipe(name: str, options: dict, on_step=None) -> dict:
    """Validate `options` (raises pydantic's ValidationError, a ValueError) and train."""
    options_cls, run = recipe(name)
    return run(options_cls(**options), on_step=on_step)
