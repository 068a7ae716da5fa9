"""Pipelines over toy stages, importable by the CLI as tests.toy_pipelines:NAME."""
from __future__ import annotations

import os

from pipelines.graph import Pipeline
from tests.toy_stages import Flaky, Split, Upper


def upper_split(count_file: str = "", sleep: float = 0.0) -> Pipeline:
    """Upper-case, then split into words; optional call counting and a sleep per batch."""
    count = count_file or None
    return Pipeline.chain(Upper(count_file=count, sleep=sleep), Split(count_file=count, sleep=sleep),
                          name="upper-split")


def flaky(count_file: str = "", failures: int = 1) -> Pipeline:
    return Pipeline.chain(Flaky(count_file=count_file or os.devnull, failures=failures, retry_delay=0),
                          name="flaky")
