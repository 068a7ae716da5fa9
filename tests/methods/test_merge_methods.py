"""Merge methods on hand-computed examples (no files): linear, task arithmetic, TIES, DARE, SLERP."""
import math

import pytest
import torch

from stages.methods.merging.merge_config import FilteredValue
from stages.methods.merging.merge_methods import get_method
from stages.methods.merging.method_base import ParamSpec
from stages.methods.merging.slerp import slerp_tensors
from stages.methods.merging.sparsify import bernoulli_, kth_largest_abs, magnitude_, top_k_mask
from stages.methods.merging.merge_parameters import evaluate, layer_counts, layer_position

T = torch.tensor


def merge(name, tensors, base=None, shared=None, per_model=None, generator=None):
    method = get_method(name)
    full = {k: s.default for k, s in method.shared.items() if not s.required}
    full.update(shared or {})
    pm = [{**{k: s.default for k, s in method.per_model.items() if not s.required}, **p} for p in (per_model or [])]
    return method.merge(tensors, base, full, pm, generator)


def test_linear_normalised_and_not():
    a, b = T([1.0, 2.0]), T([3.0, -2.0])
    out = merge("linear", [a, b], per_model=[{"weight": 1.0}, {"weight": 3.0}])
    assert torch.allclose(out, T([(1 + 9) / 4, (2 - 6) / 4]))
    out = merge("linear", [a, b], shared={"normalize": False}, per_model=[{"weight": 1.0}, {"weight": 3.0}])
    assert torch.allclose(out, T([10.0, -4.0]))
    assert a.tolist() == [1.0, 2.0]  # inputs untouched


def test_task_arithmetic_negation_and_lambda():
    base, a, b = T([1.0, 1.0]), T([2.0, 0.0]), T([1.0, 3.0])
    out = merge("task_arithmetic", [a, b], base, {"lambda": 0.5}, [{"weight": 1.0}, {"weight": -1.0}])
    # δa = [1, -1], δb = [0, 2]; Σ w δ = [1, -3]; base + 0.5·that
    assert torch.allclose(out, T([1.5, -0.5]))
    # normalize divides by Σw = 1 + 3
    out = merge("task_arithmetic", [a, b], base, {"normalize": True}, [{"weight": 1.0}, {"weight": 3.0}])
    assert torch.allclose(out, base + (T([1.0, -1.0]) + 3 * T([0.0, 2.0])) / 4)


def test_ties_hand_example():
    base = torch.zeros(4)
    a = T([3.0, -1.0, 0.5, 2.0])
    b = T([-2.0, -4.0, 1.0, 0.25])
    # density 0.5 keeps 2 of 4 by |δ|: a -> [3, 0, 0, 2], b -> [-2, -4, 0, 0]
    # weights 1, 1: Σ = [1, -4, 0, 2] -> γ = [+, -, + (0 -> +), +]
    # agreeing: e0: a only (3), e1: b only (-4), e2: none, e3: a only (2); divide by agreeing weights
    out = merge("ties", [a, b], base, {}, [{"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}])
    assert torch.allclose(out, T([3.0, -4.0, 0.0, 2.0]))
    # weights 2, 1 without normalize: wδ a = [6,0,0,4], b = [-2,-4,0,0]; Σ = [4,-4,0,4]
    out = merge("ties", [a, b], base, {"normalize": False}, [{"weight": 2.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}])
    assert torch.allclose(out, T([6.0, -4.0, 0.0, 4.0]))
    # normalize with weights 2, 1 and density 1: γ from Σ wδ = [4, -6, 2, 4.25]
    out = merge("ties", [a, b], base, {}, [{"weight": 2.0}, {"weight": 1.0}])
    assert torch.allclose(out, T([6 / 2, (-2 - 4) / 3, (1 + 1) / 3, (4 + 0.25) / 3]))


def test_top_k_exact_count_and_radix_path():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300_000, generator=gen)  # above the radix threshold
    for k in (1, 7, 150_000, 299_999):
        mask = top_k_mask(x, k)
        assert int(mask.sum()) == k
        ref = torch.argsort(x.abs(), descending=True)[:k]
        assert mask[ref].all()
        assert float(kth_largest_abs(x, k)) == float(torch.sort(x.abs(), descending=True).values[k - 1])
    # ties at the threshold: exactly k kept, earliest ties first
    y = T([1.0, 2.0, -2.0, 2.0, 0.5])
    assert top_k_mask(y, 2).tolist() == [False, True, True, False, False]
    big = torch.zeros(100_000)
    big[[5, 70_000]] = T([-3.0, 3.0])
    assert torch.nonzero(top_k_mask(big, 4)).flatten().tolist() == [0, 1, 5, 70_000]  # radix path, tied zeros


def test_magnitude_keeps_at_least_one():
    d = T([0.1, -0.3, 0.2])
    assert magnitude_(d.clone(), 0.01).tolist() == pytest.approx([0.0, -0.3, 0.0])
    assert magnitude_(d.clone(), 1.0).tolist() == pytest.approx(d.tolist())


def test_dare_keep_fraction_and_l1_rescale():
    gen = torch.Generator().manual_seed(1)
    delta = torch.randn(200_000, generator=gen)
    kept = bernoulli_(delta.clone(), 0.3, rescale=True, generator=gen)
    frac = float((kept != 0).float().mean())
    assert abs(frac - 0.3) < 4 * math.sqrt(0.3 * 0.7 / delta.numel())
    # mergekit's rule: ‖kept‖₁ equals ‖δ‖₁ exactly, not just in expectation (1/density)
    assert float(kept.abs().sum()) == pytest.approx(float(delta.abs().sum()), rel=1e-5)
    nonzero = kept != 0
    scale = kept[nonzero] / delta[nonzero]
    assert torch.allclose(scale, scale[0].expand_as(scale))
    plain = bernoulli_(delta.clone(), 0.3, rescale=False, generator=gen)
    assert torch.equal(plain[plain != 0], delta[plain != 0])


def test_dare_is_reproducible_with_a_seed():
    delta = torch.randn(1000)
    a = bernoulli_(delta.clone(), 0.5, generator=torch.Generator().manual_seed(3))
    b = bernoulli_(delta.clone(), 0.5, generator=torch.Generator().manual_seed(3))
    c = bernoulli_(delta.clone(), 0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_slerp_orthogonal_unit_vectors():
    v0, v1 = T([1.0, 0.0]), T([0.0, 1.0])
    out = slerp_tensors(0.5, v0, v1)
    assert torch.allclose(out, T([math.sqrt(0.5), math.sqrt(0.5)]))  # on the arc, not the chord (0.5, 0.5)
    out = slerp_tensors(1 / 3, v0, v1)
    assert torch.allclose(out, T([math.cos(math.pi / 6), math.sin(math.pi / 6)]))
    assert torch.allclose(slerp_tensors(0.0, v0, v1), v0) and torch.allclose(slerp_tensors(1.0, v0, v1), v1)


def test_slerp_parallel_falls_back_to_linear():
    v0 = T([1.0, 2.0, 3.0])
    v1 = 3 * v0  # cos = 1
    assert torch.allclose(slerp_tensors(0.25, v0, v1), 0.75 * v0 + 0.25 * v1)
    assert torch.allclose(merge("slerp", [v1], v0, {"t": 0.25}), 0.75 * v0 + 0.25 * v1)


def test_gradients_filters_and_layer_positions():
    f = ParamSpec(float, 1.0)
    assert evaluate([0.0, 1.0, 0.5], "x", 0.25, f) == pytest.approx(0.5)  # halfway between 0 and 1
    assert evaluate([0.0, 1.0, 0.5], "x", 0.75, f) == pytest.approx(0.75)
    assert evaluate([0.2, 0.8], "x", 1.0, f) == pytest.approx(0.8)
    setting = [FilteredValue(filter="attn", value=[0.0, 1.0]), FilteredValue(filter="mlp", value=0.3),
               FilteredValue(value=0.9)]
    assert evaluate(setting, "l.1.self_attn.q", 0.5, f) == pytest.approx(0.5)
    assert evaluate(setting, "l.1.mlp.attn_like", 0.5, f) == pytest.approx(0.5)  # first match wins
    assert evaluate(setting, "l.1.mlp.up", 0.5, f) == pytest.approx(0.3)
    assert evaluate(setting, "norm", 0.5, f) == pytest.approx(0.9)
    assert evaluate([FilteredValue(filter="attn", value=1.0)], "norm", 0.0, f) is None
    names = [f"model.layers.{i}.w" for i in range(5)] + ["model.norm.weight"] + \
            [f"model.decoder.layers.{i}.fc1.weight" for i in range(2)]
    counts = layer_counts(names)
    assert counts == {"model.layers": 5, "model.decoder.layers": 2}
    assert layer_position("model.layers.3.w", counts) == pytest.approx(0.75)
    assert layer_position("model.decoder.layers.1.fc1.weight", counts) == 1.0
    assert layer_position("model.norm.weight", counts) == 0.0
