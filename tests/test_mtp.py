import pytest
import torch

from dsv3_mini import DeepSeekV3, preset, seed_everything
from dsv3_mini.generate import generate, speculative_generate
from dsv3_mini.model import cross_entropy


@pytest.fixture(scope="module")
def deep_model():
    seed_everything(0)
    return DeepSeekV3(preset("tiny").replace(num_nextn_predict_layers=2)).eval()


def _mtp_logits(model, tokens):
    with torch.no_grad():
        return model.mtp_logits(tokens, model(tokens).hidden_states)


@pytest.mark.parametrize("k", [1, 2])
def test_mtp_never_sees_the_token_it_predicts(deep_model, k):
    tokens = torch.randint(0, 256, (1, 16))
    base = _mtp_logits(deep_model, tokens)[k - 1]
    i = 5  # depth k at position i predicts token i + k + 1
    changed = tokens.clone()
    changed[0, i + k + 1 :] = (changed[0, i + k + 1 :] + 7) % 256
    torch.testing.assert_close(_mtp_logits(deep_model, changed)[k - 1][:, : i + 1], base[:, : i + 1])


@pytest.mark.parametrize("k", [1, 2])
def test_mtp_sees_the_token_k_ahead(deep_model, k):
    tokens = torch.randint(0, 256, (1, 16))
    base = _mtp_logits(deep_model, tokens)[k - 1]
    i = 5
    changed = tokens.clone()
    changed[0, i + k] = (changed[0, i + k] + 7) % 256  # the embedding input of depth k at position i
    assert not torch.allclose(_mtp_logits(deep_model, changed)[k - 1][:, i], base[:, i])


def test_mtp_losses_target_the_token_k_plus_one_ahead(deep_model):
    seq = torch.randint(0, 256, (2, 17))
    tokens, targets = seq[:, :-1], seq[:, 1:]
    with torch.no_grad():
        out = deep_model(tokens, targets=targets)
        logits = _mtp_logits(deep_model, tokens)
    for k, (loss, lg) in enumerate(zip(out.mtp_losses, logits, strict=True), start=1):
        assert lg.shape == (2, 16 - k, 256)
        expected = cross_entropy(lg, seq[:, k + 1 :])  # position i predicts seq[i + k + 1]
        torch.testing.assert_close(loss, expected)


def test_training_loss_adds_lambda_over_depth_times_mtp_losses(deep_model):
    tokens = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        out = deep_model(tokens, targets=tokens.roll(-1, 1))
    expected = out.main_loss + 0.3 / 2 * sum(out.mtp_losses) + out.balance_loss
    torch.testing.assert_close(out.loss, expected)


def test_mtp_shares_embedding_and_head():
    model = DeepSeekV3(preset("tiny"))
    names = [n for n, _ in model.mtp.named_parameters()]
    assert not any("embed" in n or n.startswith("head") for n in names)


def _train_on_a_pattern(steps=120):
    """Teach the tiny model (and its MTP module) a deterministic sequence, so drafts get accepted."""
    seed_everything(0)
    model = DeepSeekV3(preset("tiny"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    cycle = torch.randperm(200)[:12] + 20  # twelve distinct tokens, repeated
    pattern = cycle.repeat(34)
    for step in range(steps):
        start = (step * 13) % 300
        seq = pattern[start : start + 33][None]
        loss = model(seq[:, :-1], targets=seq[:, 1:]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), pattern


def test_speculative_decoding_returns_exactly_greedy_tokens():
    model = DeepSeekV3(preset("tiny")).eval()
    prompt = [3, 1, 4, 1, 5, 9]
    tokens, stats = speculative_generate(model, prompt, 25)
    assert torch.equal(tokens, generate(model, prompt, 25))
    assert stats.new_tokens == 25 and stats.forward_passes >= 1
    assert not tokens.is_inference()  # decoded under inference mode, returned as a normal tensor


def test_trained_mtp_drafts_are_accepted_and_save_forward_passes():
    model, pattern = _train_on_a_pattern()
    prompt = pattern[:12]
    tokens, stats = speculative_generate(model, prompt, 40)
    assert torch.equal(tokens, generate(model, prompt, 40))
    assert stats.acceptance_rate > 0.5
    assert stats.forward_passes < 40
    assert stats.drafted == stats.forward_passes - 1


def test_speculative_errors():
    with pytest.raises(ValueError, match="num_nextn_predict_layers >= 1"):
        speculative_generate(DeepSeekV3(preset("tiny").replace(num_nextn_predict_layers=0)), [1, 2], 3)
    with pytest.raises(ValueError, match="batch size 2"):
        speculative_generate(DeepSeekV3(preset("tiny")), [[1, 2], [3, 4]], 3)
