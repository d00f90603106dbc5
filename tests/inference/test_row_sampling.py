"""Sampling with a random stream per row (``lmtune.inference.row_sampling``, ``generate_detailed(row_seeds=)``):
each row draws from its softmax after transformers' warpers, and what a row samples does not depend on the rows
batched with it, their order or their padding."""

import pytest
import torch
from scipy.stats import chisquare

from lmtune.inference import row_sampling
from lmtune.inference.generation import generate_detailed

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])


def _draws(rows: int, **sampling) -> torch.Tensor:
    """The token each of ``rows`` rows (seeds 0..rows-1) picks from :data:`LOGITS` at one step."""
    processors = row_sampling.options({"do_sample": True, **sampling}, list(range(rows)))["logits_processor"]
    scores = processors(torch.zeros(rows, 1, dtype=torch.long), LOGITS.repeat(rows, 1))
    return scores.argmax(dim=1)


def test_each_row_draws_from_the_softmax_of_its_scores():
    draws = _draws(20000, temperature=0.7)
    expected = torch.softmax(LOGITS.double() / 0.7, dim=0).numpy()
    observed = torch.bincount(draws, minlength=len(LOGITS)).numpy()
    assert chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > 1e-3


def test_top_p_and_top_k_leave_out_what_they_filter():
    # softmax(LOGITS): 0.57, 0.21, 0.13, 0.08, ...: top_p 0.75 keeps the first two, top_k 3 the first three.
    assert set(_draws(4000, top_p=0.75).tolist()) == {0, 1}
    assert set(_draws(4000, top_k=3).tolist()) == {0, 1, 2}


def test_the_options_replace_sampling_and_keep_the_controls_first():
    control = object()
    options = row_sampling.options({"do_sample": True, "temperature": 1.3, "top_p": 0.9, "max_new_tokens": 5,
                                    "logits_processor": [control]}, [1, 2])
    assert options["do_sample"] is False and options["max_new_tokens"] == 5
    assert "temperature" not in options and "top_p" not in options
    kinds = [type(p).__name__ for p in options["logits_processor"]]
    assert options["logits_processor"][0] is control
    assert kinds[1:] == ["TemperatureLogitsWarper", "TopPLogitsWarper", "RowNoise"]


def test_a_rows_tokens_do_not_depend_on_the_rows_batched_with_it(setup):
    tok, model, enc = setup
    texts = ["the movie was great", "this drug gave me awful side effects and it was terrible", "it was fine",
             "ok", "a long and winding review of a film that went on and on"]
    prompts = [enc.prompt_ids([{"role": "user", "content": t}]) for t in texts]
    seeds = [11, 12, 13, 14, 15]

    def sampled(indices, batch_size):
        out = generate_detailed(model, tok, [prompts[i] for i in indices], 12, tok.pad_token_id, batch_size,
                                quiet=True, row_seeds=[seeds[i] for i in indices], temperature=1.0)
        return dict(zip(indices, out.tokens))

    together = sampled([0, 1, 2, 3, 4], 5)
    assert len({tuple(t) for t in together.values()}) == 5  # sampled, not greedy: the rows differ
    assert sampled([4, 2, 0], 3) == {i: together[i] for i in (4, 2, 0)}  # other neighbours, other padding
    assert sampled([3, 1], 1) == {i: together[i] for i in (3, 1)}  # alone
    again = generate_detailed(model, tok, [prompts[0]], 12, tok.pad_token_id, 1, quiet=True, row_seeds=[99])
    assert again.tokens[0] != together[0]  # another seed, another sample


def test_fewer_seeds_than_rows_is_an_error():
    noise = row_sampling.RowNoise([1, 2])
    with pytest.raises(ValueError, match="2 seeds for 3 rows"):
        noise(torch.zeros(3, 1, dtype=torch.long), torch.zeros(3, 4))
