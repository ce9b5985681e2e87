import re

import pytest
import torch

from dsv3_mini.data import DOMAINS, builtin_dataset, decode, encode, generate_corpus, text_dataset


def test_corpus_is_deterministic_and_seed_dependent():
    a, da = generate_corpus(5000, seed=1)
    b, db = generate_corpus(5000, seed=1)
    c, _ = generate_corpus(5000, seed=2)
    assert torch.equal(a, b) and torch.equal(da, db)
    assert not torch.equal(a[:5000], c[:5000])


def test_every_byte_carries_its_domain():
    tokens, domains = generate_corpus(20000, seed=0)
    assert tokens.shape == domains.shape
    text = decode(tokens)
    for line_start in [m.start() for m in re.finditer(r"ALTER TABLE", text)][:20]:
        assert DOMAINS[int(domains[line_start])] == "sql"
    assert set(domains.tolist()) == set(range(len(DOMAINS)))


def test_arithmetic_answers_are_correct():
    tokens, domains = generate_corpus(30000, seed=3)
    text = decode(tokens[domains == DOMAINS.index("arithmetic")])
    lines = [ln for ln in text.splitlines() if ln]
    assert len(lines) > 100
    for line in lines:
        a, op, b, result = re.fullmatch(r"(\d+)([+*-])(\d+)=(-?\d+)", line).groups()
        assert eval(f"{a}{op}{b}") == int(result)  # noqa: S307 - digits and one operator, matched above


def test_validation_uses_different_documents_and_fixed_windows():
    ds = builtin_dataset(train_bytes=20000, val_bytes=5000, seed=0)
    assert not torch.equal(ds.train[:1000], ds.val[:1000])
    first = [t for t, _, _ in ds.val_batches(4, 64, max_batches=2)]
    again = [t for t, _, _ in ds.val_batches(4, 64, max_batches=2)]
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))


def test_batches_are_next_byte_pairs():
    ds = builtin_dataset(train_bytes=20000, val_bytes=5000)
    tokens, targets, domains = ds.get_batch("train", 3, 32, torch.Generator().manual_seed(0))
    assert tokens.shape == targets.shape == domains.shape == (3, 32)
    assert torch.equal(tokens[:, 1:], targets[:, :-1])


def test_unigram_baseline_is_a_cross_entropy_in_nats():
    ds = builtin_dataset(train_bytes=50000, val_bytes=10000)
    assert 2.0 < ds.unigram_baseline() < 5.55  # below ln(256) = 5.55, the uniform byte model


def test_text_file_dataset(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("Once upon a time. " * 300)
    ds = text_dataset(path)
    assert ds.domain_names == ("text",)
    assert len(ds.train) + len(ds.val) == len(encode("Once upon a time. " * 300))


def test_bad_data_file_errors(tmp_path):
    with pytest.raises(ValueError, match="not a readable file"):
        text_dataset(tmp_path / "missing.txt")
    (tmp_path / "short.txt").write_text("hi")
    with pytest.raises(ValueError, match="at least 2048"):
        text_dataset(tmp_path / "short.txt")


def test_bytes_round_trip():
    assert decode(encode("MLA: 576 numbers/token ✓")) == "MLA: 576 numbers/token ✓"
