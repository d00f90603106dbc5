"""The ``diverse`` strategy: uncertain records that are not near-copies of one another.

Pure uncertainty sampling picks the N records nearest the decision boundary, and those are often N
phrasings of one confusing case: a batch of labels that teaches one thing. Here the most uncertain
``CANDIDATES_PER_PICK * N`` records (by entropy) are embedded (the mean of the scoring model's last hidden
state over the prompt's tokens), clustered into N groups by scikit-learn's k-means (seeded), and the most
uncertain record of each group is picked (the "cluster-margin" idea of Citovsky et al., 2021, in its
simplest form).
"""

from __future__ import annotations

import warnings

import numpy as np

from lmtune.active.strategies import select_top

#: Candidates embedded and clustered per record picked.
CANDIDATES_PER_PICK = 10


def candidates(uncertainty: np.ndarray, budget: int, seed) -> np.ndarray:
    """The indices of the ``min(n, CANDIDATES_PER_PICK * budget)`` most uncertain records, most uncertain first."""
    return select_top(uncertainty, min(len(uncertainty), CANDIDATES_PER_PICK * budget), seed)


def pick(embeddings: np.ndarray, uncertainty: np.ndarray, budget: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """One record per k-means cluster of ``embeddings``: the most uncertain of each.

    Args:
        embeddings: (m, d) vectors of the candidates.
        uncertainty: (m,) their uncertainty; the pick of a cluster is its highest.
        budget: how many to pick (the number of clusters, at most m).
        seed: k-means' seed (an int, or a sequence such as an arm's (seed, round)).

    Returns:
        (positions into the candidates, their cluster ids), most uncertain first. When the candidates hold fewer
        distinct vectors than ``budget``, k-means cannot make that many groups: the rest are the most uncertain
        candidates not yet picked (cluster id -1).
    """
    from sklearn.cluster import KMeans

    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    budget = min(budget, len(uncertainty))
    data = np.asarray(embeddings, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer distinct points than clusters": handled below
        state = int(np.random.default_rng(seed).integers(2**31 - 1))  # an arm's seed may be (seed, round)
        clusters = KMeans(n_clusters=budget, random_state=state, n_init=4).fit_predict(data)
    chosen, ids = [], []
    for cluster in np.unique(clusters):
        members = np.flatnonzero(clusters == cluster)
        chosen.append(int(members[select_top(uncertainty[members], 1, seed)[0]]))
        ids.append(int(cluster))
    if len(chosen) < budget:
        taken = set(chosen)
        rest = [int(i) for i in select_top(uncertainty, len(uncertainty), seed) if i not in taken]
        extra = rest[:budget - len(chosen)]
        chosen += extra
        ids += [-1] * len(extra)
    order = select_top(uncertainty[chosen], len(chosen), seed)
    return np.asarray(chosen)[order], np.asarray(ids)[order]


def embed(model, prompts: list[list[int]], pad_id: int, batch_size: int = 8, quiet: bool = False) -> np.ndarray:
    """The mean of ``model``'s last hidden state over each prompt's tokens, as an (n, d) array.

    Prompts are right-padded and the padding masked out of the mean. A soft-prompt model puts its virtual
    tokens before the input; only the positions of the prompt's own tokens (the last ones) are averaged.
    """
    import torch

    from lmtune import progress

    device = next(model.parameters()).device
    out = []
    bar = progress.bar(len(prompts), "embed candidates", "ex", quiet=quiet)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            width = max(len(p) for p in batch)
            ids = torch.tensor([p + [pad_id] * (width - len(p)) for p in batch], device=device)
            mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in batch], device=device)
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
            hidden = hidden[:, -width:].float()
            weights = mask.unsqueeze(-1).float()
            out.append(((hidden * weights).sum(dim=1) / weights.sum(dim=1)).cpu().numpy())
            bar.update(len(batch))
    bar.close()
    return np.concatenate(out) if out else np.zeros((0, 0))
