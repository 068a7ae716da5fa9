"""Routers and capacity dropping against small hand-worked examples."""
import math

import pytest
import torch

from stages.methods.moe import MoEConfig, SparseMoE
from stages.methods.moe.gating import ExpertRouter, add_gating_noise, drop_over_capacity, expert_capacity, top_k_route

LOG_1234 = torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))  # softmax -> 0.1, 0.2, 0.3, 0.4


def test_top_k_renormalized_like_mixtral():
    probs, weight, expert = top_k_route(LOG_1234, k=2, renormalize=True)
    assert torch.allclose(probs, torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    assert expert.tolist() == [[3, 2]]
    assert torch.allclose(weight, torch.tensor([[4 / 7, 3 / 7]]))


def test_top_k_raw_probabilities_like_qwen2_moe():
    _, weight, expert = top_k_route(LOG_1234, k=2, renormalize=False)
    assert expert.tolist() == [[3, 2]]
    assert torch.allclose(weight, torch.tensor([[0.4, 0.3]]))


def test_gating_noise_is_scaled_by_softplus():
    clean = torch.tensor([[1.0, 0.5, 0.0]])
    raw = torch.zeros(1, 3)  # softplus(0) = ln 2
    noisy, std = add_gating_noise(clean, raw, noise=torch.tensor([[0.0, 1.0, -2.0]]))
    ln2 = math.log(2.0)
    assert torch.allclose(std, torch.full((1, 3), ln2))
    assert torch.allclose(noisy, torch.tensor([[1.0, 0.5 + ln2, -2 * ln2]]))


def _router(kind: str, weight: torch.Tensor, **kw) -> ExpertRouter:
    cfg = MoEConfig(d_model=weight.shape[1], d_ff=4, n_experts=weight.shape[0], top_k=1, router=kind, **kw)
    router = ExpertRouter(cfg)
    with torch.no_grad():
        router.weight.copy_(weight)
        if router.noise_weight is not None:
            router.noise_weight.zero_()
    return router


def test_noisy_topk_noise_changes_the_winner_only_in_training():
    router = _router("noisy_topk", torch.eye(3))
    x = torch.tensor([[1.0, 0.5, 0.0]])  # clean logits = x
    noise = torch.tensor([[0.0, 1.0, 0.0]])  # expert 1 gets +ln2 ≈ 0.69 -> 1.19 beats 1.0
    router.train()
    r = router(x, noise)
    assert r.expert.tolist() == [[1]] and r.weight.tolist() == [[1.0]]
    assert r.noisy is not None
    router.eval()
    r = router(x, noise)
    assert r.expert.tolist() == [[0]] and r.noisy is None


def test_switch_weight_is_the_raw_router_probability():
    router = _router("switch", torch.eye(2))
    r = router(torch.tensor([[math.log(3.0), 0.0]]))  # probs 0.75 / 0.25
    assert r.expert.tolist() == [[0]]
    assert torch.allclose(r.weight, torch.tensor([[0.75]]))


def test_switch_config_defaults_and_checks():
    cfg = MoEConfig(router="switch")
    assert (cfg.top_k, cfg.renormalize, cfg.balance_coef, cfg.z_coef) == (1, False, 0.01, 0.001)
    with pytest.raises(ValueError):
        MoEConfig(router="switch", top_k=2)
    assert MoEConfig(router="noisy_topk").load_coef == 0.01
    with pytest.raises(ValueError):
        MoEConfig(n_experts=2, top_k=3)


def test_capacity_is_ceil_of_factor_times_even_share():
    assert expert_capacity(n_tokens=4, top_k=2, n_experts=3, capacity_factor=0.75) == 2
    assert expert_capacity(n_tokens=10, top_k=1, n_experts=4, capacity_factor=1.0) == 3


# Four tokens, three experts, two slots, capacity 2. Queue order is slot-major:
# first choices t0->0, t1->0, t2->0 (3rd in line: dropped), t3->1;
# second choices t0->1, t1->2, t2->1 (3rd in line for expert 1: dropped), t3->0 (dropped).
# Token-major order would instead drop t3's first choice and keep t2's second.
EXPERT = torch.tensor([[0, 1], [0, 2], [0, 1], [1, 0]])
KEPT = [[True, True], [True, True], [False, False], [True, False]]


def test_drop_over_capacity_first_choices_first_then_token_order():
    weight = torch.full((4, 2), 0.5)
    expert, kept_weight = drop_over_capacity(EXPERT, weight, n_experts=3, capacity=2)
    kept = torch.tensor(KEPT)
    assert torch.equal(expert, EXPERT.masked_fill(~kept, 3))
    assert torch.equal(kept_weight, weight.masked_fill(~kept, 0.0))


def test_layer_drops_over_capacity_and_outputs_zero_for_fully_dropped_tokens():
    layer = SparseMoE(d_model=3, d_ff=4, n_experts=3, top_k=2, capacity_factor=0.75)
    with torch.no_grad():
        layer.router.weight.copy_(torch.eye(3))
    # logits = x: each row's top-2 reproduces EXPERT above
    x = torch.tensor([[3.0, 2.0, 0.0], [3.0, 0.0, 2.0], [3.0, 2.0, 0.0], [2.0, 3.0, 0.0]])
    out, stats = layer(x.unsqueeze(0))
    assert stats.routing.routed.tolist() == EXPERT.tolist()
    assert stats.tokens_per_expert.tolist() == [2, 2, 1]
    assert stats.dropped_fraction.item() == pytest.approx(3 / 8)
    assert torch.equal(out[0, 2], torch.zeros(3))
    assert out[0, [0, 1, 3]].abs().sum() > 0
    dropless, _ = SparseMoE(layer.cfg.model_copy(update={"capacity_factor": None}))(x)
    assert not torch.allclose(dropless[3], torch.zeros(3))


def test_noisy_layer_eval_is_deterministic_and_equals_plain_topk():
    torch.manual_seed(0)
    noisy = SparseMoE(d_model=8, d_ff=16, n_experts=4, top_k=2, router="noisy_topk")
    with torch.no_grad():
        noisy.router.noise_weight.normal_(0, 1.0)  # large noise, so training visibly differs
    plain = SparseMoE(d_model=8, d_ff=16, n_experts=4, top_k=2, router="topk")
    plain.load_state_dict({k: v for k, v in noisy.state_dict().items() if k != "router.noise_weight"})
    x = torch.randn(3, 5, 8)
    noisy.eval()
    first, second = noisy(x)[0], noisy(x)[0]
    assert torch.equal(first, second)
    assert torch.allclose(first, plain.eval()(x)[0], atol=1e-7)
    noisy.train()
    assert not torch.allclose(noisy(x)[0], noisy(x)[0])
