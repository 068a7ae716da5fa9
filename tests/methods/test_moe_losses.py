"""Balancing losses against hand-worked numbers; gradients reach router, noise and experts."""
import math

import pytest
import torch

from stages.methods.moe import SparseMoE
from stages.methods.moe.balance_losses import cv_squared, importance, router_z_loss, smooth_load, switch_balance_loss

LN2 = math.log(2.0)


def test_cv_squared_uses_population_variance():
    assert cv_squared(torch.tensor([1.0, 3.0])).item() == pytest.approx(0.25)  # var 1, mean 2
    assert cv_squared(torch.tensor([2.0, 2.0, 2.0])).item() == pytest.approx(0.0)
    assert cv_squared(torch.tensor([5.0])).item() == 0.0


def test_importance_sums_gates_over_the_batch():
    gates = torch.tensor([[0.75, 0.25, 0.0], [0.0, 0.5, 0.5]])
    assert importance(gates).tolist() == [0.75, 0.75, 0.5]
    # mean 2/3, var = ((1/12)² · 2 + (1/6)²) / 3 = 1/72 -> CV² = (1/72) / (4/9) = 1/32
    assert cv_squared(importance(gates)).item() == pytest.approx(1 / 32)


def test_smooth_load_one_token_top1():
    # Clean scores [1, .5, 0], noise std 1, noisy H = [1, 1.5, 0]: expert 1 is the top-1.
    clean = torch.tensor([[1.0, 0.5, 0.0]])
    noisy = torch.tensor([[1.0, 1.5, 0.0]])
    std = torch.ones(1, 3)
    load = smooth_load(clean, noisy, std, k=1)
    # e1 (in) stays in if 0.5 + n > 1.0 (best other): Φ(-0.5); e0 gets in if 1 + n > 1.5: Φ(-0.5);
    # e2 gets in if 0 + n > 1.5: Φ(-1.5).
    phi_m05, phi_m15 = 0.30853754, 0.06680720
    assert torch.allclose(load, torch.tensor([phi_m05, phi_m05, phi_m15]), atol=1e-6)


def test_smooth_load_sums_over_tokens_and_k2():
    clean = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    noisy = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 0.0]])
    std = torch.full((2, 3), 2.0)
    load = smooth_load(clean, noisy, std, k=2)
    # token 0: top-2 = {2, 1}; 3rd largest = 0 (thr for members), 2nd largest = 1 (thr for e0).
    #   e0 out: Φ((0-1)/2); e1 in: Φ((0-0)/2); e2 in: Φ((0-0)/2)
    # token 1: ties at 0 for e1, e2: sorted [2, 0, 0]; 3rd = 0, 2nd = 0. e0 in (2 > 0): Φ(1);
    #   e1, e2 are not > 3rd largest, so counted out: Φ((0-0)/2) = 0.5 each
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    expected = [phi(-0.5) + phi(1.0), 0.5 + 0.5, 0.5 + 0.5]
    assert torch.allclose(load, torch.tensor(expected), atol=1e-6)


def test_switch_balance_loss():
    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4]])
    # both tokens to expert 0: f = [1, 0], P = [0.65, 0.35] -> 2 · 0.65
    assert switch_balance_loss(probs, torch.tensor([[0], [0]]), 2).item() == pytest.approx(1.3)
    # top-2 covers both experts: f = [.5, .5] -> 2 · (0.5·0.65 + 0.5·0.35) = 1
    assert switch_balance_loss(probs, torch.tensor([[0, 1], [0, 1]]), 2).item() == pytest.approx(1.0)


def test_router_z_loss():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # lse = ln 2 and ln 4
    assert router_z_loss(logits).item() == pytest.approx((LN2**2 + (2 * LN2) ** 2) / 2)


def test_stats_aux_loss_is_the_weighted_sum_of_terms():
    torch.manual_seed(0)
    layer = SparseMoE(d_model=8, d_ff=16, n_experts=4, top_k=2, router="topk",
                      importance_coef=0.3, load_coef=0.2, balance_coef=0.1, z_coef=0.05)
    _, stats = layer(torch.randn(2, 6, 8))
    r = stats.routing
    counts = torch.bincount(r.routed.flatten(), minlength=4).float()
    expected = (0.3 * cv_squared(importance(r.gates)) + 0.2 * cv_squared(counts)
                + 0.1 * switch_balance_loss(r.probs, r.routed, 4) + 0.05 * router_z_loss(r.logits))
    assert stats.aux_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    numbers = stats.as_dict()
    assert sum(numbers["tokens_per_expert"]) == 12 * 2 and numbers["dropped_fraction"] == 0.0


@pytest.mark.parametrize("kind", ["noisy_topk", "topk", "switch"])
def test_gradients_reach_router_and_experts(kind):
    torch.manual_seed(0)
    layer = SparseMoE(d_model=8, d_ff=16, n_experts=4, router=kind, shared_d_ff=8,
                      **({} if kind == "switch" else {"top_k": 2})).train()
    out, stats = layer(torch.randn(2, 6, 8))
    (out.square().sum() + stats.aux_loss).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
