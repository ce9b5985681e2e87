"""The trainer's command line is generated from TrainConfig: one flag per field, the field's type and default, and
the shipped run's recorded command still means the run `make train` makes."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import typing
from pathlib import Path

import pytest

from dsv3_mini.cli import flag_type
from dsv3_mini.config import BALANCE_POLICIES
from dsv3_mini.train import TRAINABLE_PRESETS, TrainConfig, parse_args

ROOT = Path(__file__).resolve().parents[1]
PYTHON_ONLY = {"model_overrides"}  # a dict of ModelConfig changes: no flag


def _other_value(f: dataclasses.Field) -> object:
    """A valid value of field ``f`` that is not its default (a None default gets a small value of the field's type)."""
    default, choices = getattr(TrainConfig(), f.name), f.metadata.get("choices")
    kind = flag_type(typing.get_type_hints(TrainConfig)[f.name])
    if choices:
        return next(c for c in choices if c != default)
    if kind is bool:
        return True
    if default is None:
        return {int: 1, float: 0.01, str: "x"}[kind]
    return default / 2 if kind is float else default + 1


def _help(capsys) -> str:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("f", [f for f in dataclasses.fields(TrainConfig) if f.name not in PYTHON_ONLY],
                         ids=lambda f: f.name)
def test_every_field_has_a_flag_that_sets_it(f):
    value = _other_value(f)
    flag = "--" + f.name.replace("_", "-")
    tc = parse_args([flag] if value is True else [flag, str(value)])
    assert getattr(tc, f.name) == value and type(getattr(tc, f.name)) is type(value)
    assert tc == dataclasses.replace(TrainConfig(), **{f.name: value}), "the flag changed another field too"


def test_help_lists_each_field_once_with_its_help_and_only_two_more_flags(capsys):
    text = _help(capsys)
    flags = set(re.findall(r"^  (--[a-z0-9-]+)", text, flags=re.M)) - {"--help"}
    fields = {"--" + f.name.replace("_", "-"): f for f in dataclasses.fields(TrainConfig) if f.name not in PYTHON_ONLY}
    assert flags == set(fields) | {"--resume", "--no-progress"}
    for f in fields.values():
        assert " ".join(f.metadata["help"].split()[:3]) in " ".join(text.split()), f.name


def test_no_flags_is_the_default_config():
    assert parse_args([]) == TrainConfig()
    assert parse_args(["--resume", "--no-progress"]) == TrainConfig()  # how to run, not what


def test_optional_numbers_take_their_type():
    tc = parse_args(["--decay-steps", "50", "--threads", "1", "--bias-update-speed", "0.5", "--lr", "1e-3"])
    assert (tc.decay_steps, tc.threads, tc.bias_update_speed, tc.lr) == (50, 1, 0.5, 1e-3)
    assert type(tc.decay_steps) is int and type(tc.bias_update_speed) is float


@pytest.mark.parametrize(("flag", "allowed"), [("--preset", TRAINABLE_PRESETS), ("--balance", BALANCE_POLICIES)])
def test_choices_are_the_lists_the_config_validates_against(flag, allowed, capsys):
    for value in allowed:
        assert getattr(parse_args([flag, value]), flag[2:]) == value
    with pytest.raises(SystemExit):
        parse_args([flag, "deepseek-v3"])
    assert f"(choose from {', '.join(map(repr, allowed))})" in capsys.readouterr().err


def test_a_bad_balance_is_a_one_line_error_naming_the_allowed_values(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--balance", "aux"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument --balance: invalid choice: 'aux'")
    assert all(repr(policy) in err for policy in BALANCE_POLICIES)


def test_the_shipped_command_parses_to_the_makefile_settings():
    """checkpoints/mini/summary.json recorded the command of `make train`; it still parses to that run."""
    makefile = (ROOT / "Makefile").read_text()
    mini_run = next(line.split(":=", 1)[1].split() for line in makefile.splitlines() if line.startswith("MINI_RUN"))
    command = shlex.split(json.loads((ROOT / "checkpoints" / "mini" / "summary.json").read_text())["command"])
    shipped = parse_args(command[3:])  # drop "python -m dsv3_mini.train"
    assert shipped == parse_args([*mini_run, "--out", "checkpoints/mini"])
    assert shipped == TrainConfig(preset="mini", steps=900, batch_size=12, seq_len=256, eval_every=100, threads=2,
                                  out="checkpoints/mini")
