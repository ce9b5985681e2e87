"""Cached autoregressive decoding."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .model import DeepSeekV3


def as_batch(prompt: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """A prompt as a (batch, seq) int64 tensor; accepts a list of ids, a 1-D or a 2-D tensor."""
    tokens = torch.as_tensor(prompt, dtype=torch.long)
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2 or tokens.shape[1] == 0:
        raise ValueError(f"prompt must be a non-empty sequence of token ids; got shape {tuple(tokens.shape)}")
    return tokens


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token from (batch, vocab) logits: argmax when temperature is 0, else a top-k sample."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model: DeepSeekV3, prompt: torch.Tensor | Sequence[int], max_new_tokens: int,
             temperature: float = 0.0, top_k: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Decode ``max_new_tokens`` after ``prompt`` with a KV cache; temperature 0 is greedy.

    Returns prompt and continuation together, (batch, prompt_len + max_new_tokens) — 1-D if the prompt was 1-D.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 0")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be None or >= 1")
    flat = torch.as_tensor(prompt).dim() == 1
    tokens = as_batch(prompt)
    limit = model.cfg.max_position_embeddings
    if tokens.shape[1] + max_new_tokens > limit:
        raise ValueError(
            f"prompt ({tokens.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds max_position_embeddings={limit}"
        )
    out = [tokens]
    if max_new_tokens:
        cache = model.new_cache()
        logits = model(tokens, cache=cache).logits[:, -1]
        for step in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, generator)[:, None]
            out.append(nxt)
            if step + 1 < max_new_tokens:
                logits = model(nxt, cache=cache).logits[:, -1]
    result = torch.cat(out, dim=1)
    return result[0] if flat else result
