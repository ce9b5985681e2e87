import pytest

from dsv3_mini import DeepSeekV3, count_params, preset
from dsv3_mini.params import attention_params, dense_ffn_params, expert_params


def test_deepseek_v3_totals_match_the_report():
    cfg = preset("deepseek-v3")
    c = count_params(cfg)
    assert attention_params(cfg) == 187_107_328
    assert dense_ffn_params(cfg) == 396_361_728
    assert expert_params(cfg) == 44_040_192
    assert c.breakdown["embedding"] == c.breakdown["head"] == 926_679_040
    assert c.total == 671_026_419_200
    # 3 dense blocks + 58 × (attention + shared + 8 routed + router + norms) + final norm + head: "37B activated"
    assert c.active_non_embedding == 36_625_618_432
    assert c.active == c.active_non_embedding + 926_679_040
    assert round(c.mtp / 1e9, 1) == 11.6
    assert sum(c.breakdown.values()) == c.total


def _instantiated_count(model):
    params = sum(p.numel() for p in model.parameters())
    biases = sum(m.gate.bias.numel() for m in model.moe_layers())
    return params + biases


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"q_lora_rank": None},
        {"first_k_dense_replace": 0, "n_shared_experts": 2},
        {"first_k_dense_replace": 3},
        {"attention": "gqa", "num_key_value_heads": 2},
        {"attention": "mha", "head_dim": 12},
        {"attention": "mqa"},
    ],
)
def test_count_matches_instantiated_model(changes):
    cfg = preset("tiny").replace(**changes)
    c = count_params(cfg)
    assert c.total + c.mtp == _instantiated_count(DeepSeekV3(cfg))
    assert c.total == _instantiated_count(DeepSeekV3(cfg.replace(num_nextn_predict_layers=0)))


def test_active_counts_only_chosen_experts():
    cfg = preset("tiny")
    c = count_params(cfg)
    unused = cfg.num_moe_layers * (cfg.n_routed_experts - cfg.num_experts_per_tok) * expert_params(cfg)
    assert c.total - c.active == unused
