"""WordNet synonyms (EDA synonym replacement) and the same reader in nltk's METEOR, offline."""

import pytest
from nltk.corpus.reader.wordnet import WordNetCorpusReader
from nltk.translate.meteor_score import meteor_score

from lmtune.data import synonyms as syn
from lmtune.errors import UserError


@pytest.mark.parametrize("word, expected", [
    ("good", {"well", "beneficial", "honest"}),
    ("pain", {"hurting", "anguish", "annoyance"}),
    ("happy", {"glad"}),
    ("car", {"auto", "automobile"}),
    ("quickly", {"rapidly", "speedily"}),
])
def test_synonyms_of_common_words(word, expected):
    found = syn.synonyms(word)
    assert expected <= set(found)
    assert word not in found
    assert len(found) == len(set(found))
    assert all(w == w.lower() and "_" not in w and " " not in w for w in found)


def test_synonyms_normalise_input_and_return_a_fresh_list():
    first = syn.synonyms("Happy ")
    assert first == syn.synonyms("happy")
    first.clear()  # the caller's copy, not the cache
    assert syn.synonyms("happy")


def test_inflections_of_the_word_are_not_synonyms():
    assert "dog" not in syn.synonyms("dogs")
    assert "hound" in syn.synonyms("dogs")
    assert "run" not in syn.synonyms("ran")


def test_unknown_or_empty_words_have_none():
    assert syn.synonyms("xyzzyq") == []
    assert syn.synonyms("") == []
    assert syn.synonyms("ice cream") == []


def test_missing_data_is_a_user_error(monkeypatch):
    monkeypatch.setattr(syn, "_data_dir", lambda: None)
    assert not syn.available()
    with pytest.raises(UserError) as err:
        syn.synonyms("good")
    assert err.value.source == "data.augment.method"
    assert syn.PACKAGE in err.value.message


def test_wordnet_reader_is_wordnet_30():
    assert syn.available()
    reader = syn.wordnet()
    assert isinstance(reader, WordNetCorpusReader)
    assert reader.get_version() == "3.0"
    assert reader is syn.wordnet()  # loaded once


def test_meteor_credits_a_synonym_over_a_random_word():
    reader = syn.wordnet()
    reference = ["the", "car", "was", "fast", "and", "i", "was", "ill"]

    def score(hypothesis: str) -> float:
        return meteor_score([reference], hypothesis.split(), wordnet=reader)

    exact = score("the car was fast and i was ill")
    # nltk matches WordNet synonyms after Porter stemming, so the pair must survive stemming:
    # "auto" and "car" do ("movie" becomes "movi" and would never match "film").
    synonym = score("the auto was fast and i was ill")
    random_word = score("the tree was fast and i was ill")
    assert 0 < exact <= 1
    assert 0 < random_word < synonym <= exact
