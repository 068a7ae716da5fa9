"""Text generation with any transformers causal LM: prompts or chat templates, batched with left padding."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field, model_validator

from stages.base import ItemFailure, Stage, StageConfig
from stages.runtime.hf_loading import hf_identity, load_hf
from stages.payloads import Generation


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class Prompt(BaseModel):
    text: str | None = Field(None, description="a plain prompt")
    messages: list[ChatMessage] | None = Field(None, description="a chat, rendered with the tokenizer's template")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.text is None) == (self.messages is None):
            raise ValueError("give exactly one of text or messages")
        return self


class GenerateConfig(StageConfig):
    model: str = Field(..., description="hub id or local dir")
    revision: str | None = None
    system_prompt: str | None = Field(None, description="prepended as a system message for chat models")
    template: str = Field("{text}", description="how a plain prompt is wrapped, e.g. 'Q: {text}\\nA:'")
    chat_template: Literal["auto", "always", "never"] = "auto"
    max_new_tokens: int = Field(64, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    num_beams: int = Field(1, ge=1)
    repetition_penalty: float = Field(1.0, gt=0)
    seed: int = 0
    max_input_tokens: int = Field(2048, ge=1)
    generate_batch: int = Field(16, ge=1)
    dtype: str = "auto"
    trust_remote_code: bool = False
    moe_layer: bool = Field(False, description="run Mixtral / Qwen2-MoE blocks with cascadekit's sparse MoE layer")


class Generate(Stage):
    """Prompt -> generated text (transformers AutoModelForCausalLM)."""

    Input = Prompt
    Output = Generation
    Config = GenerateConfig
    kind = "generate"
    uses_gpu = True

    def model_identity(self) -> str:
        return hf_identity(self.config.model, self.config.revision)

    def load(self):
        c = self.config
        prepare = _swap_moe if c.moe_layer else None
        model, tok = load_hf("AutoModelForCausalLM", c.model, c.device, c.dtype, c.revision, c.trust_remote_code,
                             variant="moe" if c.moe_layer else "", prepare=prepare)
        if tok.pad_token is None:  # batching needs a pad token; EOS is the usual stand-in
            tok.pad_token = tok.eos_token
        return model, tok

    def render(self, item: Prompt, tok) -> str:
        cfg = self.config
        use_chat = cfg.chat_template == "always" or (cfg.chat_template == "auto" and tok.chat_template)
        if item.messages is None and not use_chat:
            return cfg.template.format(text=item.text)
        if not tok.chat_template:
            raise ItemFailure("a chat was given but this tokenizer has no chat template", kind="bad_input")
        messages = [m.model_dump() for m in item.messages] if item.messages else [
            {"role": "user", "content": cfg.template.format(text=item.text)}]
        if cfg.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": cfg.system_prompt})
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def process(self, batch: list[Prompt]) -> list:
        model, tok = self.load()
        from stages.translate import model_max_positions

        limit = min(self.config.max_input_tokens, model_max_positions(model) - self.config.max_new_tokens)
        results: list = [None] * len(batch)
        prompts: list[tuple[int, str]] = []
        for i, item in enumerate(batch):
            try:
                prompt = self.render(item, tok)
            except ItemFailure as failure:
                results[i] = failure
                continue
            n = len(tok(prompt)["input_ids"])
            if n > limit:
                results[i] = ItemFailure(f"prompt has {n} tokens; with max_new_tokens={self.config.max_new_tokens} "
                                         f"at most {max(limit, 0)} fit this model (max_input_tokens or positions)")
                continue
            prompts.append((i, prompt))
        step = self.config.generate_batch
        for b in range(0, len(prompts), step):
            chunk = prompts[b:b + step]
            for (i, prompt), text in zip(chunk, self.generate([p for _, p in chunk], model, tok)):
                results[i] = Generation(text=text, prompt=prompt)
        return results

    @torch.no_grad()
    def generate(self, prompts: list[str], model, tok) -> list[str]:
        cfg = self.config
        tok.padding_side = "left"  # decoder-only models continue from the right edge
        chat = bool(tok.chat_template) and cfg.chat_template != "never"
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=not chat).to(model.device)
        sampling = {"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k} \
            if cfg.do_sample else {"do_sample": False}
        if cfg.do_sample:
            torch.manual_seed(cfg.seed)  # reproducible for the same batch composition
        out = model.generate(**enc, max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams,
                             repetition_penalty=cfg.repetition_penalty, pad_token_id=tok.pad_token_id, **sampling)
        new = out[:, enc["input_ids"].shape[1]:]
        return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]


def _swap_moe(model) -> None:
    from stages.methods.moe import swap_hf_moe_blocks

    if not swap_hf_moe_blocks(model):
        raise ValueError("moe_layer=True, but the model has no Mixtral / Qwen2-MoE sparse blocks")
