"""Parity with transformers' Mixtral / Qwen2-MoE sparse blocks and whole swapped models."""
import pytest
import torch
from torch import nn
from transformers import (MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM)
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock as HFMixtralBlock
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock

from stages.methods.moe.moe_hf import HFMoEAdapter, load_hf_moe_model, moe_from_hf_block, swap_hf_moe_blocks

TINY = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, initializer_range=0.2, eos_token_id=None)


def _randomize(block: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return block.eval()


def mixtral_block() -> nn.Module:
    cfg = MixtralConfig(hidden_size=32, intermediate_size=48, num_local_experts=6, num_experts_per_tok=2)
    cfg._experts_implementation = "eager"
    return _randomize(HFMixtralBlock(cfg))


def test_mixtral_block_parity():
    block = mixtral_block()
    ours = moe_from_hf_block(block)
    assert (ours.cfg.n_experts, ours.cfg.top_k, ours.cfg.d_ff, ours.cfg.renormalize) == (6, 2, 48, True)
    x = torch.randn(3, 7, 32)
    with torch.no_grad():
        assert (ours(x)[0] - block(x)).abs().max() <= 1e-5


class MixtralSparseMoeBlock(nn.Module):
    """The per-expert layout of transformers 4.x (experts.{i}.w1/w3/w2), rebuilt for the test."""

    def __init__(self, fused: nn.Module):
        super().__init__()
        f = fused.experts.intermediate_dim
        self.top_k = fused.top_k
        self.gate = nn.Linear(32, 6, bias=False)
        self.gate.weight.data = fused.gate.weight.data.clone()
        self.experts = nn.ModuleList()
        for e in range(6):
            expert = nn.Module()
            expert.act_fn = nn.SiLU()
            for name, w in (("w1", fused.experts.gate_up_proj[e, :f]), ("w3", fused.experts.gate_up_proj[e, f:]),
                            ("w2", fused.experts.down_proj[e])):
                layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
                layer.weight.data = w.detach().clone()
                setattr(expert, name, layer)
            self.experts.append(expert)


def test_mixtral_old_per_expert_layout_loads_the_same():
    fused = mixtral_block()
    ours = moe_from_hf_block(MixtralSparseMoeBlock(fused))
    x = torch.randn(10, 32)
    with torch.no_grad():
        assert (ours(x)[0] - fused(x[None])[0]).abs().max() <= 1e-5


@pytest.mark.parametrize("norm_topk_prob", [False, True])
def test_qwen2_moe_block_parity(norm_topk_prob):
    cfg = Qwen2MoeConfig(hidden_size=32, moe_intermediate_size=24, shared_expert_intermediate_size=40,
                         num_experts=5, num_experts_per_tok=2, norm_topk_prob=norm_topk_prob)
    cfg._experts_implementation = "eager"
    block = _randomize(Qwen2MoeSparseMoeBlock(cfg))
    ours = moe_from_hf_block(block)
    assert ours.cfg.shared_d_ff == 40 and ours.cfg.renormalize == norm_topk_prob
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        assert (ours(x)[0] - block(x)).abs().max() <= 1e-5


def _generate(model, prompt):
    with torch.no_grad():
        return model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)


@pytest.fixture
def tiny_mixtral_dir(tmp_path):
    torch.manual_seed(0)
    cfg = MixtralConfig(**TINY, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2)
    MixtralForCausalLM(cfg).save_pretrained(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_qwen2_moe_dir(tmp_path):
    torch.manual_seed(0)
    cfg = Qwen2MoeConfig(**TINY, intermediate_size=64, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                         num_experts=4, num_experts_per_tok=2, mlp_only_layers=[1], norm_topk_prob=False)
    Qwen2MoeForCausalLM(cfg).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("model_dir,n_blocks", [("tiny_mixtral_dir", 2), ("tiny_qwen2_moe_dir", 1)])
def test_swapped_model_generates_like_transformers(model_dir, n_blocks, request):
    from transformers import AutoModelForCausalLM

    path = request.getfixturevalue(model_dir)
    plain = AutoModelForCausalLM.from_pretrained(path).eval()
    swapped = load_hf_moe_model(path).eval()
    adapters = [m for m in swapped.modules() if isinstance(m, HFMoEAdapter)]
    assert len(adapters) == n_blocks
    assert not any(type(m).__name__.endswith("SparseMoeBlock") for m in swapped.modules())
    prompt = torch.randint(1, 96, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(swapped(prompt).logits, plain(prompt).logits, atol=1e-5)
    expected = _generate(plain, prompt)
    assert torch.equal(_generate(swapped, prompt), expected)
    assert len(set(expected[0, 5:].tolist())) > 1  # a degenerate repeat would prove little
    assert adapters[0].last_stats.tokens_per_expert.sum() == 2 * 2  # last step: 2 rows × top-2


def test_swap_returns_block_names_and_shares_weights():
    torch.manual_seed(0)
    model = MixtralForCausalLM(MixtralConfig(**TINY, intermediate_size=64, num_local_experts=4))
    w = model.model.layers[0].mlp.experts.gate_up_proj
    names = swap_hf_moe_blocks(model)
    assert names == ["model.layers.0.mlp", "model.layers.1.mlp"]
    assert model.model.layers[0].mlp.moe.w13.data_ptr() == w.data_ptr()


def test_generation_stage_runs_an_moe_checkpoint_with_our_layer(tiny_mixtral_dir):
    from stages.generate import Generate, Prompt
    from stages.testing.tiny_tokenizers import word_tokenizer

    tok = word_tokenizer(eos="<|endoftext|>", add_eos=False)
    tok.save_pretrained(tiny_mixtral_dir)
    prompts = [Prompt(text="the cat sees"), Prompt(text="who is")]
    plain = Generate(model=str(tiny_mixtral_dir), max_new_tokens=6).process(prompts)
    ours_stage = Generate(model=str(tiny_mixtral_dir), max_new_tokens=6, moe_layer=True)
    ours = ours_stage.process(prompts)
    assert [o.text for o in ours] == [p.text for p in plain]
    model, _ = ours_stage.load()
    assert any(isinstance(m, HFMoEAdapter) for m in model.modules())
