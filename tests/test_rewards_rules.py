"""Rule verifiers, answer extraction, the mode-aware format reward and the repetition penalty,
including malformed completions (each gets an exact, defined reward and nothing raises).
"""

from __future__ import annotations

import time

import pytest

from rewards.format import (
    FormatReward,
    RepetitionPenalty,
    deep_format_ok,
    fast_format_ok,
    has_repetition,
    max_window_count,
)
from rewards.verifiers import (
    RuleAccuracy,
    canonical_qtype,
    exact_match,
    extract_answer,
    infer_qtype,
    normalize_text,
    numbers_match,
    parse_choice,
    parse_number,
    parse_yes_no,
    phrase_match,
    verify,
)

# ---- extraction and verifiers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, answer",
    [
        ("<think>a</think>\n\n  Paris \n", "Paris"),
        ("<think>a</think>x</think> last ", "last"),  # the last </think>
        ("  just text  ", "just text"),
        ("<think>reasoning cut at the token limit: yes", ""),  # unfinished reasoning: no answer
        ("", ""),
    ],
)
def test_extract_answer(completion, answer):
    assert extract_answer(completion) == answer


def test_normalisation_and_exact_match():
    assert normalize_text("  The  Eiffel-Tower! ") == "eiffel tower"
    assert exact_match("the eiffel tower.", "Eiffel Tower")
    assert not exact_match("eiffel", "Eiffel Tower")
    assert not exact_match("", "")


def test_phrase_match_needs_a_short_answer_and_whole_words():
    assert phrase_match("It is a red car.", "red car")
    assert not phrase_match("scarlet", "car")
    assert not phrase_match("carpet", "car")
    long = "maybe a red car or a blue bus or a green truck or a cat"
    assert not phrase_match(long, "red car")  # 13 normalised words > 10


@pytest.mark.parametrize(
    "text, value",
    [
        ("42", 42.0),
        ("There are three cats.", 3.0),
        ("1,000 people", 1000.0),
        ("-2.5", -2.5),
        ("3/4", 0.75),
        ("50%", 0.5),
        ("from 2 to 7 so 5", 5.0),
        ("no digits", None),
        ("Ten", 10.0),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == (pytest.approx(value) if value is not None else None)


def test_numbers_match_with_tolerance():
    assert numbers_match("3.00001", "3")
    assert not numbers_match("3.1", "3")
    assert numbers_match("five", "5")
    assert numbers_match("50", "50%") and numbers_match("50%", "0.5")


@pytest.mark.parametrize(
    "text, value",
    [
        ("Yes, there is.", "yes"),
        ("NO.", "no"),
        ("I think not... no, yes", "no"),
        ("nothing", None),
        ("Eyes open", None),
    ],
)
def test_parse_yes_no_takes_first_yes_no_word(text, value):
    assert parse_yes_no(text) == value


@pytest.mark.parametrize(
    "text, letter",
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("C) a cat", "C"),
        ("D: dogs", "D"),
        ("The answer is B", "B"),
        ("answer: (E)", "E"),
        ("**A**", "A"),
        ("I pick (C) here", "C"),
        ("A dog is running", None),
        ("the answer is a cat", None),
        ("F", None),
    ],
)
def test_parse_choice(text, letter):
    assert parse_choice(text) == letter


def test_qtype_inference_and_aliases():
    assert [infer_qtype(a) for a in ["Yes", "no.", "12", "three", "B", "(c)", "red car"]] == [
        "yesno",
        "yesno",
        "number",
        "number",
        "choice",
        "text",
        "text",
    ]
    assert canonical_qtype("multiple_choice", "whatever") == "choice"
    assert canonical_qtype("unknown-kind", "7") == "number"  # unknown qtype: inferred from the answer


def test_verify_dispatch():
    assert verify("Yes.", "yes") and not verify("No", "yes")
    assert verify("The total is 12.", "12") and not verify("13", "12")
    assert verify("(B) a cat", "B") and not verify("C", "B")
    assert verify("a red car", "red car") and not verify("blue car", "red car")
    assert verify("no", "Eiffel Tower") is False
    assert verify("2", "two", qtype="number")


def test_rule_accuracy_reward_uses_answer_after_think():
    reward = RuleAccuracy()
    out = reward(
        None,
        ["<think>maybe 3</think>\n\n4", "<think>is it 4?</think>\n\n3", "x"],
        answer=["4", "4", None],
        qtype=[None, "number", None],
        unknown_column=[1, 2, 3],
    )
    assert out == [1.0, 0.0, None]
    conversational = [[{"role": "assistant", "content": "<think>t</think>yes"}]]
    assert reward(None, conversational, answer=["Yes"]) == [1.0]


# ---- format ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ok",
    [
        ("<think>r</think>\n\nanswer", True),
        ("\n <think>r</think>a", True),
        ("<think> </think>answer", False),  # blank reasoning
        ("<think>r</think>  ", False),  # blank answer
        ("text <think>r</think>a", False),  # not at the start
        ("<think>r</think>a</think>b", False),
        ("<think><think>r</think>a", False),
        ("r</think>a", False),
    ],
)
def test_deep_format(text, ok):
    assert deep_format_ok(text) is ok


@pytest.mark.parametrize(
    "text, ok",
    [
        ("answer", True),
        ("<think>\n\n</think>\n\nanswer", True),  # echoed empty prefill is fine
        ("<think>r</think>answer", False),
        ("</think>answer", False),
        ("answer <think>", False),
        ("   ", False),
    ],
)
def test_fast_format(text, ok):
    assert fast_format_ok(text) is ok


def test_format_reward_reads_mode_column_and_defaults_to_deep():
    reward = FormatReward()
    texts = ["<think>r</think>a", "<think>r</think>a", "a"]
    assert reward(None, texts, mode=["deep", "fast", "fast"]) == [1.0, 0.0, 1.0]
    assert reward(None, texts) == [1.0, 1.0, 0.0]


# ---- repetition --------------------------------------------------------------------------------


def test_repetition_threshold_is_ten_windows_of_ten_words():
    phrase = " ".join(f"w{i}" for i in range(10))
    assert max_window_count(" ".join([phrase] * 10)) == 10
    assert has_repetition(" ".join([phrase] * 10))
    assert not has_repetition(" ".join([phrase] * 9) + " " + " ".join(f"w{i}" for i in range(9)))
    assert has_repetition("same " * 19) and not has_repetition("same " * 18)  # 19 words → 10 windows
    assert max_window_count("too short") == 0
    reward = RepetitionPenalty()
    assert reward(None, [" ".join([phrase] * 10), "a normal answer"]) == [-1.0, 0.0]


# ---- malformed completions ---------------------------------------------------------------------

PHRASE = "the cat sat on the mat and looked at the dog "  # 11 words
HUGE = PHRASE * 24_000  # ~1 MB
MALFORMED = {
    # name: (completion, deep format, fast format, repetition, rule accuracy vs "cat")
    "empty": ("", 0.0, 0.0, 0.0, 0.0),
    "unclosed think": ("<think>the cat", 0.0, 0.0, 0.0, 0.0),
    "nested think": ("<think><think>x</think></think>cat", 0.0, 0.0, 0.0, 1.0),
    "close without open": ("</think>cat", 0.0, 0.0, 0.0, 1.0),
    "huge repeated": (HUGE, 0.0, 1.0, -1.0, 0.0),
    "huge repeated in think": ("<think>" + HUGE + "</think>\n\ncat", 1.0, 0.0, -1.0, 1.0),
    "only tags": ("<think></think>", 0.0, 0.0, 0.0, 0.0),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_completions_get_defined_rewards(name):
    text, deep, fast, rep, acc = MALFORMED[name]
    start = time.perf_counter()
    assert FormatReward()(None, [text, text], mode=["deep", "fast"]) == [deep, fast]
    assert RepetitionPenalty()(None, [text]) == [rep]
    assert RuleAccuracy()(None, [text], answer=["cat"]) == [acc]
    assert time.perf_counter() - start < 20.0  # linear-time: ~1 MB takes well under a second


def test_huge_text_is_about_a_megabyte():
    assert 1_000_000 <= len(HUGE) <= 1_200_000


def test_rule_accuracy_accepts_any_of_several_references():
    reward = RuleAccuracy()
    assert reward(None, ["a kitten", "a dog"], answer=[["cat", "kitten"], ["cat", "kitten"]]) == [1.0, 0.0]
