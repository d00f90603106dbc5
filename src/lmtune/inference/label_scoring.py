"""Classification by label scoring: the log-likelihood of every label after every prompt, no generation.

The cost of a batch grows with the label tokens that differ, not with labels x prompt length:

- the prompt prefix every prompt shares (system prompt, few-shot examples) is encoded once; each
  batch attends to its cached keys and values through an expanded view (no per-row copy is kept);
- the labels' tokens form a trie, fed once per prompt after its own tokens in the same forward
  pass: a 4-D attention mask lets each trie node see the prompt and its own ancestors only, so a
  token shared by several labels ("card_" in card_arrival, card_linking, ...) is run once;
- logits are computed only where a label token is predicted.

Memory is bounded by a budget (``eval.memory_gb``; by default half of what the machine has free):
the batch size is the largest, up to ``eval.batch_size``, whose estimated peak fits, and a prompt
that cannot fit even alone is refused before any scoring starts (:func:`check_fits`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmtune import progress
from lmtune.errors import UserError
from lmtune.inference import prefix_attention
from lmtune.inference.scoring import completion_logprobs
from lmtune.models import is_prompt_learning

_GB = 1 << 30
_ELEMENT = 4  # bytes per activation in the estimate: fp32 (bf16 halves it; the estimate stays on the safe side)


@dataclass(frozen=True)
class LabelTrie:
    """The labels' token sequences as a trie of the proper prefixes that must be fed to the model.

    Node ``t`` stands for a label prefix ending in ``tokens[t]``; its logits predict the next token
    of every label that starts with that prefix. Each scored label token is one (source, target)
    pair: ``sources`` is 0 for the prompt's last token and ``1 + t`` for node ``t``.
    """

    tokens: list[int]
    parents: list[int]  # -1: the node hangs directly off the prompt
    depths: list[int]
    sources: list[int]
    targets: list[int]
    owners: list[int]  # the label index of each (source, target) pair
    n_labels: int


def build_trie(label_ids: list[list[int]]) -> LabelTrie:
    """The trie of ``label_ids`` (each a label's tokens, EOS included)."""
    nodes: dict[tuple[int, ...], int] = {}
    tokens, parents, depths, sources, targets, owners = [], [], [], [], [], []
    for j, label in enumerate(label_ids):
        at = -1  # the node of label[:d], -1 before the first token
        for d, token in enumerate(label):
            sources.append(1 + at if d else 0)
            targets.append(token)
            owners.append(j)
            if d == len(label) - 1:
                break
            key = tuple(label[:d + 1])
            if key not in nodes:
                nodes[key] = len(tokens)
                tokens.append(token)
                parents.append(at)
                depths.append(d)
            at = nodes[key]
    return LabelTrie(tokens, parents, depths, sources, targets, owners, len(label_ids))


def supports_tree(model) -> bool:
    """Whether ``model`` takes a custom 4-D mask and a shared prefix cache (plain attention, no prompt learning)."""
    config = getattr(model, "config", None)
    return (not is_prompt_learning(model) and config is not None
            and getattr(config, "_attn_implementation", None) in ("sdpa", "eager"))


def budget_bytes(memory_gb: float | None, device) -> int:
    """The scoring budget: ``memory_gb`` if set, else half of the memory free on ``device`` now."""
    if memory_gb is not None:
        return int(memory_gb * _GB)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return _available_ram() // 2


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * _GB  # no /proc (macOS): assume a modest machine


@dataclass(frozen=True)
class Estimator:
    """Estimated peak bytes of one forward pass, from the model's shape (no grad, one layer live at a time)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_dim: int  # key/value heads x head size
    vocab: int

    @classmethod
    def of(cls, model) -> Estimator:
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        hidden = config.hidden_size
        heads = getattr(config, "num_attention_heads", 1)
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(hidden, getattr(config, "intermediate_size", None) or 4 * hidden, config.num_hidden_layers,
                   heads, kv_heads * head_dim, config.vocab_size)

    def prefix(self, n_prefix: int) -> int:
        """The shared prefix's cache, kept for the whole pass."""
        return 2 * self.layers * self.kv_dim * n_prefix * _ELEMENT

    def prefix_pass(self, n_prefix: int) -> int:
        """Encoding the prefix once: its cache and one layer's activations (fused causal attention, one logit row)."""
        return self.prefix(n_prefix) + n_prefix * self._per_token() * _ELEMENT + 3 * self.vocab * _ELEMENT

    def _per_token(self) -> int:
        return 4 * self.hidden + 3 * self.kv_dim + 3 * self.intermediate

    def row(self, n_prefix: int, n_query: int, n_logits: int) -> int:
        """One row: ``n_query`` new tokens attending to ``n_prefix + n_query`` keys, ``n_logits`` logits kept."""
        keys = n_prefix + n_query
        attention = 2 * self.heads * n_query * keys + 2 * self.kv_dim * keys
        return (n_query * self._per_token() + attention + 3 * n_logits * self.vocab) * _ELEMENT + n_query * keys


def common_prefix_length(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with (system prompt, few-shot examples), leaving each at least one own token."""
    if not prompts:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


@dataclass(frozen=True)
class Plan:
    """How a list of prompts is scored: the shared prefix, and batches of prompt indices (longest first)."""

    n_prefix: int
    batches: list[list[int]]
    peak_bytes: int  # estimated, of the largest batch
    trie: LabelTrie  # the labels' tokens, as fed after each prompt


def plan(model, prompts: list[list[int]], label_ids: list[list[int]], max_batch: int, budget: int,
         tree: bool | None = None) -> Plan:
    """Batches of at most ``max_batch`` prompts whose estimated peak fits ``budget``.

    Raises:
        UserError (``eval.memory_gb``): the longest prompt does not fit even alone.
    """
    tree = supports_tree(model) if tree is None else tree
    est = Estimator.of(model)
    trie = build_trie(label_ids)
    n_prefix = common_prefix_length(prompts) if tree else 0
    fixed = est.prefix(n_prefix)

    def cost(i: int) -> int:
        if tree:
            return est.row(n_prefix, len(prompts[i]) - n_prefix + len(trie.tokens), 1 + len(trie.tokens))
        longest = max(len(lab) for lab in label_ids)  # one row per label, logits over the whole sequence
        return len(label_ids) * est.row(0, len(prompts[i]) + longest, len(prompts[i]) + longest)

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batches: list[list[int]] = []
    peak = est.prefix_pass(n_prefix)
    if peak > budget:
        _refuse(peak, budget, n_prefix, len(label_ids), len(trie.tokens))
    for i in order:
        if batches and len(batches[-1]) < max_batch and fixed + (len(batches[-1]) + 1) * cost(batches[-1][0]) <= budget:
            batches[-1].append(i)
        else:
            if fixed + cost(i) > budget:
                _refuse(fixed + cost(i), budget, len(prompts[i]), len(label_ids), len(trie.tokens))
            batches.append([i])
        peak = max(peak, fixed + len(batches[-1]) * cost(batches[-1][0]))
    return Plan(n_prefix, batches, peak, trie)


def _refuse(needed: int, budget: int, n_tokens: int, n_labels: int, n_nodes: int) -> None:
    raise UserError(f"scoring one {n_tokens:,}-token prompt against {n_labels} labels ({n_nodes} label tokens to "
                    f"feed) needs about {needed / _GB:.1f} GB, over the {budget / _GB:.1f} GB budget; raise "
                    "eval.memory_gb if the machine has the memory, or shorten the prompt (fewer eval.few_shot_k "
                    "examples, shorter labels or inputs)", source="eval.memory_gb")


def check_fits(model, prompts: list[list[int]], label_ids: list[list[int]], max_batch: int,
               memory_gb: float | None) -> Plan:
    """:func:`plan` under the budget of ``memory_gb`` on the model's device: refuses before anything runs."""
    device = next(model.parameters()).device
    return plan(model, prompts, label_ids, max_batch, budget_bytes(memory_gb, device))


@torch.no_grad()
def classify(model, prompts: list[list[int]], label_ids: list[list[int]], pad_id: int, batch_size: int = 8,
             desc: str = "classify", quiet: bool = False,
             memory_gb: float | None = None) -> tuple[list[int], list[list[float]]]:
    """Pick, for each prompt, the label whose tokens (with EOS) are most likely after it.

    The scores equal :func:`lmtune.inference.scoring.completion_logprobs` of each (prompt, label)
    pair, which scores prompt- and prefix-tuned models (and attention kernels that take no
    custom mask) directly, one row per label.

    Args:
        batch_size: most prompts per forward pass; fewer when the memory budget says so.
        memory_gb: the budget (None: half of the device's free memory).

    Returns:
        (predicted label index per prompt, log-likelihood of every label per prompt).

    Raises:
        UserError: a prompt that cannot be scored within the budget, before any is scored.
    """
    model.eval()
    device = next(model.parameters()).device
    tree = supports_tree(model)
    scheme = plan(model, prompts, label_ids, batch_size, budget_bytes(memory_gb, device), tree)
    if not tree:
        return _classify_pairs(model, prompts, label_ids, pad_id, scheme, desc, quiet)
    prefix = _prefix_cache(model, prompts[0][:scheme.n_prefix], device) if scheme.n_prefix else None
    scores: list[list[float]] = [[] for _ in prompts]
    bar = progress.bar(len(prompts), desc, "ex", quiet=quiet)
    for idx in scheme.batches:
        rows = _score_batch(model, [prompts[i][scheme.n_prefix:] for i in idx], scheme.trie, scheme.n_prefix, prefix,
                            pad_id, device)
        for i, row in zip(idx, rows):
            scores[i] = row
        bar.update(len(idx))
    bar.close()
    return [max(range(len(label_ids)), key=row.__getitem__) for row in scores], scores



def log_probabilities(scores: list[float]) -> list[float]:
    """Log-softmax of label log-likelihoods: the log of each label's probability among the labels."""
    top = max(scores)
    norm = top + math.log(sum(math.exp(s - top) for s in scores))
    return [s - norm for s in scores]

def _classify_pairs(model, prompts, label_ids, pad_id, scheme: Plan, desc, quiet):
    """Every (prompt, label) pair as its own sequence, in batches of the plan's prompts."""
    k = len(label_ids)
    rows_per_batch = max(len(b) for b in scheme.batches) * k
    flat = completion_logprobs(model, [(p, lab) for p in prompts for lab in label_ids], pad_id, rows_per_batch,
                               desc, quiet)
    scores = [flat[i * k:(i + 1) * k] for i in range(len(prompts))]
    return [max(range(k), key=row.__getitem__) for row in scores], scores


def _prefix_cache(model, ids: list[int], device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values of the shared prefix, one row (no logits: the prefix predicts nothing scored)."""
    cache = model(input_ids=torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1).past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def _score_batch(model, suffixes: list[list[int]], trie: LabelTrie, n_prefix: int, prefix, pad_id: int,
                 device) -> list[list[float]]:
    """Label log-likelihoods of a batch of prompt suffixes, the label trie fed after each."""
    b, width, n_nodes = len(suffixes), max(len(s) for s in suffixes), len(trie.tokens)
    lengths = torch.tensor([len(s) for s in suffixes], device=device)
    ids = torch.full((b, width + n_nodes), pad_id, dtype=torch.long)
    for row, suffix in enumerate(suffixes):
        ids[row, :len(suffix)] = torch.tensor(suffix, dtype=torch.long)
    ids[:, width:] = torch.tensor(trie.tokens, dtype=torch.long)
    positions = n_prefix + torch.arange(width + n_nodes, device=device).expand(b, -1).clone()
    positions[:, width:] = n_prefix + lengths[:, None] + torch.tensor(trie.depths, device=device)
    keep = torch.cat([(lengths - 1)[:, None], width + torch.arange(n_nodes, device=device).expand(b, -1)], 1)
    mask = _tree_mask(lengths, width, trie, n_prefix, device)
    if prefix:
        with prefix_attention.attending(model, prefix) as cache:
            logits = model(input_ids=ids.to(device), attention_mask=mask, position_ids=positions,
                           past_key_values=cache, use_cache=True, logits_to_keep=keep).logits.float()
    else:
        if model.config._attn_implementation == "eager":  # eager attention adds the mask to its scores
            mask = torch.zeros(mask.shape, device=device).masked_fill(~mask, torch.finfo(torch.float32).min)
        logits = model(input_ids=ids.to(device), attention_mask=mask, position_ids=positions, use_cache=False,
                       logits_to_keep=keep).logits.float()
    sources = torch.tensor(trie.sources, device=device)
    targets = torch.tensor(trie.targets, device=device)
    logp = logits[:, sources, targets] - logits.logsumexp(-1)[:, sources]  # (b, scored label tokens)
    owners = torch.tensor(trie.owners, device=device)
    return torch.zeros(b, trie.n_labels, device=device).index_add_(1, owners, logp).tolist()


def _tree_mask(lengths: torch.Tensor, width: int, trie: LabelTrie, n_prefix: int, device) -> torch.Tensor:
    """(b, 1, queries, keys) mask: prompt tokens causal; each trie node sees the prompt and its own ancestors.

    Keys are the shared prefix, the batch's right-padded suffixes, then the trie nodes. Padding
    queries see their row's real tokens (never nothing, so no row of the softmax is empty).
    """
    b, n_nodes = lengths.size(0), len(trie.tokens)
    n_query = width + n_nodes
    query = torch.arange(n_query, device=device)
    own = torch.arange(width, device=device)
    suffix = (own[None, :] <= query[:, None])[None] & (own[None, None, :] < lengths[:, None, None])
    lineage = torch.eye(n_nodes, dtype=torch.bool, device=device)
    for t, parent in enumerate(trie.parents):  # parents precede children: each row extends its parent's
        if parent >= 0:
            lineage[t] |= lineage[parent]
    nodes = torch.zeros(n_query, n_nodes, dtype=torch.bool, device=device)
    nodes[width:] = lineage
    return torch.cat([torch.ones(b, n_query, n_prefix, dtype=torch.bool, device=device), suffix,
                      nodes.expand(b, -1, -1)], -1)[:, None]
