"""The benchmarks' pairing and threading helpers, against hand-computed cases."""
from __future__ import annotations

import threading

import pytest

from benchmarks.common import in_fresh_thread, paired_ratios


def test_each_flow_is_divided_by_the_mean_of_the_loops_around_it():
    assert paired_ratios([10.0, 12.0, 8.0], [11.0, 12.0]) == [1.0, 1.2]
    with pytest.raises(AssertionError):
        paired_ratios([10.0, 12.0], [11.0, 12.0])  # a flow without a loop after it


def test_the_loop_runs_in_a_new_thread_and_its_errors_come_back():
    assert in_fresh_thread(threading.get_ident) != threading.get_ident()
    with pytest.raises(ZeroDivisionError):
        in_fresh_thread(lambda: 1 / 0)
