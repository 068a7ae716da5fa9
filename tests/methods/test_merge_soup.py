"""Model soups: uniform = plain parameter average; greedy keeps a candidate only if the
held-out score of the running average does not drop."""
import pytest
import torch

from stages.methods.merging import greedy_soup, uniform_soup
from stages.testing import tiny_merge
from stages.methods.merging.lazy_checkpoint import Checkpoint


def weights(model_dir):
    with Checkpoint(model_dir) as ck:
        return {name: ck.load(name) for name in ck.names()}


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    root = tmp_path_factory.mktemp("soup")
    base = tiny_merge.llama(root / "base", 0, tokenizer=False)
    for i, scale in ((1, 0.1), (2, 0.1), (3, 3.0)):  # two close fine-tunes, one far off
        tiny_merge.llama(root / f"ft{i}", i, finetune_of=base, scale=scale, tokenizer=False)
    return root


def test_uniform_soup_is_the_average(candidates, tmp_path):
    dirs = [candidates / f"ft{i}" for i in (1, 2, 3)]
    soup = weights(uniform_soup(dirs, tmp_path / "soup"))
    parts = [weights(d) for d in dirs]
    for name, tensor in soup.items():
        torch.testing.assert_close(tensor, sum(p[name] for p in parts) / 3)


def test_greedy_soup_keeps_only_helpful_models(candidates, tmp_path):
    base = weights(candidates / "base")
    calls = []

    def score(model_dir):  # held-out score: closeness to the base (fine-tune noise averages out)
        calls.append(model_dir)
        w = weights(model_dir)
        return -sum(float((w[n] - base[n]).pow(2).sum()) for n in w)

    order = [candidates / "ft3", candidates / "ft2", candidates / "ft1"]
    result = greedy_soup(order, score, tmp_path / "greedy")
    singles = {p: score(p) for p in order}
    first = max(order, key=singles.get)
    assert result.ingredients[0] == first
    assert set(result.ingredients) == {candidates / "ft1", candidates / "ft2"}  # ft3 would hurt
    kept = [c for c, _, keep in result.history if keep]
    assert kept == result.ingredients and len(result.history) == 3
    soup = weights(result.path)
    a, b = weights(candidates / "ft1"), weights(candidates / "ft2")
    for name, tensor in soup.items():
        torch.testing.assert_close(tensor, (a[name] + b[name]) / 2)
    assert result.score == pytest.approx(score(result.path))
    assert result.score > singles[first]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["greedy"]  # work dirs cleaned up
