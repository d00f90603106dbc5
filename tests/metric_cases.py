"""Fixed references and predictions for the metric tests (``tests/evaluate/metrics``), one set per task family."""

LABELS = ["negative", "neutral", "positive"]
REFS = ["positive", "negative", "neutral", "positive", "negative", "positive", "neutral"]
PREDS = ["positive", "positive", "neutral", "negative", "negative", "positive", "positive"]

GEN_REFS = ["the cat sat on the mat", "dosage was reduced after two weeks",
            "patients reported mild headaches"]
GEN_PREDS = ["a cat is sitting on the mat", "the dosage was lowered after two weeks",
             "some patients report headaches"]

# Two-line texts make rougeLsum (sentences = lines) differ from rougeL.
LSUM_REFS = GEN_REFS + ["the dose was reduced.\nthe pain stopped after a week"]
LSUM_PREDS = GEN_PREDS + ["the pain stopped after a week\nthe dose was lowered"]
