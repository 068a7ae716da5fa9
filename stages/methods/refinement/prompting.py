"""Prompted causal LMs for self-refine: templates, chat templates, batched generation.

Templates use named slots replaced literally (`{input}`, `{output}`,
`{history}`, `{feedback}`, `{done}`), so a template may contain other braces
(JSON examples, code) without escaping.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_GENERATE = "{input}"
DEFAULT_FEEDBACK = ("Task: {input}\nAnswer: {output}\n"
                    "Give short, concrete feedback on the answer. If it needs no change, reply {done}.\nFeedback:")
DEFAULT_REFINE = ("Task: {input}\n{history}\n"
                  "Write an improved answer that addresses the latest feedback. Reply with the answer only.\nAnswer:")


def fill(template: str, **slots: str) -> str:
    for name, value in slots.items():
        template = template.replace("{" + name + "}", value)
    return template


class PromptLMOptions(BaseModel):
    """How one prompted LM role (generator, critic or refiner) runs."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="hub id or local dir; None = the stage's `model`")
    revision: str | None = None
    system_prompt: str | None = None
    chat_template: Literal["auto", "always", "never"] = "auto"
    max_new_tokens: int = Field(64, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0
    max_input_tokens: int = Field(2048, ge=1, description="longer prompts keep their end (left truncation)")
    batch_size: int = Field(8, ge=1)


class PromptLM:
    """A causal LM answering rendered prompts; chat-formatted when the tokenizer has a chat template."""

    def __init__(self, model, tokenizer, options: PromptLMOptions):
        self.model, self.tok, self.options = model, tokenizer, options
        if self.tok.pad_token is None:  # batching needs a pad token; EOS is the usual stand-in
            self.tok.pad_token = self.tok.eos_token

    @property
    def uses_chat(self) -> bool:
        mode = self.options.chat_template
        if mode == "always" and not self.tok.chat_template:
            raise ValueError("chat_template='always' but this tokenizer has no chat template")
        return mode == "always" or (mode == "auto" and bool(self.tok.chat_template))

    def render(self, prompt: str) -> str:
        if not self.uses_chat:
            return prompt
        messages = [{"role": "user", "content": prompt}]
        if self.options.system_prompt:
            messages.insert(0, {"role": "system", "content": self.options.system_prompt})
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def room(self) -> int:
        """Prompt tokens that fit next to max_new_tokens in the model's context."""
        limit = getattr(self.model.config, "max_position_embeddings", None) or getattr(
            self.model.config, "n_positions", None) or 1_000_000
        return max(1, min(self.options.max_input_tokens, limit - self.options.max_new_tokens))

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> list[str]:
        o = self.options
        out: list[str] = []
        for b in range(0, len(prompts), o.batch_size):
            out += self._generate([self.render(p) for p in prompts[b:b + o.batch_size]])
        return out

    def _generate(self, rendered: list[str]) -> list[str]:
        o, tok = self.options, self.tok
        tok.padding_side = "left"  # decoder-only models continue from the right edge
        tok.truncation_side = "left"  # the end of a prompt (latest feedback, "Answer:") matters most
        enc = tok(rendered, return_tensors="pt", padding=True, truncation=True, max_length=self.room(),
                  add_special_tokens=not self.uses_chat).to(self.model.device)
        sampling = {"do_sample": True, "temperature": o.temperature, "top_p": o.top_p} if o.do_sample \
            else {"do_sample": False}
        if o.do_sample:
            torch.manual_seed(o.seed)
        gen = self.model.generate(**enc, max_new_tokens=o.max_new_tokens, pad_token_id=tok.pad_token_id, **sampling)
        return [t.strip() for t in tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
