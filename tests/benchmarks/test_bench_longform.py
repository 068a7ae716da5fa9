"""The long-form benchmark's measures on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_longform import boundaries, boundary_offset, word_error_rate


def test_boundary_offset_by_hand():
    ours = [np.array([0.0, 5.0, 10.0]), np.array([1.0])]
    theirs = [np.array([0.2, 5.5, 20.0]), np.array([])]
    median, matched, covered = boundary_offset(ours, theirs)
    # 0.2 and 0.5 match (10.0 is 10 s from anything; file 2 has nothing to match), 5.5 is 4.5 s from 10.0
    assert median == pytest.approx(0.35)
    assert matched == pytest.approx(2 / 4) and covered == pytest.approx(2 / 3)


def test_boundaries_dedupe_shared_ends():
    assert boundaries([(0.0, 4.0, "a"), (4.0, 8.004, "b")]).tolist() == [0.0, 4.0, 8.0]


def test_wer_uses_one_normaliser_on_both_sides():
    # case, punctuation and "Mr." vs "mister" are the normaliser's business, "seven" vs "7" too
    assert word_error_rate(["Mister Smith paid seven dollars."], ["mr smith paid $7"]) == 0.0
    assert word_error_rate(["the cat sat", "on the mat"], ["the cat", "on a mat"]) == pytest.approx(2 / 6)
