"""Passkey documents, packed training batches, retrieval scoring, RoPE swaps and the shipped passkey run."""

import json
from pathlib import Path

import pytest
import torch

from dsv3_mini import DeepSeekV3
from dsv3_mini.data import decode
from dsv3_mini.long_context import (
    KEY_DIGITS,
    METHODS,
    MIN_DOC,
    PasskeyConfig,
    evaluate,
    extend,
    filler_stream,
    load_run,
    passkey_document,
    scaled_for,
    train_passkey,
    training_batch,
    with_rope,
)

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "passkey"


@pytest.fixture(scope="module")
def filler():
    return filler_stream(20_000, 0)


def test_filler_is_english_without_digits(filler):
    text = decode(filler)
    assert len(filler) == 20_000 and not any(c.isdigit() for c in text)
    assert "the harbour" in text or "the market" in text


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_document_has_its_length_the_key_at_its_depth_and_the_answer_last(filler, depth):
    doc, pos = passkey_document(200, depth, 48213, filler, 100)
    text = decode(doc)
    assert len(doc) == 200 and text.endswith("what is the pass key? 48213\n")
    assert decode(doc[pos]) == "48213" and pos.tolist() == list(range(194, 199))
    n_filler = 200 - len("the pass key is 48213. ") - len("what is the pass key? 48213\n")
    assert text.index("the pass key is 48213. ") == round(depth * n_filler)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 1.5}, r"depth=1.5 must be between 0"),
        ({"length": 20}, r"length=20 is too short"),
        ({"key": 123}, r"key=123 must have exactly 5 digits"),
    ],
)
def test_bad_documents_raise(filler, kwargs, message):
    args = {"length": 100, "depth": 0.5, "key": 12345, "filler": filler, "start": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        passkey_document(**args)


def test_batches_pack_documents_and_mark_every_answer_digit(filler):
    tokens, targets, answer = training_batch(16, 128, filler, torch.Generator().manual_seed(3))
    assert tokens.shape == targets.shape == answer.shape == (16, 128)
    assert torch.equal(tokens[:, 1:], targets[:, :-1])
    per_row = answer.sum(dim=1)
    assert torch.all(per_row % KEY_DIGITS == 0) and per_row.min() >= KEY_DIGITS
    assert per_row.max() > KEY_DIGITS  # some rows hold two documents: the question comes at several positions
    assert torch.all((targets[answer] >= ord("0")) & (targets[answer] <= ord("9")))
    for row in range(16):  # each marked answer repeats the key stated earlier in its document
        text = decode(targets[row])
        for q in range(text.count("what is the pass key? ")):
            asked = text.split("what is the pass key? ")[q + 1][:KEY_DIGITS]
            assert f"the pass key is {asked}. " in decode(tokens[row])


def test_with_rope_keeps_every_weight_and_changes_only_the_tables():
    model = DeepSeekV3(PasskeyConfig(seq_len=64).model_config()).eval()
    for method in METHODS:
        other = with_rope(model, method, 4.0, 64)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values(),
                                                      strict=True))
        assert other.cfg.rope_scaling == (None if method == "none" else
                                          {"rope_type": method, "factor": 4.0, "original_max_position_embeddings": 64})
    assert scaled_for(model, "linear", 64, 64).cfg.rope_scaling["factor"] == 1.0
    assert scaled_for(model, "yarn", 256, 64).cfg.rope_scaling["factor"] == 4.0
    with pytest.raises(ValueError, match=r"method='alibi' is not one of 'none', 'linear', 'ntk', 'yarn'"):
        with_rope(model, "alibi", 2.0, 64)


def test_evaluate_reports_a_grid_and_loss_by_position():
    model = DeepSeekV3(PasskeyConfig(seq_len=64).model_config()).eval()
    r = evaluate(model, (64, 128), depths=(0.0, 1.0), trials=2, bins=4)
    assert r["lengths"] == [64, 128] and len(r["accuracy"]) == 2 and len(r["accuracy"][0]) == 2
    assert r["accuracy_by_length"] == [0.0, 0.0]  # an untrained model retrieves nothing
    assert len(r["loss_by_position"][1]) == 4 and r["bin_edges"][1] == [0, 32, 64, 95, 127]
    assert evaluate(model, (64,), depths=(0.0, 1.0), trials=2) == evaluate(model, (64,), depths=(0.0, 1.0), trials=2)


def test_a_few_training_steps_lower_the_loss_and_the_extension_runs():
    pc = PasskeyConfig(seq_len=MIN_DOC + 4, steps=30, batch_size=4, extend_steps=2, threads=1)
    model, history = train_passkey(pc, progress=False)
    assert history[-1]["loss"] < 4.0 < 5.6  # from ln 256 = 5.5 at the start
    tuned, ext = extend(model, "yarn", pc, progress=False)
    assert [h["seq_len"] for h in ext] == [2 * pc.seq_len, 4 * pc.seq_len]
    assert tuned.cfg.rope_scaling["factor"] == pc.extend_factor
    assert not torch.equal(tuned.head.weight, model.head.weight)


def test_passkey_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"preset='huge' is not one of 'tiny', 'mini'"):
        PasskeyConfig(preset="huge")
    with pytest.raises(ValueError, match=r"seq_len=40 must be at least"):
        PasskeyConfig(seq_len=40)
    with pytest.raises(ValueError, match=r"extend_factor >= 1"):
        PasskeyConfig(extend_factor=0.5)


def test_a_document_longer_than_the_model_is_refused():
    model = DeepSeekV3(PasskeyConfig(seq_len=64).model_config()).eval()  # room for 8 × 64 = 512 positions
    with pytest.raises(ValueError, match="beyond max_position_embeddings=512"):
        evaluate(model, (1024,), depths=(0.5,), trials=1)


@pytest.fixture(scope="module")
def shipped():
    if not (SHIPPED / "results.json").is_file():
        pytest.fail("checkpoints/passkey/results.json is missing: run python -m dsv3_mini.long_context "
                    "--out checkpoints/passkey")
    return load_run(SHIPPED)


def test_shipped_run_is_small_and_records_its_command(shipped):
    _, results = shipped
    assert (SHIPPED / "model.safetensors").stat().st_size < 5 * 2**20
    assert results["command"].startswith("python -m dsv3_mini.long_context")
    assert PasskeyConfig(**results["config"]) == PasskeyConfig()  # made with the current defaults
    for key in ("no_finetune", "finetuned"):
        assert set(results[key]) == set(METHODS)
        for r in results[key].values():
            assert r["lengths"] == [128, 256, 512, 1024] and len(r["accuracy"]) == 4


def test_shipped_model_retrieves_within_its_training_length_and_reproduces_its_numbers(shipped):
    model, results = shipped
    plain = results["no_finetune"]["none"]
    assert plain["accuracy_by_length"][0] >= 0.8
    again = evaluate(scaled_for(model, "none", 128, 128), (128,))
    assert again["accuracy"][0] == plain["accuracy"][0]
    assert again["loss_by_position"][0] == pytest.approx(plain["loss_by_position"][0], abs=1e-5)


def test_shipped_seed_comparison_has_three_seeds(shipped):
    seeds = json.loads((SHIPPED / "seeds.json").read_text())
    assert seeds["seeds"] == [0, 1, 2]
    assert seeds["per_seed"]["0"]["plain_1x"] == shipped[1]["no_finetune"]["none"]["accuracy_by_length"][0]
    for cell in seeds["cells"].values():
        assert len(cell["values"]) == 3 and 0 <= cell["mean"] <= 1
