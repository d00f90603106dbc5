"""Retrieval (``lmtune.evaluate.retrieval``): BM25 picks the few-shot examples and RAG passages nearest a test input."""


def test_bm25_shots_are_the_most_similar_training_examples():
    from lmtune.data.formats import Example
    from lmtune.evaluate.retrieval import similar_shots

    train = [Example({"text": t, "label": "x"}, f"f:{i}", "classification") for i, t in
             enumerate(["aspirin cured my headache", "the hotel room was clean", "ibuprofen for back pain"])]
    test = [Example({"text": "my headache after aspirin", "label": "x"}, "t:1", "classification")]
    shots = similar_shots(train, test, 2)
    assert shots[0][0].record["text"] == "aspirin cured my headache"
