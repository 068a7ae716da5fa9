"""Model merging (issue 5): linear / soups, task arithmetic, TIES, DARE, SLERP.

mergekit 0.1.x semantics and YAML subset, streamed one tensor at a time:

    from stages.methods.merging import load_merge_config, run_merge
    run_merge(load_merge_config("merge.yml"), "out/merged")
"""
from stages.methods.merging.merge_config import FilteredValue, MergeConfig, ModelEntry, load_merge_config, parse_merge_config
from stages.methods.merging.merge_errors import MergeConfigError, MergeError, MergeInputError
from stages.methods.merging.merge_methods import MERGE_METHODS, get_method
from stages.methods.merging.merge_runner import check_output_dir, plan_merge, run_merge
from stages.methods.merging.soup import GreedySoupResult, greedy_soup, uniform_soup

__all__ = [
    "MERGE_METHODS", "FilteredValue", "GreedySoupResult", "MergeConfig", "MergeConfigError", "MergeError",
    "MergeInputError", "ModelEntry", "check_output_dir", "get_method", "greedy_soup", "load_merge_config",
    "parse_merge_config", "plan_merge", "run_merge", "uniform_soup",
]
