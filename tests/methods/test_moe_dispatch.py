"""Every dispatch path equals a naive per-token, per-slot loop, forward and backward."""
import pytest
import torch
import torch.nn.functional as F

from stages.methods.moe import SparseMoE
from stages.methods.moe.expert_dispatch import PATHS, _grouped_mm, run_experts

E, D, FF = 5, 12, 20


def naive_moe(x, w13, w2, expert, weight):
    """out[t] = Σ_s weight[t, s] · W2_e (silu(W1_e x_t) * W3_e x_t), e = expert[t, s]; e == E skipped."""
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for s in range(expert.shape[1]):
            e = int(expert[t, s])
            if e == w13.shape[0]:
                continue
            w1, w3 = w13[e, :FF], w13[e, FF:]
            y = w2[e] @ (F.silu(w1 @ x[t]) * (w3 @ x[t]))
            out[t] = out[t] + weight[t, s] * y
    return out


def grouped_works() -> bool:
    if _grouped_mm is None:
        return False
    try:
        _grouped_mm(torch.randn(4, 8), torch.randn(2, 8, 8), offs=torch.tensor([1, 4], dtype=torch.int32))
        return True
    except (RuntimeError, NotImplementedError):
        return False


def paths():
    return [p if p != "grouped" or grouped_works() else
            pytest.param(p, marks=pytest.mark.skip("no CPU grouped_mm in this torch")) for p in PATHS]


def problem(T: int, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, D, generator=g)
    w13 = torch.randn(E, 2 * FF, D, generator=g) * 0.3
    w2 = torch.randn(E, D, FF, generator=g) * 0.3
    expert = torch.stack([torch.randperm(E + 1, generator=g)[:k] for _ in range(T)])  # may hold E: dropped
    weight = torch.rand(T, k, generator=g).masked_fill(expert == E, 0.0)
    return x, w13, w2, expert, weight


@pytest.mark.parametrize("path", paths())
@pytest.mark.parametrize("T,k", [(1, 1), (1, 2), (3, 2), (17, 2), (40, 3)])
def test_path_matches_naive_loop(path, T, k):
    x, w13, w2, expert, weight = problem(T, k)
    expected = naive_moe(x, w13, w2, expert, weight)
    assert torch.allclose(run_experts(x, w13, w2, expert, weight, path=path), expected, atol=1e-5)


@pytest.mark.parametrize("path", paths())
def test_path_gradients_match_naive_loop(path):
    inputs = problem(9, 2, seed=1)
    grads = []
    for fn in (naive_moe, PATHS[path]):
        leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
        fn(*leaves).square().sum().backward()
        grads.append([t.grad for t in leaves if t.requires_grad])
    for ref, got in zip(*grads):
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path", paths())
def test_path_with_every_slot_dropped_gives_zeros(path):
    x, w13, w2, _, _ = problem(4, 2)
    expert = torch.full((4, 2), E)
    out = run_experts(x, w13, w2, expert, torch.zeros(4, 2), path=path)
    assert torch.equal(out, torch.zeros_like(x))


def test_auto_on_cpu_is_the_sorted_loop_and_layer_keeps_shape():
    torch.manual_seed(0)
    layers = {p: SparseMoE(d_model=D, d_ff=FF, n_experts=E, top_k=2, dispatch=p) for p in ["auto", *PATHS]}
    for layer in list(layers.values())[1:]:
        layer.load_state_dict(layers["auto"].state_dict())
    x = torch.randn(2, 3, D)
    out, stats = layers["auto"](x)
    assert out.shape == x.shape
    ref = naive_moe(x.view(-1, D), layers["auto"].w13, layers["auto"].w2, stats.routing.expert, stats.routing.weight)
    assert torch.allclose(out.view(-1, D), ref, atol=1e-5)
    for p in PATHS:
        if p != "grouped" or grouped_works():
            assert torch.allclose(layers[p](x)[0], out, atol=1e-5), p
