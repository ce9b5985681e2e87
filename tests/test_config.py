import pytest

from dsv3_mini.config import PRESETS, ModelConfig, preset


@pytest.mark.parametrize("name", PRESETS)
def test_presets_are_valid(name):
    cfg = preset(name)
    assert cfg.name == name


def test_unknown_preset_names_the_allowed_ones():
    with pytest.raises(ValueError, match="'tiny'.*'mini'.*'deepseek-v3'"):
        preset("huge")


def test_deepseek_v3_preset_matches_the_released_config():
    cfg = preset("deepseek-v3")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.first_k_dense_replace) == (7168, 61, 3)
    assert (cfg.n_routed_experts, cfg.n_shared_experts, cfg.num_experts_per_tok) == (256, 1, 8)
    assert (cfg.n_group, cfg.topk_group, cfg.routed_scaling_factor) == (8, 4, 2.5)
    assert (cfg.kv_lora_rank, cfg.q_lora_rank, cfg.qk_head_dim) == (512, 1536, 192)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_routed_experts": 10, "n_group": 4}, r"n_routed_experts=10 is not divisible by n_group=4"),
        ({"num_experts_per_tok": 5, "n_group": 2, "topk_group": 1}, r"num_experts_per_tok=5 .* topk_group=1"),
        ({"topk_group": 3, "n_group": 2}, r"topk_group=3 is larger than n_group=2"),
        ({"n_routed_experts": 4, "n_group": 4, "num_experts_per_tok": 1}, r"at least 2"),
        ({"attention": "gqa", "num_attention_heads": 4, "num_key_value_heads": 3}, r"not divisible by num_key_value"),
        ({"qk_rope_head_dim": 7}, r"qk_rope_head_dim=7 must be even"),
        ({"attention": "gqa", "head_dim": 9}, r"head_dim=9 must be even"),
        ({"attention": "flash"}, r"attention='flash' is not one of 'mla', 'mha', 'gqa', 'mqa'"),
        ({"mla_impl": "fast"}, r"mla_impl='fast' is not one of 'auto', 'naive', 'absorbed'"),
        ({"scoring_func": "relu"}, r"scoring_func='relu' is not one of 'sigmoid', 'softmax'"),
        ({"first_k_dense_replace": 9}, r"first_k_dense_replace=9 must be between 0 and num_hidden_layers=3"),
        ({"hidden_size": 0}, r"hidden_size=0 must be a positive integer"),
        ({"rope_scaling": {"factor": 4}}, r"needs 'factor' and 'original_max_position_embeddings'"),
        ({"rope_scaling": {"factor": 4, "original_max_position_embeddings": 64, "alpha": 1}}, r"unknown keys"),
    ],
)
def test_invalid_configs_raise_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny").replace(**changes)


def test_dense_only_model_needs_no_valid_moe_fields():
    cfg = ModelConfig(first_k_dense_replace=3, num_hidden_layers=3, n_routed_experts=10, n_group=4)
    assert not cfg.is_moe


def test_from_dict_rejects_unknown_fields():
    d = preset("tiny").to_dict()
    assert ModelConfig.from_dict(d) == preset("tiny")
    with pytest.raises(ValueError, match="unknown ModelConfig fields \\['n_experts'\\]"):
        ModelConfig.from_dict({**d, "n_experts": 4})


def test_transformers_config_round_trip():
    cfg = preset("tiny").replace(rope_scaling={"factor": 4.0, "original_max_position_embeddings": 128,
                                               "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})
    back = ModelConfig.from_transformers(cfg.to_transformers())
    assert back.replace(name=cfg.name) == cfg


def test_transformers_default_config_is_deepseek_v3():
    from transformers import DeepseekV3Config

    cfg = ModelConfig.from_transformers(DeepseekV3Config())
    full = preset("deepseek-v3")
    for field in ("hidden_size", "num_hidden_layers", "n_routed_experts", "kv_lora_rank", "q_lora_rank",
                  "moe_intermediate_size", "intermediate_size", "vocab_size", "n_group", "topk_group"):
        assert getattr(cfg, field) == getattr(full, field), field


def test_yarn_softmax_scale_uses_mscale_squared():
    import math

    cfg = preset("deepseek-v3")
    mscale = 0.1 * math.log(40) + 1
    assert cfg.softmax_scale == pytest.approx(192**-0.5 * mscale**2)
    assert preset("tiny").softmax_scale == pytest.approx(24**-0.5)
