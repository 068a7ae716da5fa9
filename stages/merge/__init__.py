"""Model merging (issue 5): linear / soups, task arithmetic, TIES, DARE, SLERP.

mergekit 0.1.x semantics and YAML subset, streamed one tensor at a time:

    from stages.merge import load_merge_config, run_merge
    run_merge(load_merge_config("merge.yml"), "out/merged")
"""
from stages.merge.config import FilteredValue, MergeConfig, ModelEntry, load_merge_config, parse_merge_config
from stages.merge.errors import MergeConfigError, MergeError, MergeInputError
from stages.merge.methods import METHODS, get_method
from stages.merge.runner import plan_merge, run_merge
from stages.merge.soup import GreedySoupResult, greedy_soup, uniform_soup

__all__ = [
    "METHODS", "FilteredValue", "GreedySoupResult", "MergeConfig", "MergeConfigError", "MergeError",
    "MergeInputError", "ModelEntry", "get_method", "greedy_soup", "load_merge_config",
    "parse_merge_config", "plan_merge", "run_merge", "uniform_soup",
]
