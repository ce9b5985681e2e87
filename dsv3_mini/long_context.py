"""Long context: a model trained at a short length, read at 1×–8× that length with each RoPE method, then extended.

The task is passkey retrieval (Mohtashami & Jaggi 2023; V3 reports the related Needle-in-a-Haystack test up to 128K):
filler text with one sentence ``"the pass key is 48213. "`` at a chosen depth, and at the end
``"what is the pass key? 48213"``. A model retrieves when it predicts all five digits after the question. Scored with
teacher forcing: the five argmax predictions are all right exactly when greedy decoding writes the five digits.

Training (``train_passkey``) packs one or two documents of random length and depth into every sequence, so the
question comes at many positions and every batch holds many retrievals; the loss is the mean next-byte cross-entropy
plus ``answer_weight`` × the mean cross-entropy of the answer digits (the filler alone would teach no retrieval).
Reading past the training length (``evaluate``) needs only new RoPE tables: rotary embeddings have no weights, so
``with_rope`` swaps the method and keeps every parameter. The extension (``extend``) mirrors V3's recipe (report §4.3:
4K → 32K → 128K, two 1,000-step phases, the same YaRN s in both) at mini scale: one fixed s, a phase at 2× the
training length, then one at 4×.

The filler is the English domain of ``dsv3_mini.data`` (no digits in it, so the key is the only number).
Command line: ``python -m dsv3_mini.long_context --out checkpoints/passkey`` (``--help`` lists the flags).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .balancing import apply_bias_update, balance_loss
from .checkpoint import atomic_write_text, export_model, load_model
from .cli import command_line, command_parser, config_from_args, run_command, setting
from .config import ROPE_TYPES, ModelConfig, check_choice, check_positive, preset
from .data import DOMAINS, encode, generate_corpus
from .kv_cache import bytes_per_token, cache_bytes
from .model import DeepSeekV3
from .utils import seed_everything

KEY_TEXT = "the pass key is {key}. "
QUESTION_TEXT = "what is the pass key? {key}\n"
KEY_DIGITS = 5
METHODS = ("none", *ROPE_TYPES)  # "none": plain RoPE, read past its training length unchanged
_OVERHEAD = len(KEY_TEXT.format(key="0" * KEY_DIGITS)) + len(QUESTION_TEXT.format(key="0" * KEY_DIGITS))
MIN_DOC = _OVERHEAD + 8  # the shortest training document: key, question and 8 bytes of filler


def filler_stream(n_bytes: int, seed: int) -> torch.Tensor:
    """``n_bytes`` of the built-in corpus's English narration (the other domains removed), as byte ids (n,)."""
    tokens, domains = generate_corpus(4 * n_bytes + 1024, seed)  # English is about a third of the corpus's bytes
    english = tokens[domains == DOMAINS.index("english")]
    if len(english) < n_bytes:
        raise ValueError(f"the corpus of seed {seed} has only {len(english)} English bytes; {n_bytes} asked")
    return english[:n_bytes]


def passkey_document(length: int, depth: float, key: int, filler: torch.Tensor,
                     start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One document of exactly ``length`` bytes: filler from ``filler[start:]``, the key sentence after a fraction
    ``depth`` (0..1) of the filler, more filler, then the question and the answer and a newline.

    Returns (bytes (length,), positions (KEY_DIGITS,) of the answer digits in the document).
    """
    if not 0 <= depth <= 1:
        raise ValueError(f"depth={depth} must be between 0 (key first) and 1 (key just before the question)")
    if length < _OVERHEAD:
        raise ValueError(f"length={length} is too short: the key and the question alone take {_OVERHEAD} bytes")
    if not 10 ** (KEY_DIGITS - 1) <= key < 10**KEY_DIGITS:
        raise ValueError(f"key={key} must have exactly {KEY_DIGITS} digits")
    n_filler = length - _OVERHEAD
    before = round(depth * n_filler)
    text = filler[start : start + n_filler]
    if len(text) < n_filler:
        raise ValueError(f"filler has {len(filler)} bytes; start={start} + {n_filler} needed")
    question = encode(QUESTION_TEXT.format(key=key))
    doc = torch.cat([text[:before], encode(KEY_TEXT.format(key=key)), text[before:], question])
    first = length - 1 - KEY_DIGITS  # the digits sit just before the final newline
    return doc, torch.arange(first, first + KEY_DIGITS)


def training_batch(batch_size: int, seq_len: int, filler: torch.Tensor, generator: torch.Generator,
                   min_doc: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, targets, answer) of shape (batch, seq_len): each row packs documents of random length (at least
    ``min_doc``, default the key + question + 8 bytes) and random depth; ``answer`` marks targets that are digits."""
    min_doc = min_doc or MIN_DOC
    rows, marks = [], []
    for _ in range(batch_size):
        docs, mark, left = [], torch.zeros(seq_len + 1, dtype=torch.bool), seq_len + 1
        while left > 0:
            n = left if left < 2 * min_doc else int(torch.randint(min_doc, left + 1, (1,), generator=generator))
            if left - n < min_doc:
                n = left
            key = int(torch.randint(10 ** (KEY_DIGITS - 1), 10**KEY_DIGITS, (1,), generator=generator))
            depth = float(torch.rand((), generator=generator))
            start = int(torch.randint(0, len(filler) - n, (1,), generator=generator))
            doc, pos = passkey_document(n, depth, key, filler, start)
            mark[pos + (seq_len + 1 - left)] = True
            docs.append(doc)
            left -= n
        rows.append(torch.cat(docs))
        marks.append(mark)
    seq, mark = torch.stack(rows), torch.stack(marks)
    return seq[:, :-1], seq[:, 1:], mark[:, 1:]


def passkey_loss(model: DeepSeekV3, tokens: torch.Tensor, targets: torch.Tensor, answer: torch.Tensor,
                 answer_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(training loss, next-byte loss, answer loss): mean CE + answer_weight · mean CE of the digits + balance."""
    logits = model(tokens).logits
    ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
    lm, ans = ce.mean(), ce[answer].mean()
    loss = lm + answer_weight * ans
    balance = balance_loss(model)
    if balance is not None:
        loss = loss + balance
    return loss, lm, ans


@dataclass
class PasskeyConfig:
    """A passkey run: the model (``preset`` with ``max_position_embeddings`` room for 8×), its training and the
    extension fine-tune (``extend_steps`` per phase at 2× then 4× ``seq_len``, scale ``extend_factor``)."""

    preset: str = setting("tiny", "model preset (dsv3_mini.config.preset)", choices=("tiny", "mini"))
    seq_len: int = setting(128, "training length in bytes (the model is read at 1×, 2×, 4×, 8× this)")
    steps: int = setting(1500, "optimizer steps of the training at seq_len")
    batch_size: int = setting(32, "sequences per batch")
    lr: float = setting(3e-3, "peak learning rate (linear warm-up over 5% of the steps, then cosine to 10%)")
    answer_weight: float = setting(3.0, "weight of the answer digits' cross-entropy in the loss")
    extend_steps: int = setting(100, "optimizer steps of each extension phase (2×, then 4× seq_len)")
    extend_lr: float = setting(1e-3, "learning rate of the extension phases (constant)")
    extend_factor: float = setting(4.0, "the scale s of linear / ntk / yarn during and after the extension")
    seed: int = setting(0, "seed of the weights, the filler and the batches")
    threads: int = setting(1, "torch threads")

    def __post_init__(self) -> None:
        check_choice("preset", self.preset, ("tiny", "mini"))
        check_positive(self, "seq_len", "steps", "batch_size", "threads")
        if self.seq_len < MIN_DOC:
            raise ValueError(f"seq_len={self.seq_len} must be at least {MIN_DOC} (one document with 8 filler bytes)")
        if self.extend_steps < 0 or self.extend_factor < 1 or not self.lr > 0:
            raise ValueError("extend_steps must be >= 0, extend_factor >= 1 and lr > 0")

    def model_config(self) -> ModelConfig:
        return preset(self.preset).replace(max_position_embeddings=8 * self.seq_len, num_nextn_predict_layers=0,
                                           name=f"{self.preset}-passkey")


def _lr(step: int, steps: int, peak: float) -> float:
    warm = max(1, steps // 20)
    if step <= warm:
        return peak * step / warm
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm))))


def _fit(model: DeepSeekV3, pc: PasskeyConfig, filler: torch.Tensor, generator: torch.Generator, steps: int,
         seq_len: int, batch_size: int, lr: float | None, desc: str, progress: bool) -> list[dict[str, float]]:
    """``steps`` AdamW steps on passkey batches of ``seq_len``; ``lr`` None: the warm-up + cosine schedule of
    ``pc.lr``, else that constant rate. Returns one record per 50 steps (and the last)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=pc.lr, betas=(0.9, 0.95))
    model.train()
    history = []
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, unit="step"):
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, pc.lr) if lr is None else lr
        tokens, targets, answer = training_batch(batch_size, seq_len, filler, generator)
        loss, lm, ans = passkey_loss(model, tokens, targets, answer, pc.answer_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        apply_bias_update(model)
        if step % 50 == 0 or step == steps:
            history.append({"step": step, "seq_len": seq_len, "loss": lm.item(), "answer_loss": ans.item()})
    return history


def train_passkey(pc: PasskeyConfig, progress: bool = True) -> tuple[DeepSeekV3, list[dict[str, float]]]:
    """A model of ``pc.model_config()`` trained on passkey batches of ``pc.seq_len`` (plain RoPE)."""
    threads = torch.get_num_threads()
    try:
        generator = seed_everything(pc.seed, pc.threads)
        filler = filler_stream(400_000, pc.seed)
        model = DeepSeekV3(pc.model_config())
        history = _fit(model, pc, filler, generator, pc.steps, pc.seq_len, pc.batch_size, None,
                       f"passkey seed {pc.seed}", progress)
        return model.eval(), history
    finally:
        torch.set_num_threads(threads)


def with_rope(model: DeepSeekV3, method: str, factor: float, original_length: int) -> DeepSeekV3:
    """The same weights with another RoPE: ``method`` in METHODS ("none" = plain), scale ``factor`` (>= 1)."""
    check_choice("method", method, METHODS)
    scaling = None
    if method != "none":
        scaling = {"rope_type": method, "factor": factor, "original_max_position_embeddings": original_length}
    out = DeepSeekV3(model.cfg.replace(rope_scaling=scaling))
    out.load_state_dict(model.state_dict())
    return out.train(model.training)


def evaluation_documents(length: int, depths: tuple[float, ...], trials: int,
                         seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Documents (len(depths) · trials, length) and their answer positions (same rows, KEY_DIGITS): for each depth
    ``trials`` keys and filler windows from a filler stream the training never saw (seed + 1000)."""
    g = torch.Generator().manual_seed(seed)
    filler = filler_stream(max(20_000, 4 * length), seed + 1000)
    docs, positions = [], []
    for depth in depths:
        for _ in range(trials):
            key = int(torch.randint(10 ** (KEY_DIGITS - 1), 10**KEY_DIGITS, (1,), generator=g))
            start = int(torch.randint(0, len(filler) - length, (1,), generator=g))
            doc, pos = passkey_document(length, depth, key, filler, start)
            docs.append(doc)
            positions.append(pos)
    return torch.stack(docs), torch.stack(positions)


@torch.no_grad()
def evaluate(model: DeepSeekV3, lengths: tuple[int, ...], depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
             trials: int = 8, seed: int = 0, bins: int = 16, batch_size: int = 8) -> dict[str, Any]:
    """Retrieval accuracy per length × depth and the next-byte loss by position, on fresh documents.

    Returns ``{"lengths", "depths", "accuracy": [[per depth] per length], "accuracy_by_length": [...],
    "loss_by_position": [[per bin] per length], "bin_edges": [[...] per length]}``: bin b of length L averages the
    cross-entropy of the targets at positions L·b/bins .. L·(b+1)/bins − 1 (the answer digits included).
    """
    was_training = model.training
    model.eval()
    acc, acc_len, loss_pos, edges = [], [], [], []
    for length in lengths:
        docs, pos = evaluation_documents(length, depths, trials, seed)
        correct, ce = [], []
        for rows in torch.arange(len(docs)).split(batch_size):
            logits = model(docs[rows, :-1]).logits
            c = F.cross_entropy(logits.flatten(0, 1).float(), docs[rows, 1:].flatten(), reduction="none")
            ce.append(c.view(len(rows), -1))
            at = pos[rows] - 1  # the logits at position p - 1 predict the byte at p
            guess = logits.gather(1, at[..., None].expand(-1, -1, logits.shape[-1])).argmax(-1)
            correct.append((guess == docs[rows].gather(1, pos[rows])).all(dim=1))
        ok = torch.cat(correct).float().view(len(depths), trials)
        acc.append(ok.mean(dim=1).tolist())
        acc_len.append(float(ok.mean()))
        ce_pos = torch.cat(ce).mean(dim=0)  # (length - 1,)
        cuts = [round(b * len(ce_pos) / bins) for b in range(bins + 1)]
        loss_pos.append([float(ce_pos[a:b].mean()) for a, b in zip(cuts[:-1], cuts[1:], strict=True)])
        edges.append(cuts)
    model.train(was_training)
    return {"lengths": list(lengths), "depths": list(depths), "accuracy": acc, "accuracy_by_length": acc_len,
            "loss_by_position": loss_pos, "bin_edges": edges}


def extend(model: DeepSeekV3, method: str, pc: PasskeyConfig, seed: int = 0,
           progress: bool = True) -> tuple[DeepSeekV3, list[dict[str, float]]]:
    """The two-phase extension at mini scale: ``method`` at s = ``pc.extend_factor`` (plain RoPE for "none"),
    ``pc.extend_steps`` steps at 2 × ``pc.seq_len`` with half the training batch, then as many at 4 × with a quarter
    of that (V3: 1,920 then 480 sequences), constant ``pc.extend_lr``. The model passed in is not changed."""
    threads = torch.get_num_threads()
    try:
        generator = seed_everything(10_000 + seed, pc.threads)
        filler = filler_stream(400_000, pc.seed)
        out = with_rope(model, method, pc.extend_factor, pc.seq_len)
        history = []
        for mult, batch in ((2, max(1, pc.batch_size // 2)), (4, max(1, pc.batch_size // 8))):
            history += _fit(out, pc, filler, generator, pc.extend_steps, mult * pc.seq_len, batch, pc.extend_lr,
                            f"extend {method} {mult}×", progress)
        return out.eval(), history
    finally:
        torch.set_num_threads(threads)


def scaled_for(model: DeepSeekV3, method: str, length: int, train_len: int) -> DeepSeekV3:
    """Without fine-tuning: ``method`` with s = length / train_len (s = 1 within the training length)."""
    return with_rope(model, method, max(1.0, length / train_len), train_len)


def compare_methods(model: DeepSeekV3, pc: PasskeyConfig, trials: int = 8, seed: int = 0,
                    progress: bool = True) -> dict[str, Any]:
    """Every method at 1×, 2×, 4×, 8× ``pc.seq_len``, without fine-tuning (s = length / training length per length)
    and after ``extend`` (s = ``pc.extend_factor``): ``{"no_finetune": {method: evaluate…}, "finetuned": {…}}``."""
    lengths = tuple(m * pc.seq_len for m in (1, 2, 4, 8))
    result: dict[str, Any] = {"no_finetune": {}, "finetuned": {}}
    for method in METHODS:
        per = [evaluate(scaled_for(model, method, n, pc.seq_len), (n,), trials=trials, seed=seed) for n in lengths]
        result["no_finetune"][method] = {k: ([v for p in per for v in p[k]] if k != "depths" else per[0][k])
                                         for k in per[0]}
        tuned, _ = extend(model, method, pc, seed, progress)
        result["finetuned"][method] = evaluate(tuned, lengths, trials=trials, seed=seed)
    return result


def cache_by_length(cfg: ModelConfig, lengths: tuple[int, ...]) -> dict[str, Any]:
    """KV-cache bytes (BF16, batch 1) at each length for MLA and for MHA of the same heads:
    ``{"lengths", "mla", "mha", "mla_per_token", "mha_per_token"}`` from ``dsv3_mini.kv_cache.bytes_per_token``."""
    mla, mha = cfg.replace(attention="mla"), cfg.replace(attention="mha", head_dim=cfg.v_head_dim)
    return {"lengths": list(lengths), "mla": [cache_bytes(mla, n) for n in lengths],
            "mha": [cache_bytes(mha, n) for n in lengths], "mla_per_token": bytes_per_token(mla),
            "mha_per_token": bytes_per_token(mha)}


def write_results(out: Path, pc: PasskeyConfig, history: list[dict[str, float]], results: dict[str, Any],
                  command: str) -> None:
    """``results.json`` in ``out`` (atomically): the command, the settings, the training history and ``results``."""
    doc = {"command": command, "config": dataclasses.asdict(pc), "history": history, **results}
    atomic_write_text(json.dumps(doc, indent=1) + "\n", out / "results.json")


def load_run(path: str | Path) -> tuple[DeepSeekV3, dict[str, Any]]:
    """The shipped passkey model (``model.safetensors``, bf16) and its ``results.json``."""
    path = Path(path)
    if not (path / "results.json").is_file() or not (path / "model.safetensors").is_file():
        raise ValueError(f"no passkey run at {str(path)!r}; make one with "
                         "python -m dsv3_mini.long_context --out DIR")
    return load_model(path / "model.safetensors"), json.loads((path / "results.json").read_text())


PROG = "python -m dsv3_mini.long_context"


def main(argv: list[str] | None = None) -> int:
    p = command_parser(PasskeyConfig, PROG, __doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for model.safetensors and results.json")
    p.add_argument("--trials", type=int, default=8, help="documents per length × depth cell")
    return run_command(p, argv, lambda args: _run(args, argv))


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    pc = config_from_args(PasskeyConfig, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, history = train_passkey(pc, progress=not args.no_progress)
    export_model(model, out / "model.safetensors")
    shipped = load_model(out / "model.safetensors")  # every number is measured on the bf16 weights that ship
    results = compare_methods(shipped, pc, trials=args.trials, progress=not args.no_progress)
    results["kv_cache"] = cache_by_length(pc.model_config(), tuple(m * pc.seq_len for m in (1, 2, 4, 8)))
    write_results(out, pc, history, results, command_line(PROG, argv))
    for key, label in (("no_finetune", "without fine-tuning"), ("finetuned", "after the extension")):
        for method, r in results[key].items():
            print(f"{label:>20} {method:>6}: retrieval at 1×, 2×, 4×, 8× "
                  + ", ".join(f"{a:.0%}" for a in r["accuracy_by_length"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
