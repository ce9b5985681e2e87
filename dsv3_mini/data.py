"""Training data without downloads: a generated multi-domain corpus, or any text file the learner brings.

Tokenizer: bytes. Every text is already a sequence of bytes 0..255, so the vocabulary is 256, nothing is
downloaded or trained, any file works, and a learner can read a token id as a character. The price is longer
sequences than a BPE would give — fine for a course model that trains on a CPU.

The built-in corpus mixes four domains, generated from a seed, so an MoE has something to specialise on and
MTP has something to predict two tokens ahead: arithmetic with correct answers, a small Python-like code domain,
SQL-style schema migrations, and templated English narration. Every byte carries its domain label.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

DOMAINS = ("arithmetic", "code", "sql", "english")
TEXT_DOMAINS = ("text",)


def encode(text: str) -> torch.Tensor:
    """UTF-8 bytes of ``text`` as int64 token ids."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def decode(tokens: torch.Tensor | list[int]) -> str:
    """Token ids back to text; bytes that do not form valid UTF-8 show as �."""
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


# -- the four generated domains ---------------------------------------------------------------------------------

def _arithmetic(rng: random.Random) -> str:
    a, b = rng.randint(0, 999), rng.randint(0, 99)
    op = rng.choice("+-*")
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    return f"{a}{op}{b}={result}\n"


_NAMES = ["total", "count", "items", "value", "score", "name", "data", "result", "index", "size"]
_FUNCS = ["add", "scale", "clip", "shift", "merge", "load", "parse", "check"]


def _code(rng: random.Random) -> str:
    n, f, k = rng.choice(_NAMES), rng.choice(_FUNCS), rng.randint(1, 9)
    templates = [
        f"def {f}_{k}({n}):\n    return {n} + {k}\n\n",
        f"for i in range({k}):\n    {n} += i\n",
        f"if {n} % {k} == 0:\n    print('{n}')\n",
        f"{n} = [{', '.join(str(rng.randint(0, 9)) for _ in range(k % 4 + 2))}]\n",
        f"while {n} < {k * 10}:\n    {n} = {n} * 2\n",
        f"def {f}({n}, k={k}):\n    if {n} is None:\n        return k\n    return {f}({n} - 1)\n\n",
    ]
    return rng.choice(templates)


_TABLES = ["users", "orders", "items", "events", "accounts", "posts"]
_COLUMNS = ["email", "created_at", "status", "price", "title", "owner_id", "age"]
_TYPES = ["INTEGER", "TEXT", "REAL", "TIMESTAMP", "BOOLEAN"]


def _sql(rng: random.Random) -> str:
    t, c, ty = rng.choice(_TABLES), rng.choice(_COLUMNS), rng.choice(_TYPES)
    templates = [
        f"ALTER TABLE {t} ADD COLUMN {c} {ty};\n",
        f"ALTER TABLE {t} DROP COLUMN {c};\n",
        f"CREATE TABLE {t} (id INTEGER PRIMARY KEY, {c} {ty} NOT NULL);\n",
        f"CREATE INDEX idx_{t}_{c} ON {t} ({c});\n",
        f"DROP INDEX idx_{t}_{c};\n",
        f"ALTER TABLE {t} RENAME COLUMN {c} TO {c}_old;\n",
    ]
    return rng.choice(templates)


_WHO = ["The old sailor", "A young painter", "The tired doctor", "My neighbour", "The quiet student", "A lost child"]
_WHAT = ["walked to", "ran towards", "looked at", "sat near", "waited by", "sang beside"]
_WHERE = ["the harbour", "the market", "the station", "the garden", "the river", "the library"]
_THEN = ["and watched the boats", "and bought some bread", "and read a letter", "and smiled at the rain",
         "and called a friend", "and forgot the time"]


def _english(rng: random.Random) -> str:
    return f"{rng.choice(_WHO)} {rng.choice(_WHAT)} {rng.choice(_WHERE)} {rng.choice(_THEN)}.\n"


_GENERATORS = (_arithmetic, _code, _sql, _english)


def generate_corpus(n_bytes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stream of at least ``n_bytes`` bytes of randomly interleaved documents.

    Returns (tokens (n,), domains (n,)) where ``domains[i]`` indexes ``DOMAINS`` for byte i.
    """
    rng = random.Random(seed)
    parts, labels, size = [], [], 0
    while size < n_bytes:
        d = rng.randrange(len(_GENERATORS))
        doc = _GENERATORS[d](rng).encode("utf-8")
        parts.append(doc)
        labels.append(torch.full((len(doc),), d, dtype=torch.long))
        size += len(doc)
    tokens = torch.tensor(list(b"".join(parts)), dtype=torch.long)
    return tokens, torch.cat(labels)


@dataclass
class Dataset:
    """Train and validation byte streams with per-byte domain labels."""

    train: torch.Tensor
    val: torch.Tensor
    train_domains: torch.Tensor
    val_domains: torch.Tensor
    domain_names: tuple[str, ...]
    source: str

    def get_batch(self, split: str, batch_size: int, seq_len: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random windows: tokens (batch, seq), targets = the next bytes, domains of the tokens."""
        data, dom = self._split(split)
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
        idx = starts[:, None] + torch.arange(seq_len + 1)
        window = data[idx]
        return window[:, :-1], window[:, 1:], dom[idx[:, :-1]]

    def val_batches(self, batch_size: int, seq_len: int, max_batches: int | None = None):
        """Fixed, non-overlapping validation windows, in order (the same every call)."""
        n = (len(self.val) - 1) // seq_len
        idx = torch.arange(n * seq_len).view(n, seq_len)
        for b, rows in enumerate(idx.split(batch_size)):
            if max_batches is not None and b >= max_batches:
                break
            yield self.val[rows], self.val[rows + 1], self.val_domains[rows]

    def unigram_baseline(self) -> float:
        """Cross-entropy (nats/byte) on validation of the train set's byte frequencies: the bar to beat."""
        counts = torch.bincount(self.train, minlength=256).double() + 1.0  # add-one so no byte has p = 0
        logp = (counts / counts.sum()).log()
        return float(-logp[self.val].mean())

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "train":
            return self.train, self.train_domains
        if split == "val":
            return self.val, self.val_domains
        raise ValueError(f"split={split!r} is not one of 'train', 'val'")


def builtin_dataset(train_bytes: int = 2_000_000, val_bytes: int = 100_000, seed: int = 0) -> Dataset:
    """The generated four-domain corpus; the split is fixed by ``seed`` (validation uses its own documents)."""
    train, train_dom = generate_corpus(train_bytes, seed)
    val, val_dom = generate_corpus(val_bytes, seed + 10_000)
    return Dataset(train, val, train_dom, val_dom, DOMAINS, source=f"builtin(seed={seed})")


def text_dataset(path: str | Path, val_fraction: float = 0.1) -> Dataset:
    """Any text file as bytes; the last ``val_fraction`` of it is the validation split."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--data {str(path)!r} is not a readable file")
    raw = torch.tensor(list(p.read_bytes()), dtype=torch.long)
    if len(raw) < 2048:
        raise ValueError(f"--data {str(path)!r} has {len(raw)} bytes; at least 2048 are needed for a train/val split")
    cut = int(len(raw) * (1 - val_fraction))
    zeros = torch.zeros_like(raw)
    return Dataset(raw[:cut], raw[cut:], zeros[:cut], zeros[cut:], TEXT_DOMAINS, source=str(p))
