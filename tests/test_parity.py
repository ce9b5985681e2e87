"""Parity with transformers' DeepseekV3ForCausalLM, the referee for the model: max |Δlogits| <= 1e-4 in fp32."""

import random

import pytest
import torch

from dsv3_mini import DeepSeekV3, ModelConfig, preset
from dsv3_mini.interop import from_transformers, to_transformers

from .conftest import randomize_biases

pytest.importorskip("transformers")

YARN = {"factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 32, "beta_slow": 1,
        "mscale": 0.707, "mscale_all_dim": 0.707}
CONFIGS = {
    "tiny": {},
    "no-q-lora": {"q_lora_rank": None},
    "one-group": {"n_group": 1, "topk_group": 1},
    "four-groups": {"n_routed_experts": 16, "n_group": 4, "topk_group": 2, "num_experts_per_tok": 4},
    "no-dense-two-shared": {"first_k_dense_replace": 0, "n_shared_experts": 2},
    "two-dense": {"first_k_dense_replace": 2, "num_hidden_layers": 4},
    "all-dense": {"first_k_dense_replace": 3},
    "naive-mla": {"mla_impl": "naive"},
    "absorbed-mla": {"mla_impl": "absorbed"},
    "yarn": {"rope_scaling": YARN, "max_position_embeddings": 256},
    "no-shared": {"n_shared_experts": 0},
}


def _max_diff(model, hf, tokens):
    with torch.no_grad():
        return (model(tokens).logits - hf(tokens).logits).abs().max().item()


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_transformers(name):
    cfg = preset("tiny").replace(**CONFIGS[name])
    model = DeepSeekV3(cfg).eval()
    randomize_biases(model)
    hf = to_transformers(model)
    tokens = torch.randint(0, cfg.vocab_size, (2, 24))
    assert _max_diff(model, hf, tokens) <= 1e-4


def test_loss_matches_transformers():
    cfg = preset("tiny")
    model = DeepSeekV3(cfg).eval()
    hf = to_transformers(model)
    tokens = torch.randint(0, cfg.vocab_size, (2, 16))
    targets = torch.cat([tokens[:, 1:], torch.full((2, 1), -100)], dim=1)
    with torch.no_grad():
        ours = model(tokens, targets=targets).main_loss
        theirs = hf(tokens, labels=tokens).loss
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_model_initialised_by_transformers_converts_exactly():
    from transformers import DeepseekV3ForCausalLM

    torch.manual_seed(3)
    hf_cfg = preset("tiny").replace(n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=3)
    hf = DeepseekV3ForCausalLM(hf_cfg.to_transformers()).eval()
    with torch.no_grad():
        for layer in hf.model.layers[1:]:
            layer.mlp.gate.e_score_correction_bias.uniform_(-0.05, 0.05)
    model = from_transformers(hf).eval()
    assert _max_diff(model, hf, torch.randint(0, 256, (2, 20))) <= 1e-4
    # and back again: the same weights, bit for bit
    again = to_transformers(model)
    for k, v in hf.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_rotate_half_rope_layout_is_converted():
    from transformers import DeepseekV3ForCausalLM

    hf_cfg = preset("tiny").to_transformers()
    hf_cfg.rope_interleave = False
    hf = DeepseekV3ForCausalLM(hf_cfg).eval()
    model = from_transformers(hf).eval()
    assert _max_diff(model, hf, torch.randint(0, 256, (1, 20))) <= 1e-4


def _random_config(seed):
    rng = random.Random(seed)
    n_group = rng.choice([1, 2, 4])
    per_group = rng.choice([2, 3, 4])
    topk_group = rng.randint(1, n_group)
    heads = rng.choice([1, 2, 3, 4])
    layers = rng.randint(1, 4)
    return ModelConfig(
        vocab_size=rng.randint(50, 300), hidden_size=rng.choice([32, 48, 80]), num_hidden_layers=layers,
        first_k_dense_replace=rng.randint(0, layers), intermediate_size=rng.choice([40, 96]),
        moe_intermediate_size=rng.choice([8, 24]), num_attention_heads=heads,
        q_lora_rank=rng.choice([None, 16, 40]), kv_lora_rank=rng.choice([8, 24, 64]),
        qk_nope_head_dim=rng.choice([4, 16]), qk_rope_head_dim=rng.choice([2, 8, 12]), v_head_dim=rng.choice([4, 20]),
        n_routed_experts=n_group * per_group, n_shared_experts=rng.randint(0, 2),
        num_experts_per_tok=rng.randint(1, topk_group * per_group), n_group=n_group, topk_group=topk_group,
        routed_scaling_factor=rng.choice([1.0, 2.5]), norm_topk_prob=rng.choice([True, False]),
        rope_theta=rng.choice([10000.0, 500.0]),
    )


@pytest.mark.parametrize("seed", range(4))
def test_configs_no_test_chose_still_match(seed):
    cfg = _random_config(seed)
    model = DeepSeekV3(cfg).eval()
    randomize_biases(model, seed=seed)
    hf = to_transformers(model)
    assert _max_diff(model, hf, torch.randint(0, cfg.vocab_size, (2, 19))) <= 1e-4


def test_standard_attention_has_no_transformers_equivalent():
    with pytest.raises(ValueError, match="attention='gqa' has no DeepseekV3Config equivalent"):
        to_transformers(DeepSeekV3(preset("tiny").replace(attention="gqa", num_key_value_heads=2)))
