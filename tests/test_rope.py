"""The position-interpolation methods of dsv3_mini.rope, each against its formula and, where transformers has the
method, against transformers' own rope initialisation."""

import math

import pytest
import torch

from dsv3_mini import DeepSeekV3, preset
from dsv3_mini.config import ROPE_TYPES, ModelConfig
from dsv3_mini.rope import RotaryEmbedding, inverse_frequencies, rope_type, yarn_ramp

DIM, THETA = 16, 10000.0


def _plain():
    return 1.0 / THETA ** (torch.arange(0, DIM, 2, dtype=torch.float) / DIM)


def test_no_scaling_is_plain_rope():
    inv, amplitude = inverse_frequencies(DIM, THETA)
    torch.testing.assert_close(inv, _plain())
    assert amplitude == 1.0 and rope_type(None) is None


def test_linear_interpolation_divides_every_frequency_by_the_factor():
    inv, amplitude = inverse_frequencies(DIM, THETA, {"rope_type": "linear", "factor": 4.0})
    torch.testing.assert_close(inv, _plain() / 4)
    assert amplitude == 1.0


def test_linear_position_p_reads_as_p_over_s():
    cfg = preset("tiny").replace(rope_scaling={"rope_type": "linear", "factor": 4})
    scaled, plain = RotaryEmbedding(8, cfg), RotaryEmbedding(8, preset("tiny"))
    torch.testing.assert_close(scaled.cos[40], plain.cos[10])  # position 40 at s = 4 is position 10 unscaled
    torch.testing.assert_close(scaled.sin[400], plain.sin[100])


def test_ntk_raises_the_base_by_s_to_the_dim_over_dim_minus_two():
    inv, amplitude = inverse_frequencies(DIM, THETA, {"rope_type": "ntk", "factor": 8.0})
    base = THETA * 8.0 ** (DIM / (DIM - 2))
    torch.testing.assert_close(inv, 1.0 / base ** (torch.arange(0, DIM, 2, dtype=torch.float) / DIM))
    assert amplitude == 1.0
    assert inv[0] == _plain()[0]  # the fastest pair keeps its frequency
    ratio = _plain() / inv
    assert ratio[-1] == pytest.approx(8.0, rel=1e-5)  # the slowest is divided by exactly s
    assert torch.all(ratio[1:] > ratio[:-1])  # and the ones between by less, growing with j


def test_yarn_blends_with_the_ramp_and_returns_its_temperature():
    rs = {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096}
    inv, amplitude = inverse_frequencies(64, THETA, rs)
    plain = 1.0 / THETA ** (torch.arange(0, 64, 2, dtype=torch.float) / 64)
    ramp = yarn_ramp(64, THETA, 4096, 32, 1)
    torch.testing.assert_close(inv, plain / 16 * ramp + plain * (1 - ramp))
    assert amplitude == pytest.approx(0.1 * math.log(16) + 1)
    assert ramp[0] == 0 and ramp[-1] == 1 and torch.all(ramp[1:] >= ramp[:-1])


def test_yarn_without_rope_type_stays_the_default():
    rs = {"factor": 4.0, "original_max_position_embeddings": 64}
    a, _ = inverse_frequencies(DIM, THETA, rs)
    b, _ = inverse_frequencies(DIM, THETA, {**rs, "rope_type": "yarn"})
    assert torch.equal(a, b) and rope_type(rs) == "yarn"


@pytest.mark.parametrize("kind", ROPE_TYPES)
def test_factor_one_is_plain_rope(kind):
    inv, amplitude = inverse_frequencies(DIM, THETA, {"rope_type": kind, "factor": 1,
                                                      "original_max_position_embeddings": 128})
    torch.testing.assert_close(inv, _plain())
    assert amplitude == 1.0


def _hf_inv_freq(kind, factor, seq_len=None, **extra):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = transformers.LlamaConfig(hidden_size=DIM * 2, num_attention_heads=2, max_position_embeddings=128,
                                   rope_parameters={"rope_type": kind, "rope_theta": THETA, "factor": factor,
                                                    **extra})
    inv, attention_factor = ROPE_INIT_FUNCTIONS[kind](cfg, "cpu", seq_len=seq_len)
    return inv.float(), attention_factor


def test_linear_matches_transformers():
    theirs, factor = _hf_inv_freq("linear", 4.0)
    ours, amplitude = inverse_frequencies(DIM, THETA, {"rope_type": "linear", "factor": 4.0})
    torch.testing.assert_close(ours, theirs)
    assert amplitude == factor


def test_ntk_matches_transformers_dynamic_ntk_where_they_coincide():
    # transformers' "dynamic" NTK uses s_eff = s·L/L_orig − (s − 1) at length L: s_eff = s at L = L_orig (2s − 1)/s
    s, original = 4.0, 128
    theirs, _ = _hf_inv_freq("dynamic", s, seq_len=original * (2 * s - 1) / s)
    ours, _ = inverse_frequencies(DIM, THETA, {"rope_type": "ntk", "factor": s})
    torch.testing.assert_close(ours, theirs)


def test_yarn_matches_transformers():
    theirs, factor = _hf_inv_freq("yarn", 8.0, original_max_position_embeddings=64, beta_fast=32, beta_slow=1)
    ours, amplitude = inverse_frequencies(DIM, THETA, {"rope_type": "yarn", "factor": 8.0,
                                                       "original_max_position_embeddings": 64})
    torch.testing.assert_close(ours, theirs)
    assert amplitude == pytest.approx(factor)


@pytest.mark.parametrize(
    ("rope_scaling", "message"),
    [
        ({"rope_type": "linear", "factor": 0.5}, r"factor=0.5 must be a number >= 1"),
        ({"rope_type": "ntk", "factor": "4"}, r"factor='4' must be a number >= 1"),
        ({"rope_type": "dynamic", "factor": 4}, r"rope_type='dynamic' is not one of 'linear', 'ntk', 'yarn'"),
        ({"rope_type": "linear"}, r"rope_type='linear' needs 'factor'"),
        ({"rope_type": "linear", "factor": 2, "beta_fast": 32}, r"unknown keys \['beta_fast'\]"),
        ({"rope_type": "yarn", "factor": 2}, r"needs 'factor' and 'original_max_position_embeddings'"),
        ("yarn", r"must be None \(plain RoPE\) or a dict"),
        ({"factor": 4, "original_max_position_embeddings": 64, "beta_fast": 1, "beta_slow": 32},
         r"beta_fast=1 must be larger than beta_slow=32"),
    ],
)
def test_bad_rope_scaling_gets_a_clear_error(rope_scaling, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny").replace(rope_scaling=rope_scaling)


def test_positions_beyond_the_table_are_refused():
    model = DeepSeekV3(preset("tiny").replace(max_position_embeddings=32, rope_scaling={"rope_type": "linear",
                                                                                       "factor": 2})).eval()
    with pytest.raises(ValueError, match="position 32 is beyond max_position_embeddings=32"):
        model(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("kind", ["linear", "ntk"])
def test_scaled_models_match_transformers(kind):
    pytest.importorskip("transformers")
    from dsv3_mini.interop import to_transformers

    cfg = preset("tiny").replace(rope_scaling={"rope_type": kind, "factor": 4.0})
    model = DeepSeekV3(cfg).eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        diff = (model(tokens).logits - to_transformers(model)(tokens).logits).abs().max().item()
    assert diff <= 1e-4


def test_linear_round_trips_through_transformers():
    pytest.importorskip("transformers")
    cfg = preset("tiny").replace(rope_scaling={"rope_type": "linear", "factor": 4.0})
    assert ModelConfig.from_transformers(cfg.to_transformers()).replace(name=cfg.name) == cfg


def test_decoding_past_the_table_with_a_cache_is_refused():
    model = DeepSeekV3(preset("tiny").replace(max_position_embeddings=32, rope_scaling={"rope_type": "ntk",
                                                                                       "factor": 2})).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.zeros(1, 30, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="position 32 is beyond max_position_embeddings=32"):
            model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
