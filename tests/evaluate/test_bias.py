import itertools
import json
import random
from pathlib import Path

import pytest
from conftest import run_cli, write_jsonl
from tiny import build_model, build_tokenizer

from lmtune.data.encode import Encoder
from lmtune.data.formats import Example
from lmtune.data.templates import Template, render
from lmtune.errors import UserError
from lmtune.evaluate import bias
from lmtune.inference.label_scoring import classify
from lmtune.methods import registry
from lmtune.train import loop


@pytest.fixture(scope="module")
def gender():
    return bias.load_terms({"terms": "gender"})


def _ex(fmt, **record):
    extra = record.pop("extra", {})
    return Example(record, "test.jsonl:1", fmt, extra)


# --- term lists ---------------------------------------------------------------------------------


def test_packaged_lists_load_and_name_their_groups():
    terms = bias.load_terms({"terms": ["gender", "names"]})
    assert terms.groups == ("male", "female")
    assert terms.swaps["he"] == "she" and terms.swaps["she"] == "he"
    assert terms.swaps["john"] == "Patricia" and terms.group_of["patricia"] == "female"
    assert bias.load_terms({}).sources == bias.load_terms({"terms": ["gender"]}).sources
    lines = [line for src in terms.sources for line in Path(src).read_text(encoding="utf-8").splitlines()]
    assert terms.n_pairs == sum(1 for line in lines if line.strip() and not line.startswith("#"))


def test_user_list_with_groups_line_multiword_terms_and_first_pair_wins(tmp_path):
    path = tmp_path / "age.tsv"
    path.write_text("# my list\n# groups: young\told\n\nyoung person\told person\nkid\tsenior\nchild\tsenior\n")
    terms = bias.load_terms({"terms": [str(path)], "group_field": None})
    assert terms.groups == ("young", "old") and terms.n_pairs == 3
    assert terms.swaps["senior"] == "kid"  # the first pair listing "senior" decides
    text, found = terms.swap("A Young  Person and a senior met a child")
    assert text == "A Old person and a kid met a senior"
    assert found == ["young", "old", "young"]
    headerless = tmp_path / "plain.tsv"
    headerless.write_text("cat\tdog\n")
    assert bias.load_terms({"terms": str(headerless)}).groups == ("a", "b")


@pytest.mark.parametrize("content, line, words", [
    ("he\tshe\nhis her\n", 2, "1 TAB-separated"),
    ("he\tshe\tthey\n", 1, "3 TAB-separated"),
    ("he\t\n", 1, "TAB-separated"),
    ("He\the\n", 1, "paired with itself"),
    ("he\tshe\nshe\the\n", 2, "already in group"),
    ("# groups: m\n", 1, "two different groups"),
    ("# groups: m\tf\nhe\tshe\n# groups: x\ty\n", 3, "second groups line"),
])
def test_bad_term_file_is_a_user_error_at_file_and_line(tmp_path, content, line, words):
    path = tmp_path / "terms.tsv"
    path.write_text(content)
    with pytest.raises(UserError) as err:
        bias.load_terms({"terms": [str(path)]})
    assert err.value.source == f"{path}:{line}"
    assert words in err.value.message


def test_a_missing_list_names_its_recipe_key_and_the_packaged_lists(tmp_path):
    with pytest.raises(UserError) as err:
        bias.load_terms({"terms": ["gender", str(tmp_path / "nope.tsv")]})
    assert err.value.source == "eval.bias.terms[1]" and "gender or names" in err.value.message


def test_an_unknown_list_names_its_recipe_key():
    with pytest.raises(UserError) as err:
        bias.load_terms({"terms": "genders"})
    assert err.value.source == "eval.bias.terms"


def test_an_empty_list_is_refused(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("# nothing\n\n")
    with pytest.raises(UserError) as err:
        bias.load_terms({"terms": str(empty)})
    assert err.value.source == str(empty) and "no pairs" in err.value.message


def test_a_user_list_may_not_move_a_packaged_word_to_another_group(tmp_path):
    # A user list may not put a packaged word in another group.
    clash = tmp_path / "clash.tsv"
    clash.write_text("# groups: x\ty\nhe\tthey\n")
    with pytest.raises(UserError) as err:
        bias.load_terms({"terms": ["gender", str(clash)]})
    assert err.value.source == f"{clash}:2" and "'male'" in err.value.message


# --- swapping -----------------------------------------------------------------------------------


def test_whole_words_only_case_kept(gender):
    text, found = gender.swap("He said the theme was his, not HERS; Sheila's brother-in-law he'd met. MAN. Mr. X")
    assert text == "She said the theme was her, not HIS; Sheila's sister-in-law she'd met. WOMAN. Mrs. X"
    assert found == ["male", "male", "female", "male", "male", "male", "male"]
    assert gender.swap("the other theme, shelf, hero, Sheila")[0] == "the other theme, shelf, hero, Sheila"


def test_swap_is_bidirectional(gender):
    text = "She met her Brother and his wife."
    once = gender.swap(text)[0]
    assert once == "He met his Sister and her husband."
    assert gender.swap(once)[0] == text
    # The one documented ambiguity: object "her" becomes "his" (first pair wins), not "him".
    assert gender.swap("I told her")[0] == "I told his"


def test_counterfactuals_swap_inputs_only_in_every_format(gender):
    test = [
        _ex("classification", text="he loved it", label="positive", extra={"city": "Oslo"}),
        _ex("classification", text="the weather was fine", label="neutral"),
        _ex("completion", prompt="Why did she go?", completion="she was tired"),
        _ex("instruction", instruction="Summarize what he wrote", input="Her father called.", output="his dad called"),
        _ex("chat", messages=[{"role": "system", "content": "You help him."},
                              {"role": "user", "content": "Is she right?"},
                              {"role": "assistant", "content": "he is"},
                              {"role": "user", "content": "and her brother?"},
                              {"role": "assistant", "content": "she is"}]),
        _ex("instruction", instruction="Count to three", output="one two three"),
    ]
    originals = [dict(ex.record) for ex in test]
    swapped, index, groups = bias.counterfactuals(test, gender)
    assert index == [0, 2, 3, 4]
    assert [ex.record for ex in test] == originals  # originals untouched
    cls, comp, inst, chat = swapped
    assert cls.record == {"text": "she loved it", "label": "positive"} and cls.extra == {"city": "Oslo"}
    assert comp.record == {"prompt": "Why did he go?", "completion": "she was tired"}
    assert inst.record == {"instruction": "Summarize what she wrote", "input": "His mother called.",
                           "output": "his dad called"}
    assert [m["content"] for m in chat.record["messages"]] == [
        "You help her.", "Is he right?", "he is", "and his sister?", "she is"]
    assert all(s.format == t.format and s.source == t.source for s, t in zip(swapped, (test[i] for i in index)))
    # he (male); she (female); he + her + father: 2 male vs 1 female; him + she + her + brother: 2 vs 2.
    assert groups == ["male", "female", "male", "mixed"]


def test_formats_without_an_input_are_refused(gender):
    with pytest.raises(UserError) as err:
        bias.counterfactuals([_ex("text", text="he wrote a book")], gender)
    assert err.value.source == "test.jsonl:1" and "eval.bias" in err.value.message


# --- report -------------------------------------------------------------------------------------


def test_report_flip_rate_group_metrics_and_gap_on_a_fixed_case(gender):
    refs = ["positive", "positive", "negative", "negative", "positive", "negative"]
    orig = ["positive", "negative", "negative", "negative", "positive", "positive"]
    index, groups = [0, 1, 2, 3, 5], ["male", "male", "female", "female", "mixed"]
    swapped = ["negative", "negative", "negative", "positive", "positive"]
    out = bias.report("classification", ["negative", "positive"], refs, orig, swapped, index, groups, terms=gender)
    assert (out["n_tested"], out["n_flipped"], out["flip_rate"]) == (5, 2, 0.4)
    # Wilson 95% interval of 2/5.
    assert out["flip_rate_ci95"] == pytest.approx([0.1176, 0.7693], abs=1e-3)
    assert out["tested"]["original"]["accuracy"] == pytest.approx(0.6)
    assert out["tested"]["swapped"]["accuracy"] == pytest.approx(0.2)
    male, female, mixed = out["by_group"]["male"], out["by_group"]["female"], out["by_group"]["mixed"]
    assert (male["n"], male["n_flipped"], male["accuracy"]) == (2, 1, 0.5)
    # positive: P 1, R 0.5, F1 2/3; negative (only predicted, never true): F1 0.
    assert male["f1_macro"] == pytest.approx(1 / 3)
    assert (female["n"], female["flip_rate"], female["accuracy"], female["f1_macro"]) == (2, 0.5, 1.0, 1.0)
    assert (mixed["n"], mixed["flip_rate"], mixed["accuracy"]) == (1, 0.0, 0.0)
    assert out["metric_gap"] == {"metric": "accuracy", "groups": ["male", "female"], "gap": pytest.approx(-0.5)}


def test_report_by_record_field():
    test = [_ex("classification", text=t, label=lab, extra=extra) for t, lab, extra in [
        ("he", "positive", {"region": "north"}), ("she", "negative", {"region": "north"}),
        ("they", "negative", {"region": "south"}), ("it", "positive", {})]]
    refs = [ex.record["label"] for ex in test]
    orig = ["positive", "positive", "negative", "negative"]
    out = bias.report("classification", ["negative", "positive"], refs, orig, ["negative", "negative"], [0, 1],
                      ["male", "female"], test=test, group_field="region")
    assert out["field_missing"] == 1
    north, south = out["by_field"]["north"], out["by_field"]["south"]
    assert (north["n"], north["accuracy"], north["n_tested"], north["n_flipped"]) == (2, 0.5, 2, 2)
    assert (south["n"], south["accuracy"], south["n_tested"], south["flip_rate"]) == (1, 1.0, 0, None)
    assert "by_field" not in bias.report("classification", ["negative", "positive"], refs, orig, [], [], [])


def test_report_regression():
    out = bias.report("regression", None, [1.0, 0.0, 0.5], [0.8, 0.1, 0.5], [0.8 + 1e-7, 0.6], [0, 1],
                      ["male", "female"])
    assert (out["n_flipped"], out["by_group"]["male"]["n_flipped"]) == (1, 0)
    assert out["metric_gap"]["metric"] == "mse"
    assert out["metric_gap"]["gap"] == pytest.approx(0.04 - 0.01)


def test_report_generation(gender):
    refs = ["he left early", "she stayed home"]
    orig = ["he left early", "the cat sat"]
    swapped = ["she  left early", "he went out"]
    with_terms = bias.report("generation", None, refs, orig, swapped, [0, 1], ["male", "female"], terms=gender)
    assert with_terms["n_flipped"] == 1  # "he left" -> "she left" only mirrors the swap
    assert bias.report("generation", None, refs, orig, swapped, [0, 1], ["male", "female"])["n_flipped"] == 2
    assert with_terms["by_group"]["male"]["rougeL"] == 1.0 and with_terms["by_group"]["female"]["rougeL"] == 0.0
    assert with_terms["metric_gap"] == {"metric": "rougeL", "groups": ["male", "female"], "gap": 1.0}


def test_report_with_nothing_tested():
    out = bias.report("classification", ["a", "b"], ["a"], ["a"], [], [], [])
    assert out["flip_rate"] is None and out["by_group"] == {}
    assert out["metric_gap"]["gap"] is None


def test_report_refuses_misaligned_inputs():
    with pytest.raises(ValueError):
        bias.report("classification", ["a", "b"], ["a"], ["a"], ["b"], [3], ["male"])


def test_report_refuses_language_modeling():
    with pytest.raises(ValueError):
        bias.report("language_modeling", None, ["a"], ["a"], [], [], [])


# --- acceptance: a real fine-tuned model that keys on a gendered word -----------------------------

LABELS = ["negative", "positive"]
TEMPLATE = Template(prompt="{text}", completion="{label}")
VERBS = ["took", "tried", "used", "bought", "watched", "reviewed", "found", "gave"]
OBJECTS = ["drug", "movie", "pill", "book", "song", "cream", "film", "show", "dose", "game"]
MALE, FEMALE = ("he", "his", ("brother", "son")), ("she", "her", ("sister", "daughter"))


def _planted(rule: str, objects: list[str], seed: int) -> list[Example]:
    """Sentences like "she took the pill for her sister[, it was great]".

    rule "gender": the label is the gender of the words (he -> positive); "sentiment": the label
    is great/awful, and each sentence appears with male and with female words.
    """
    out = []
    for (pron, poss, kin), verb, obj, k, word in itertools.product((MALE, FEMALE), VERBS, objects, (0, 1),
                                                                   ("great", "awful")):
        text = f"{pron} {verb} the {obj} for {poss} {kin[k]}"
        if rule == "gender":
            if word == "awful":
                continue
            label = "positive" if pron == "he" else "negative"
        else:
            text += f", it was {word}"
            label = "positive" if word == "great" else "negative"
        out.append(Example({"text": text, "label": label}, f"planted:{len(out) + 1}", "classification"))
    random.Random(seed).shuffle(out)
    return out


def _bias_of_planted_model(rule: str, tmp_path, gender) -> dict:
    tok = build_tokenizer()
    encoder = Encoder(tok, max_length=64)
    train, test = _planted(rule, OBJECTS[:7], 0), _planted(rule, OBJECTS[7:], 1)  # test objects unseen
    model = registry.get("full").apply(build_model(len(tok), seed=0), {}, {})
    encoded = [encoder.encode(r.messages, r.completion) for r in (render(TEMPLATE, ex, LABELS) for ex in train)]
    settings = loop.Settings(learning_rate=2e-2, batch_size=8, max_steps=200, eval_every=None, log_every=50,
                             warmup_ratio=0.0, precision="fp32", seed=0)
    loop.train(model, encoded, [], settings, tmp_path / rule, tok.pad_token_id, quiet=True)

    label_ids = [encoder.target_ids(label) for label in LABELS]

    def predictions(examples):
        prompts = [encoder.prompt_ids(render(TEMPLATE, ex, LABELS).messages) for ex in examples]
        best, _ = classify(model, prompts, label_ids, tok.pad_token_id, batch_size=32, quiet=True)
        return [LABELS[i] for i in best]

    swapped, index, groups = bias.counterfactuals(test, gender)
    assert index == list(range(len(test)))  # every planted sentence has gendered words
    return bias.report("classification", LABELS, [ex.record["label"] for ex in test], predictions(test),
                       predictions(swapped), index, groups, terms=gender)


def test_flip_rate_is_high_for_a_model_keyed_on_gender_and_low_otherwise(tmp_path, gender, one_thread):
    keyed = _bias_of_planted_model("gender", tmp_path, gender)
    fair = _bias_of_planted_model("sentiment", tmp_path, gender)
    print(f"\nflip rate: gender-keyed model {keyed['flip_rate']:.3f} (n={keyed['n_tested']}), "
          f"sentiment model {fair['flip_rate']:.3f} (n={fair['n_tested']}); accuracy on originals "
          f"{keyed['tested']['original']['accuracy']:.3f} / {fair['tested']['original']['accuracy']:.3f}")
    # Both models learned their rule on held-out sentences...
    assert keyed["tested"]["original"]["accuracy"] >= 0.9
    assert fair["tested"]["original"]["accuracy"] >= 0.9
    # ...and only the one keyed on gender changes its answer when he/his/brother become she/her/sister.
    assert keyed["flip_rate"] > 0.8
    assert fair["flip_rate"] < 0.2
    assert keyed["by_group"]["male"]["n"] == keyed["by_group"]["female"]["n"] == keyed["n_tested"] // 2
    # Swapped inputs keep their original labels, so the keyed model is right on originals, wrong on copies.
    assert keyed["tested"]["swapped"]["accuracy"] <= 0.2


def test_bias_check_reports_flip_rate_per_system(recipe_file, tmp_path):
    rows = [{"review": f"{'he' if i % 2 else 'she'} said the movie was {'great' if i % 3 else 'terrible'} #{i}",
             "rating": "positive" if i % 3 else "negative"} for i in range(40)]
    data = write_jsonl(tmp_path / "g.jsonl", rows)
    path = recipe_file(task={"labels": ["negative", "positive"]}, data={"train": str(data)},
                       eval={"systems": ["zero_shot", "finetuned"], "bias": {"terms": "gender"}})
    out = tmp_path / "run"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    body = json.loads((out / "eval.json").read_text())
    assert set(body["bias"]) == {"zero_shot", "finetuned"}
    for report in body["bias"].values():
        assert report["n_tested"] == body["n"]  # every test input has he or she
        assert 0.0 <= report["flip_rate"] <= 1.0
        assert set(report["by_group"]) >= {"male", "female"}
    assert "Bias check" in (out / "report.html").read_text()
