"""Completion scoring (``lmtune.inference.scoring``): the summed log-probability of a target after a prompt."""

import pytest
import torch


def test_completion_logprobs_match_a_manual_forward(setup):
    from lmtune.inference.scoring import completion_logprobs

    tok, model, enc = setup
    prompt = enc.prompt_ids([{"role": "system", "content": "you are a helpful assistant"},
                             {"role": "user", "content": "the movie was great"}])
    target = enc.target_ids("positive")
    (score,) = completion_logprobs(model, [(prompt, target)], tok.pad_token_id, quiet=True)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + target])).logits[0]
    logp = torch.log_softmax(logits, -1)
    manual = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(target))
    assert score == pytest.approx(manual, abs=1e-4)
