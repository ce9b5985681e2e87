"""The addition task (prompts, exact answers, the rule-based reward, the held-out split) and supervised fine-tuning
with the loss on the answer only."""

from __future__ import annotations

import pytest
import torch

from dsv3_mini import DeepSeekV3, preset
from dsv3_mini.addition_task import (
    MAX_NEW_TOKENS,
    PROMPT_LEN,
    all_pairs,
    answer_text,
    completion_mask,
    exact_accuracy,
    prompt_text,
    prompt_tokens,
    reward,
    rewards,
    split_pairs,
)
from dsv3_mini.data import encode
from dsv3_mini.model import IGNORE_INDEX
from dsv3_mini.sft import SFTConfig, main, sft, sft_batch


def test_answer_is_the_sum_ones_digit_first():
    assert prompt_text(23, 48) == "\n23+48="
    assert answer_text(23, 48) == "17\n"  # 71 reversed
    assert answer_text(99, 99) == "891\n"  # 198 reversed
    assert answer_text(23, 48, reverse=False) == "71\n"
    assert len(prompt_text(10, 10)) == PROMPT_LEN
    assert max(len(answer_text(a, b)) for a, b in all_pairs()) == MAX_NEW_TOKENS


@pytest.mark.parametrize("completion, expected", [
    ("17\n", 1.0), ("17\nxy", 1.0),  # what follows the newline is not the answer's business
    ("17", 0.0), ("17 \n", 0.0), ("71\n", 0.0), ("1\n", 0.0), ("170\n", 0.0), (" 17\n", 0.0), ("", 0.0),
])
def test_reward_is_one_for_the_exact_answer_and_its_newline_only(completion, expected):
    assert reward(completion, 23, 48) == expected


def test_rewards_score_each_row_against_its_pair():
    rows = torch.stack([encode("17\nab"), encode("71\nab"), encode("71\nab")])
    r = rewards(rows, [(23, 48), (23, 48), (50, 22)], reverse=True)
    assert r.tolist() == [1.0, 0.0, 0.0]
    assert rewards(rows, [(23, 48), (23, 48), (50, 22)], reverse=False).tolist() == [0.0, 1.0, 0.0]


def test_completion_mask_stops_after_the_first_newline():
    rows = torch.stack([encode("17\n9"), encode("891\n"), encode("1234")])
    assert completion_mask(rows).int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]]


def test_heldout_pairs_are_fixed_and_never_trained_on():
    train, heldout = split_pairs()
    assert len(heldout) == 500 and len(train) + len(heldout) == 90 * 90
    assert not set(train) & set(heldout)
    assert split_pairs()[1] == heldout  # the same every time


@pytest.mark.parametrize("call, field", [
    (lambda: prompt_text(5, 10), "a=5"), (lambda: answer_text(10, 100), "b=100"),
    (lambda: prompt_text(10.0, 10), "a=10.0"), (lambda: split_pairs(n_heldout=0), "n_heldout=0"),
    (lambda: prompt_tokens([]), "pairs is empty"), (lambda: sft_batch([]), "pairs is empty"),
    (lambda: rewards(torch.zeros(2, 4, dtype=torch.long), [(10, 10)]), "2 completions for 1 pairs"),
    (lambda: SFTConfig(steps=0), "steps=0"), (lambda: SFTConfig(lr=-1.0), "lr=-1.0"),
    (lambda: SFTConfig(threads=0), "threads=0"),
])
def test_bad_input_names_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()


def test_sft_loss_is_on_the_answer_only():
    tokens, targets = sft_batch([(23, 48), (99, 99)])
    # row 0: "\n23+48=17\n" -> inputs drop the last byte; targets score "1", "7", "\n" only (a shorter row: padded)
    assert tokens.shape == targets.shape == (2, PROMPT_LEN + 4 - 1)
    scored = [[chr(t) for t in row if t != IGNORE_INDEX] for row in targets.tolist()]
    assert scored == [["1", "7", "\n"], ["8", "9", "1", "\n"]]
    assert (targets[:, : PROMPT_LEN - 1] == IGNORE_INDEX).all()  # no prompt byte is a target
    assert targets[0, PROMPT_LEN - 1] == ord("1") and tokens[0, PROMPT_LEN - 1] == ord("=")  # "=" predicts "1"


def test_prompt_bytes_get_no_gradient_from_the_sft_loss():
    """Changing a prompt's *target* bytes cannot change the loss: only answer positions are scored."""
    model = DeepSeekV3(preset("tiny")).eval()
    tokens, targets = sft_batch([(23, 48)])
    loss = model(tokens, targets=targets).main_loss
    targets_answer_only = torch.full_like(targets, IGNORE_INDEX)
    targets_answer_only[:, PROMPT_LEN - 1:] = targets[:, PROMPT_LEN - 1:]
    assert torch.equal(model(tokens, targets=targets_answer_only).main_loss, loss)
    plain = torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)  # a full next-byte target would score the prompt
    assert not torch.allclose(model(tokens, targets=plain).main_loss, loss)


def test_a_short_sft_lowers_the_answer_loss_and_is_deterministic():
    cfg = SFTConfig(steps=4, batch_size=8, lr=3e-3, warmup_steps=0)
    a = sft(cfg, progress=False, model=DeepSeekV3(preset("tiny")))
    b = sft(cfg, progress=False, model=DeepSeekV3(preset("tiny")))
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.history[-1]["loss"] < a.history[0]["loss"]
    acc = exact_accuracy(a.model, split_pairs()[1][:20])
    assert 0.0 <= acc <= 1.0 and torch.get_num_threads() == 2  # the fine-tune's one thread is not left behind


def test_cli_rejects_a_bad_flag_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--steps", "many"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: argument --steps")
    assert main(["--batch-size", "0"]) == 2
    assert "batch_size=0 must be a positive integer" in capsys.readouterr().err
