"""Routers: learned per-input weights, and whole-model sparsity (unused members never run)."""

import pytest
import torch

from stages.methods.ensembling import MemberRouter, RouterConfig, ensemble_generate, load_member, routed_generate, train_router
from stages.methods.ensembling.member_router import fit_router, member_token_logprobs, router_loss, source_features
from stages.testing.tiny_checkpoints import MARIAN_MEMBER, save_marian
from stages.testing.tiny_tokenizers import bpe_tokenizer, toy_corpus
from tests.ensemble_fixtures import one_torch_thread, marians  # noqa: F401  (fixtures)

SOURCES = ["the cat sat on the mat", "a dog", "green tree near the river today", "old man reads a book"]






class CallCounter:
    """Counts every forward of a member's model (decoder steps) and of its encoder."""

    def __init__(self, member):
        self.member, self.calls = member, 0
        self.model_forward, self.encoder_forward = member.model.forward, member.model.get_encoder().forward

    def __enter__(self):
        def counted(original):
            return lambda *a, **k: setattr(self, "calls", self.calls + 1) or original(*a, **k)
        self.member.model.forward = counted(self.model_forward)
        self.member.model.get_encoder().forward = counted(self.encoder_forward)
        return self

    def __exit__(self, *exc):
        del self.member.model.forward
        del self.member.model.get_encoder().forward


def _fixed_router(in_dim, logits, top_k):
    """A router whose output ignores the input: bias only."""
    router = MemberRouter(in_dim, len(logits), hidden=4, top_k=top_k)
    with torch.no_grad():
        router.mlp[-1].weight.zero_()
        router.mlp[-1].bias.copy_(torch.tensor(logits))
    return router


def test_member_with_zero_router_weight_is_never_called(marians):
    router = _fixed_router(32, [1.0, 0.5, -3.0], top_k=2)  # member 2 is never in the top 2
    with CallCounter(marians[0]) as c0, CallCounter(marians[1]) as c1, CallCounter(marians[2]) as c2:
        routed = routed_generate(marians, router, SOURCES, features="embeddings", num_beams=2, max_new_tokens=6)
    assert c2.calls == 0
    assert c0.calls > 0 and c1.calls > 0
    w = torch.softmax(torch.tensor([1.0, 0.5]), dim=0)
    direct = ensemble_generate(marians[:2], SOURCES, weights=w, num_beams=2, max_new_tokens=6)
    assert [[h.token_ids for h in n] for n in routed] == [[h.token_ids for h in n] for n in direct]


def test_top1_router_groups_inputs_and_each_equals_its_single_member(marians):
    feats = source_features(marians[0], SOURCES, "encoder")
    # A router built by hand: s = u . LayerNorm(x); logits (s, -s, -1000) since GELU(s) - GELU(-s) = s.
    router = MemberRouter(feats.shape[1], 3, hidden=2, top_k=1)
    with torch.no_grad():
        for p in router.parameters():
            p.zero_()
        router.mlp[0].weight.fill_(1.0)
        normed = router.mlp[0](feats)
        u = normed[0] - normed[1]  # input 0 goes to member 0, input 1 to member 1
        router.mlp[1].weight[0], router.mlp[1].weight[1] = u, -u
        router.mlp[3].weight[0] = torch.tensor([1.0, -1.0])
        router.mlp[3].weight[1] = torch.tensor([-1.0, 1.0])
        router.mlp[3].bias[2] = -1e3
    weights = router.weights(feats)
    chosen = weights.argmax(dim=1).tolist()
    assert set(chosen) == {0, 1} and (weights > 0).sum(dim=1).eq(1).all()
    with CallCounter(marians[2]) as c2:
        routed = routed_generate(marians, router, SOURCES, num_beams=2, max_new_tokens=6)
    assert c2.calls == 0
    for source, member_index, nbest in zip(SOURCES, chosen, routed):
        alone = marians[member_index].model.generate(**marians[0].tokenizer([source], return_tensors="pt"),
                                                      num_beams=2, max_new_tokens=6)
        assert alone[0, 1:].tolist()[: len(nbest[0].token_ids)] == nbest[0].token_ids


def _synthetic_routing_problem(n=64, dim=8, tokens=5):
    """Member 0 is good when feature 0 > 0, member 1 otherwise."""
    torch.manual_seed(0)
    features = torch.randn(n, dim)
    good, bad = torch.full((n, tokens), -0.1), torch.full((n, tokens), -3.0)
    first_better = (features[:, 0] > 0)[:, None, None]
    member_lp = torch.where(first_better, torch.stack((good, bad), 1), torch.stack((bad, good), 1))
    return features, member_lp, torch.ones(n, tokens, dtype=torch.bool), first_better.flatten()


@pytest.mark.parametrize("objective", ["ensemble_nll", "best_member"])
def test_router_learns_which_member_to_trust(objective):
    features, member_lp, mask, first_better = _synthetic_routing_problem()
    router, losses = fit_router(features, member_lp, mask, RouterConfig(objective=objective, epochs=150))
    assert losses[-1] < losses[0]
    weights = router.weights(features)
    picks_first = weights[:, 0] > weights[:, 1]
    assert (picks_first == first_better).float().mean() > 0.95


def test_ensemble_nll_loss_matches_a_hand_computed_mixture():
    member_lp = torch.log(torch.tensor([[[0.5, 0.25], [0.1, 0.75]]]))  # 1 sentence, 2 members, 2 tokens
    logits = torch.log(torch.tensor([[0.2, 0.8]]))
    expected = -(torch.log(torch.tensor(0.2 * 0.5 + 0.8 * 0.1)) + torch.log(torch.tensor(0.2 * 0.25 + 0.8 * 0.75))) / 2
    loss = router_loss(logits, member_lp, torch.ones(1, 2), "ensemble_nll")
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)


def test_train_router_on_members_lowers_dev_nll_and_round_trips(marians, tmp_path):
    sources = toy_corpus(24, seed=3)
    targets = toy_corpus(24, seed=4)
    router, losses = train_router(marians, sources, targets, RouterConfig(epochs=60, hidden=16))
    member_lp, mask = member_token_logprobs(marians, sources, targets)
    feats = source_features(marians[0], sources)
    with torch.no_grad():
        uniform = router_loss(torch.zeros(len(sources), 3), member_lp, mask.float(), "ensemble_nll")
        trained = router_loss(router(feats), member_lp, mask.float(), "ensemble_nll")
    assert float(trained) <= float(uniform) + 1e-6
    assert losses[-1] == pytest.approx(float(trained), abs=0.05)
    router.save(tmp_path / "router")
    reloaded = MemberRouter.load(tmp_path / "router")
    assert torch.allclose(reloaded.weights(feats), router.weights(feats))
