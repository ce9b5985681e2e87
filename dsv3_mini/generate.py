"""Cached autoregressive decoding, plain and speculative (MTP drafts, the main model verifies)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from .kv_cache import KVCache
from .model import DeepSeekV3

R = TypeVar("R")


def decoding(fn: Callable[..., R]) -> Callable[..., R]:
    """Run a decoding function under ``torch.inference_mode`` and hand back normal tensors.

    Inference mode skips autograd's bookkeeping (version counters, views' metadata) that ``no_grad`` still keeps: a
    greedy 1,024 + 64-token ``generate`` of "mini" went from 207 to 186 ms (median of 12 paired calls; see
    benchmarks/README.md, "Decoding profile"). The same kernels run, so the tokens are the same. The returned
    tensors are cloned outside it: inference tensors cannot be saved for a later backward, and GRPO trains on the
    tokens it sampled.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode():
            out = fn(*args, **kwargs)
        if isinstance(out, tuple):
            return tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in out)
        return out.clone()
    return wrapper


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


@decoding
def generate(model: DeepSeekV3, prompt: torch.Tensor | Sequence[int], max_new_tokens: int,
             temperature: float = 0.0, top_k: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Decode ``max_new_tokens`` after ``prompt`` with a KV cache; temperature 0 is greedy.

    Returns prompt and continuation together, (batch, prompt_len + max_new_tokens) — 1-D if the prompt was 1-D.
    A batch of prompts (of one length) decodes together, one forward per step for all rows: with ``temperature`` > 0
    and a seeded ``generator`` that is how many samples of one prompt are drawn at once (GRPO's group of G outputs,
    V3 report §5.2.2).
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
        # every position the run will hold, allocated once; the head runs on the last position only
        cache = model.new_cache(capacity=tokens.shape[1] + max_new_tokens)
        logits = model(tokens, cache=cache, logits_to_keep=1).logits[:, -1]
        for step in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, generator)[:, None]
            out.append(nxt)
            if step + 1 < max_new_tokens:
                logits = model(nxt, cache=cache, logits_to_keep=1).logits[:, -1]
    result = torch.cat(out, dim=1)
    return result[0] if flat else result


@dataclass
class SpeculativeStats:
    """Counts of a speculative run: ``drafted`` MTP proposals, ``accepted`` of them, ``forward_passes`` of the main
    model (the prefill included), ``new_tokens`` produced; and where its time went (wall clock, not printed):
    ``verify_seconds`` in the main model's verify forwards, ``draft_seconds`` in the MTP drafts (the first included).
    """

    drafted: int = 0
    accepted: int = 0
    forward_passes: int = 0
    new_tokens: int = 0
    verify_seconds: float = field(default=0.0, repr=False, compare=False)
    draft_seconds: float = field(default=0.0, repr=False, compare=False)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_forward(self) -> float:
        return self.new_tokens / self.forward_passes if self.forward_passes else 0.0


@decoding
def speculative_generate(model: DeepSeekV3, prompt: torch.Tensor | Sequence[int],
                         max_new_tokens: int) -> tuple[torch.Tensor, SpeculativeStats]:
    """Greedy decoding where MTP module 1 drafts the token after next and the main model verifies it.

    Each main-model forward takes [t_next, draft]: its first output checks the draft (greedy acceptance: accept iff
    it is the main model's own argmax), its second gives the next token for free when the draft is accepted. So the
    result is exactly ``generate(model, prompt, max_new_tokens, temperature=0.0)``, in fewer forward passes.
    V3 drafts with its one MTP module (depth 1), as here; deeper modules are not used for drafting.
    Batch size 1 (rows of a batch would accept different numbers of tokens). Returns (tokens, stats).
    """
    if not model.mtp:
        raise ValueError("speculative_generate needs a model with num_nextn_predict_layers >= 1 (an MTP module)")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 0")
    flat = torch.as_tensor(prompt).dim() == 1
    tokens = as_batch(prompt)
    if tokens.shape[0] != 1:
        raise ValueError(f"speculative_generate decodes one sequence at a time; got batch size {tokens.shape[0]}")
    limit = model.cfg.max_position_embeddings
    if tokens.shape[1] + max_new_tokens + 1 > limit:
        raise ValueError(f"prompt ({tokens.shape[1]}) + max_new_tokens ({max_new_tokens}) + 1 draft position exceeds "
                         f"max_position_embeddings={limit}")
    stats = SpeculativeStats()
    if max_new_tokens == 0:
        return (tokens[0] if flat else tokens), stats
    capacity = tokens.shape[1] + max_new_tokens + 1
    mtp, cache, mtp_cache = model.mtp[0], model.new_cache(capacity), KVCache(1, capacity)

    def draft_from(h: torch.Tensor, next_tokens: torch.Tensor) -> torch.Tensor:
        # MTP position i pairs h_i with the embedding of token i+1; both are final by now
        start = time.perf_counter()
        cos, sin = model.rope(len(mtp_cache), h.shape[1])
        hk = mtp(h, model.embed(next_tokens), cos, sin, mtp_cache)
        draft = model.head(mtp.norm(hk[:, -1:])).argmax(-1)
        stats.draft_seconds += time.perf_counter() - start
        return draft

    out = model(tokens, cache=cache, logits_to_keep=1)
    stats.forward_passes += 1
    nxt = out.logits.argmax(-1)
    draft = draft_from(out.hidden_states, torch.cat([tokens[:, 1:], nxt], dim=1))
    produced, count = [nxt], 1
    while count < max_new_tokens:
        start = time.perf_counter()
        verify = model(torch.cat([nxt, draft], dim=1), cache=cache)
        stats.verify_seconds += time.perf_counter() - start
        stats.forward_passes += 1
        stats.drafted += 1
        predicted = verify.logits.argmax(-1)  # (1, 2): the token after nxt, and after the draft
        if torch.equal(predicted[:, :1], draft):
            stats.accepted += 1
            nxt = predicted[:, 1:]
            produced += [draft, nxt]
            count += 2
            draft = draft_from(verify.hidden_states, torch.cat([draft, nxt], dim=1))
        else:
            cache.crop(len(cache) - 1)  # forget the rejected draft's position
            nxt = predicted[:, :1]
            produced.append(nxt)
            count += 1
            draft = draft_from(verify.hidden_states[:, :1], nxt)
    new = torch.cat(produced, dim=1)[:, :max_new_tokens]
    stats.new_tokens = new.shape[1]
    result = torch.cat([tokens, new], dim=1)
    return (result[0] if flat else result), stats
