"""Pipeline parallelism: the mini DeepSeek-V3 cut into stages, and the single-process step a pipeline must equal.

V3 trains with 16-way pipeline parallelism (report §3.2): the 61 blocks are cut into consecutive stages, each on its
own devices; micro-batches flow through them. Here the stages are:

    stage 0          embedding + the first blocks
    stage 1 … S−2    blocks
    stage S−1        the last blocks + final RMSNorm + output head (the loss is computed by the schedule)

``split_stages(model, n_stages)`` returns them as ``Stage`` modules that *share* the model's parameters (nothing is
copied), so gradients land in the model's own ``.grad`` and can be compared by name with ``reference_step``, the
single-process step on the same micro-batches. ``run_pipeline`` (``pipeline_run.py``) runs the real schedules on
gloo processes.

What we leave out, and why: ``pipeline_config`` turns off MTP (``num_nextn_predict_layers=0``) and the tiny
sequence-wise balance loss (``seq_aux_alpha=0``), so the loss is the main next-token cross-entropy alone. V3 keeps
the MTP module on the last PP rank and *shares* the embedding and head physically with the main model by placing the
shallowest and deepest layers on the same rank (§3.2.3) — DualPipe's two directions (and the V-shape of DualPipeV)
do exactly that: rank 0 holds stage 0 and the last stage. The bias of loss-free balancing is not a gradient; it
would be updated after the step on each rank for its own layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, preset
from .model import DeepSeekV3
from .rope import RotaryEmbedding

STAGES_PER_RANK = {"gpipe": 1, "1f1b": 1, "zbv": 2, "dualpipev": 2, "dualpipe": 1}


def pipeline_config(layers: int = 8) -> ModelConfig:
    """The tiny preset with ``layers`` blocks (8: divisible into 2, 4 and 8 stages), no MTP, no balance loss."""
    return preset("tiny").replace(num_hidden_layers=layers, num_nextn_predict_layers=0, seq_aux_alpha=0.0,
                                  name=f"tiny-{layers}-layers")


def check_pipeline_config(cfg: ModelConfig, n_stages: int) -> None:
    """Raise ``ValueError`` if ``cfg`` cannot be cut into ``n_stages`` equal stages or has terms we do not pipeline."""
    if n_stages < 1 or cfg.num_hidden_layers % n_stages:
        raise ValueError(f"num_hidden_layers={cfg.num_hidden_layers} is not divisible by the number of stages "
                         f"{n_stages}; choose layers from {divisors_up_to(cfg.num_hidden_layers)} stages")
    if cfg.num_nextn_predict_layers:
        raise ValueError(f"num_nextn_predict_layers={cfg.num_nextn_predict_layers}: the pipeline lesson trains "
                         "without MTP; use pipeline_config() or set it to 0")
    if cfg.balance == "aux-loss" or (cfg.balance == "loss-free" and cfg.seq_aux_alpha > 0):
        raise ValueError(f"balance={cfg.balance!r} with a balance loss: the pipelined loss is the cross-entropy "
                         "alone; set seq_aux_alpha=0 (loss-free) or balance='none'")


def divisors_up_to(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class Stage(nn.Module):
    """Blocks ``first .. last-1`` of a model; with the embedding if it is stage 0, with norm + head if it is the last.

    forward: stage 0 takes tokens (batch, seq) int64, the others hidden states (batch, seq, hidden); the last stage
    returns logits (batch, seq, vocab), the others hidden states. Parameters are the model's own (shared).
    """

    def __init__(self, model: DeepSeekV3, index: int, n_stages: int):
        super().__init__()
        check_pipeline_config(model.cfg, n_stages)
        per = model.cfg.num_hidden_layers // n_stages
        self.index, self.n_stages, self.first = index, n_stages, index * per
        self.is_first, self.is_last = index == 0, index == n_stages - 1
        self.embed = model.embed if self.is_first else None
        self.blocks = nn.ModuleList(model.layers[self.first : self.first + per])
        self.norm = model.norm if self.is_last else None
        self.head = model.head if self.is_last else None
        self.rope = RotaryEmbedding.for_model(model.cfg)
        names = {id(p): n for n, p in model.named_parameters()}
        self.model_names = [names[id(p)] for p in self.parameters()]  # model-level name of each parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.shape[1]
        cos, sin = self.rope(0, seq)
        if self.embed is not None:
            x = self.embed(x)
        for block in self.blocks:
            x = block(x, cos, sin)
        if self.head is not None:
            return self.head(self.norm(x))
        return x

    def named_grads(self) -> dict[str, torch.Tensor]:
        """{model parameter name: gradient} of this stage (zeros where no gradient arrived)."""
        return {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                for n, p in zip(self.model_names, self.parameters(), strict=True)}


def split_stages(model: DeepSeekV3, n_stages: int) -> list[Stage]:
    """The model as ``n_stages`` consecutive stages (embedding … blocks … norm + head)."""
    return [Stage(model, i, n_stages) for i in range(n_stages)]


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of one micro-batch: logits (mb, seq, vocab), targets (mb, seq)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def make_batch(cfg: ModelConfig, micro_batches: int, micro_batch_size: int = 1, seq_len: int = 16,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens and their next tokens: two (micro_batches · micro_batch_size, seq_len) int64 tensors."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, cfg.vocab_size, (micro_batches * micro_batch_size, seq_len + 1), generator=g)
    return data[:, :-1].contiguous(), data[:, 1:].contiguous()


def build_model(cfg: ModelConfig, seed: int = 0) -> DeepSeekV3:
    """The same initial weights in every process: seeded construction."""
    torch.manual_seed(seed)
    return DeepSeekV3(cfg)


def reference_step(cfg: ModelConfig, tokens: torch.Tensor, targets: torch.Tensor, micro_batches: int,
                   seed: int = 0) -> tuple[list[float], dict[str, torch.Tensor]]:
    """One process, the same micro-batches: per-micro-batch losses and the gradients of their mean.

    Each micro-batch's loss is backpropagated in order, accumulating into ``.grad``, and the sum is divided by
    the number of micro-batches at the end — the arithmetic of ``torch.distributed.pipelining``'s GPipe and 1F1B.
    It runs on one torch thread, as each pipeline rank does (a reduction split over threads sums in another order).
    """
    model = build_model(cfg, seed)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for x, y in zip(tokens.tensor_split(micro_batches), targets.tensor_split(micro_batches), strict=True):
            loss = loss_fn(model(x).logits, y)
            loss.backward()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    grads = {}
    for n, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        grads[n] = g.div_(micro_batches).clone()
    return losses, grads


def compare_grads(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> dict[str, float | bool]:
    """How far pipelined gradients are from the reference: bitwise equality, max |Δ| and max relative |Δ|.

    The relative difference of a tensor is max|Δ| / max|reference| (so tiny entries do not inflate it)."""
    if set(got) != set(want):
        missing = sorted(set(want) - set(got))[:3]
        raise ValueError(f"gradients of {len(set(want) - set(got))} parameters are missing, e.g. {missing}")
    diff = rel = 0.0
    bitwise = True
    for n, w in want.items():
        d = (got[n] - w).abs().max().item() if w.numel() else 0.0
        bitwise &= torch.equal(got[n], w)
        diff = max(diff, d)
        rel = max(rel, d / max(w.abs().max().item(), 1e-30))
    return {"bitwise": bitwise, "max_abs_diff": diff, "max_rel_diff": rel}
