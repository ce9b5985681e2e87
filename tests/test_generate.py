import pytest
import torch

from dsv3_mini import DeepSeekV3, preset
from dsv3_mini.generate import generate


def test_greedy_generation_equals_argmax_of_full_forwards(tiny_model):
    prompt = torch.tensor([[5, 17, 42, 99], [1, 2, 3, 4]])
    out = generate(tiny_model, prompt, max_new_tokens=8)
    assert out.shape == (2, 12) and torch.equal(out[:, :4], prompt)
    seq = prompt
    with torch.no_grad():
        for _ in range(8):
            nxt = tiny_model(seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(out, seq)


def test_one_dimensional_prompt_gives_one_dimensional_output(tiny_model):
    out = generate(tiny_model, [3, 4, 5], max_new_tokens=2)
    assert out.shape == (5,)


def test_sampling_is_reproducible_with_a_generator(tiny_model):
    a = generate(tiny_model, [1, 2], 10, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(0))
    b = generate(tiny_model, [1, 2], 10, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_top_k_one_is_greedy(tiny_model):
    greedy = generate(tiny_model, [7, 8, 9], 6)
    sampled = generate(tiny_model, [7, 8, 9], 6, temperature=0.7, top_k=1)
    assert torch.equal(greedy, sampled)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_new_tokens": -1}, "max_new_tokens=-1"), ({"max_new_tokens": 2, "temperature": -1.0}, "temperature=-1.0"),
     ({"max_new_tokens": 2, "top_k": 0}, "top_k=0"), ({"max_new_tokens": 600}, "max_position_embeddings=512")],
)
def test_bad_arguments_raise_clear_errors(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, [1, 2, 3], **kwargs)


def test_out_of_vocabulary_tokens_are_rejected():
    model = DeepSeekV3(preset("tiny"))
    with pytest.raises(ValueError, match="token ids must lie in 0..255"):
        model(torch.tensor([[1, 256]]))


def test_logits_to_keep_runs_the_head_on_the_last_positions_only(tiny_model):
    tokens = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        full = tiny_model(tokens)
        last = tiny_model(tokens, logits_to_keep=3)
    assert last.logits.shape == (2, 3, 256) and last.hidden_states.shape == full.hidden_states.shape
    torch.testing.assert_close(last.logits, full.logits[:, -3:])


@pytest.mark.parametrize("bad", [-1, 1.5])
def test_logits_to_keep_must_be_a_count_and_cannot_skip_the_loss(tiny_model, bad):
    tokens = torch.randint(0, 256, (1, 5))
    with pytest.raises(ValueError, match="logits_to_keep"):
        tiny_model(tokens, logits_to_keep=bad)
    with pytest.raises(ValueError, match="logits_to_keep must be 0 when targets"):
        tiny_model(tokens, targets=tokens, logits_to_keep=1)


def test_a_batch_of_prompts_decodes_each_row_as_it_would_alone(tiny_model):
    prompts = torch.randint(0, 256, (6, 5), generator=torch.Generator().manual_seed(3))
    batch = generate(tiny_model, prompts, 10)
    for row, prompt in zip(batch, prompts, strict=True):
        assert torch.equal(row, generate(tiny_model, prompt, 10))


def test_a_sampled_group_is_reproducible_and_its_rows_differ(tiny_model):
    """GRPO's group: one prompt repeated, sampled at temperature 1 in one batch; a seed fixes all of it."""
    group = torch.tensor([[5, 6, 7]]).repeat(8, 1)
    a, b = (generate(tiny_model, group, 12, temperature=1.0, generator=torch.Generator().manual_seed(0))
            for _ in range(2))
    assert torch.equal(a, b)
    assert len({tuple(r.tolist()) for r in a}) > 1


def test_decoded_tokens_can_be_trained_on():
    """generate runs under inference mode but returns normal tensors: a training forward on the sampled tokens (as
    GRPO's) can save them for backward."""
    torch.manual_seed(0)
    model = DeepSeekV3(preset("tiny")).eval()
    out = generate(model, torch.tensor([[5, 17, 42, 99]]), max_new_tokens=4, temperature=1.0,
                   generator=torch.Generator().manual_seed(0))
    assert not out.is_inference()
    loss = model.train()(out[:, :-1], targets=out[:, 1:]).loss
    loss.backward()
    assert model.embed.weight.grad is not None
