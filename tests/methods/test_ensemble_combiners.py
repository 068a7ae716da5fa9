"""Combiners against closed forms and hand-built distributions."""

import math

import pytest
import torch

from stages.methods.ensembling import LinearCombiner, LogLinearCombiner, make_combiner
from stages.methods.ensembling.logit_filters import ForceToken, MinNewTokens, SuppressTokens


def _log(rows):
    """[M][V] probabilities -> [M, 1, V] log-probs (one decoding row)."""
    return torch.tensor(rows, dtype=torch.float64).log()[:, None, :]


def test_uniform_linear_is_logsumexp_minus_log_m():
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(3, 4, 50) * 3, dim=-1)
    combined = LinearCombiner()(log_probs, torch.ones(4, 3))
    expected = torch.logsumexp(log_probs, dim=0) - math.log(3)  # fairseq's uniform ensemble
    assert torch.allclose(combined, expected, atol=1e-6)


def test_weighted_linear_matches_probability_space_mixture_and_normalises_weights():
    torch.manual_seed(1)
    log_probs = torch.log_softmax(torch.randn(2, 3, 20, dtype=torch.float64), dim=-1)
    weights = torch.tensor([[3.0, 1.0], [1.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    combined = LinearCombiner()(log_probs, weights)
    w = weights / weights.sum(1, keepdim=True)
    expected = (w.T[:, :, None] * log_probs.exp()).sum(0).log()
    assert torch.allclose(combined, expected, atol=1e-12)
    assert torch.allclose(combined.exp().sum(-1), torch.ones(3, dtype=torch.float64))


def test_linear_refuses_negative_weights():
    with pytest.raises(ValueError, match="non-negative"):
        LinearCombiner()(torch.zeros(2, 1, 3), torch.tensor([[1.0, -0.5]]))


def test_log_linear_is_a_renormalised_weighted_geometric_mean():
    p, q = [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]
    combined = LogLinearCombiner()(_log([p, q]), torch.tensor([[0.7, 0.3]], dtype=torch.float64))
    unnorm = [p[i] ** 0.7 * q[i] ** 0.3 for i in range(3)]
    assert combined.exp()[0].tolist() == pytest.approx([u / sum(unnorm) for u in unnorm], abs=1e-12)


def test_linear_is_or_log_linear_is_and():
    # Token 1 is supported only by member A, token 2 only by member B.
    log_probs = _log([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]])
    uniform = torch.ones(1, 2, dtype=torch.float64)
    linear = LinearCombiner()(log_probs, uniform).exp()[0]
    log_linear = LogLinearCombiner()(log_probs, uniform).exp()[0]
    assert linear.tolist() == pytest.approx([0.5, 0.25, 0.25])  # OR: both single-supported tokens survive
    assert log_linear.tolist() == pytest.approx([1.0, 0.0, 0.0])  # AND: only the jointly supported token


def test_negative_weight_member_lowers_its_favourite_token():
    a, b = [0.4, 0.3, 0.3], [0.8, 0.1, 0.1]  # b's favourite is token 0
    combined = LogLinearCombiner()(_log([a, b]), torch.tensor([[1.0, -0.5]], dtype=torch.float64)).exp()[0]
    unnorm = [a[i] / math.sqrt(b[i]) for i in range(3)]  # a * b^-0.5, by hand
    assert combined.tolist() == pytest.approx([u / sum(unnorm) for u in unnorm], abs=1e-12)
    assert combined[0] < a[0] and int(combined.argmax()) != 0


def test_log_linear_zero_weight_ignores_a_member_even_where_it_has_zero_probability():
    combined = LogLinearCombiner()(_log([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]), torch.tensor([[1.0, 0.0]]))
    assert not torch.isnan(combined).any()
    assert combined.exp()[0].tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_per_row_weights_apply_row_by_row():
    log_probs = _log([[0.9, 0.1], [0.1, 0.9]]).expand(2, 2, 2)
    combined = LinearCombiner()(log_probs, torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)).exp()
    assert combined.tolist() == [pytest.approx([0.9, 0.1]), pytest.approx([0.1, 0.9])]


def test_registry_names_and_unknown_name():
    assert isinstance(make_combiner("log_linear"), LogLinearCombiner)
    with pytest.raises(ValueError, match="unknown combiner"):
        make_combiner("geometric")


def test_filters_mask_and_force_tokens_at_the_right_steps():
    scores = torch.zeros(2, 5)
    early, late = torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)
    assert MinNewTokens(3, [4])(scores, early)[:, 4].tolist() == [-math.inf, -math.inf]
    assert MinNewTokens(3, [4])(scores, late)[:, 4].tolist() == [0.0, 0.0]
    forced = ForceToken(2, at_step=1)(scores, early)
    assert forced[0].tolist() == [-math.inf, -math.inf, 0.0, -math.inf, -math.inf]
    assert torch.equal(ForceToken(2, at_step=0)(scores, early), scores)
    assert SuppressTokens([0, 1], at_step=3)(scores, late)[:, :2].eq(-math.inf).all()
    assert torch.equal(SuppressTokens([0, 1], at_step=3)(scores, early), scores)
