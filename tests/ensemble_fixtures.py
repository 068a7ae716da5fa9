"""Fixtures shared by the ensemble test files (import them by name into a test module)."""
import pytest
import torch

from stages.methods.ensembling import load_member
from stages.testing.tiny_checkpoints import MARIAN_MEMBER, save_marian
from stages.testing.tiny_tokenizers import bpe_tokenizer


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: extra intra-op threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def marians(tmp_path_factory):
    """Three random Marian members sharing one tokenizer."""
    root = tmp_path_factory.mktemp("marian")
    tok = bpe_tokenizer("metaspace", 120)
    return [load_member(save_marian(root / f"m{i}", tok, seed=i, **MARIAN_MEMBER), device="cpu") for i in range(3)]
