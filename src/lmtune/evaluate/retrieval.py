"""BM25 retrieval (``bm25s``) for the systems that read more than the test input itself.

- few-shot with ``eval.few_shot_selection: bm25``: the k training examples most similar to each
  test input are its shots, instead of the same k random ones for every input;
- ``rag`` / ``finetuned+rag``: the top passages of a corpus file (``eval.rag.corpus``) are placed
  in the prompt, above the question.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.data import io
from lmtune.data.formats import Example
from lmtune.data.templates import Rendered
from lmtune.errors import UserError

RAG_INSTRUCTION = "Use the context below if it helps.\n\nContext:\n"


class BM25:
    """A BM25 index over a list of texts (English stopwords removed), queried in batches."""

    def __init__(self, texts: list[str]):
        import bm25s

        if not texts:
            raise ValueError("cannot index an empty corpus")
        self._bm25s = bm25s
        self.texts = texts
        self.index = bm25s.BM25()
        self.index.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    def top(self, queries: list[str], k: int) -> list[list[int]]:
        """Indices of the ``k`` best texts per query, best first."""
        k = min(k, len(self.texts))
        tokens = self._bm25s.tokenize(queries, stopwords="en", show_progress=False)
        found, _ = self.index.retrieve(tokens, k=k, show_progress=False)
        return [[int(i) for i in row] for row in found]


def query_text(example: Example) -> str:
    """The input part of a record: what a similar example or a relevant passage should match."""
    r = example.record
    if example.format == "chat":
        users = [m["content"] for m in r["messages"][:-1] if m.get("role") == "user"]
        return str(users[-1]) if users else ""
    if example.format == "instruction":
        return f"{r.get('instruction', '')} {r.get('input') or ''}".strip()
    for key in ("text", "prompt"):
        if key in r:
            return str(r[key])
    return ""


def similar_shots(train: list[Example], test: list[Example], k: int) -> list[list[Example]]:
    """For each test example, the ``k`` training examples BM25 finds most similar to it."""
    index = BM25([query_text(ex) for ex in train])
    return [[train[i] for i in row] for row in index.top([query_text(ex) for ex in test], k)]


def load_corpus(path: str, field: str = "text", limit: int | None = None) -> list[str]:
    """Passages of a corpus file (JSONL/CSV/Parquet, one passage per record in ``field``)."""
    from lmtune import assets

    resolved = assets.resolve_data_ref(str(path))
    passages = []
    for where, row in io.iter_rows(Path(resolved)):
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"a corpus record needs a non-empty {field!r} text field (eval.rag.field)", source=where)
        passages.append(value.strip())
        if limit and len(passages) >= limit:
            break
    if not passages:
        raise UserError("the RAG corpus has no passages", source=str(path))
    return passages


def retrieve(corpus: list[str], test: list[Example], k: int) -> list[list[str]]:
    """The ``k`` passages of ``corpus`` most relevant to each test input."""
    index = BM25(corpus)
    return [[corpus[i] for i in row] for row in index.top([query_text(ex) for ex in test], k)]


def with_context(rendered: Rendered, passages: list[str], max_chars: int = 1200) -> Rendered:
    """The rendered example with retrieved passages placed above its last user message."""
    if not passages:
        return rendered
    context = "\n".join(f"[{i + 1}] {p[:max_chars]}" for i, p in enumerate(passages))
    messages: list[dict[str, Any]] = [dict(m) for m in rendered.messages]
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        messages.append({"role": "user", "content": RAG_INSTRUCTION + context})
    else:
        messages[last_user]["content"] = f"{RAG_INSTRUCTION}{context}\n\n{messages[last_user]['content']}"
    return Rendered(messages, rendered.completion)
