"""Claim splitters of RLAIF-V: the deterministic Shapes parser and the model splitter's parsing."""

from __future__ import annotations

from rewards.rlaifv.claims import Claim, ClaimSplitter, ShapesClaimSplitter, parse_shapes_claims
from rewards.rlaifv.model_splitter import (
    ModelClaimSplitter,
    load_template,
    parse_claim_lines,
    parse_question,
)
from rollouts.types import Completion, Rollout


def _texts(claims: list[Claim]) -> list[str]:
    return [c.text for c in claims]


# ----------------------------------------------------------------------------- Shapes splitter


def test_description_with_synonyms_becomes_object_and_position_claims():
    claims = ShapesClaimSplitter().split("There is a red circle at the top left and a blue box.", "p7", 3)
    assert _texts(claims) == [
        "there is a red circle",
        "the red circle is at the top left",
        "there is a blue square",
    ]
    assert [c.question for c in claims] == [
        "Is there a red circle?",
        "Is the red circle at the top left?",
        "Is there a blue square?",
    ]
    assert [c.kind for c in claims] == ["object", "attribute", "object"]
    assert all(c.prompt_id == "p7" and c.response_index == 3 for c in claims)
    pos = claims[1]
    assert (pos.colour, pos.shape, pos.attribute, pos.position) == ("red", "circle", "position", "top left")


def test_relation_and_count_claims():
    claims = parse_shapes_claims("The circle is to the left of the square. There are three shapes.")
    rel = [c for c in claims if c.kind == "relation"]
    assert len(rel) == 1
    assert rel[0].text == "the circle is to the left of the square"
    assert rel[0].question == "Is the circle to the left of the square?"
    assert (rel[0].shape, rel[0].relation, rel[0].other_shape) == ("circle", "left", "square")
    count = [c for c in claims if c.kind == "count"]
    assert [(c.count, c.shape, c.question) for c in count] == [(3, None, "Are there three shapes?")]


def test_compound_relation_gives_two_claims_and_think_block_is_ignored():
    text = "<think>I see a green triangle.</think>\n\nThe red circle is above and to the left of the violet disc."
    claims = parse_shapes_claims(text)
    assert "there is a green triangle" not in _texts(claims)
    assert [(c.relation, c.other_colour, c.other_shape) for c in claims if c.kind == "relation"] == [
        ("above", "purple", "circle"),
        ("left", "purple", "circle"),
    ]


def test_negation_sizes_plurals_and_pronouns():
    claims = parse_shapes_claims(
        "There is no green triangle. There is only one circle, and it is red. "
        "A large yellow square sits at the bottom right. There are two triangles."
    )
    by_text = {c.text: c for c in claims}
    neg = by_text["there is no green triangle"]
    assert neg.negated and neg.question == "Is it true that there is no green triangle?"
    assert by_text["there is one circle"].count == 1
    assert by_text["the circle is red"].attribute == "colour"
    assert by_text["the yellow square is large"].size == "large"
    assert by_text["the yellow square is at the bottom right"].position == "bottom right"
    assert by_text["there are two triangles"].count == 2


def test_repeated_mentions_give_one_claim():
    claims = parse_shapes_claims("There is a red circle. The red circle is red. A circle. The red ball.")
    assert _texts(claims).count("there is a red circle") == 1
    assert "there is a circle" not in _texts(claims)  # a bare circle adds nothing after the red circle


def test_unparseable_text_gives_no_claims_and_never_raises():
    splitter = ShapesClaimSplitter()
    for text in ["", "hello world", "It looks nice!", "<think>a red circle", "123 ... ???", "\x00\n\n"]:
        assert splitter.split(text, "p", 0) == []
    assert splitter.failures == 0
    assert isinstance(splitter, ClaimSplitter)


# ----------------------------------------------------------------------------- model splitter parsing


def test_parse_claim_lines_is_robust_and_counts_drops():
    output = (
        "Here are the claims:\n"
        "1. There is a red circle.\n"
        "2) The red circle is at the top left.\n"
        "- There is a blue square.\n"
        "* **There is a blue square.**\n"  # repeat, kept once
        "Note that nothing else is visible\n"  # unmarked beside a list: dropped
        "3. ok\n"  # one word: dropped
    )
    claims, dropped = parse_claim_lines(output)
    assert claims == [
        "There is a red circle.",
        "The red circle is at the top left.",
        "There is a blue square.",
    ]
    assert dropped == 3
    assert parse_claim_lines("None") == ([], 0)
    assert parse_claim_lines("") == ([], 0)
    # no markers at all: every line is a claim, a preamble ending in ":" is not
    assert parse_claim_lines("Claims:\nThe circle is red.\nThe square is blue.") == (
        ["The circle is red.", "The square is blue."],
        1,
    )


def test_parse_question_checks_form_and_negation():
    assert (
        parse_question("Question: Is there a red circle?", "There is a red circle.")
        == "Is there a red circle?"
    )
    assert (
        parse_question("is the circle red? Answer yes or no.", "The circle is red.") == "Is the circle red?"
    )
    assert parse_question("There is a red circle.", "There is a red circle.") is None  # not a question
    assert parse_question("What colour is the circle?", "The circle is red.") is None  # not yes/no
    assert (
        parse_question("Is there a green triangle?", "There is no green triangle.") is None
    )  # negation lost
    assert (
        parse_question("Is it true that there is no green triangle?", "There is no green triangle.")
        == "Is it true that there is no green triangle?"
    )


class FakeGenerator:
    """Answers the splitter's two prompts from tables keyed by the filled-in text."""

    def __init__(self, lists: dict[str, str | None], questions: dict[str, str]):
        self.lists = lists
        self.questions = questions
        self.calls: list[list] = []

    def generate(self, requests):
        self.calls.append(requests)
        out = []
        for req in requests:
            prompt = req.messages[0]["content"]
            if req.request_id.startswith("split-"):
                key = prompt.split("Description: ", 1)[1].split("\nClaims:", 1)[0]
                text = self.lists[key]
            else:
                key = prompt.split("Statement: ", 1)[1].split("\nQuestion:", 1)[0]
                text = self.questions.get(key, "")
            if text is None:
                out.append(
                    Rollout(req.request_id, req.mode, prompt, [1], [], version=0, error="engine failed")
                )
            else:
                out.append(
                    Rollout(req.request_id, req.mode, prompt, [1], [Completion(text, [2], [0.0], "stop")], 0)
                )
        return out


def test_model_splitter_end_to_end_with_fake_generator():
    gen = FakeGenerator(
        lists={
            "A red circle {and} a blue box.": "1. There is a red circle.\n2. There is a blue square.\n3. There is no green triangle.",
            "broken": None,
            "It is pretty.": "None",
        },
        questions={
            "There is a red circle.": "Is there a red circle?",
            "There is a blue square.": "Yes.",  # not a question: dropped
            "There is no green triangle.": "Is there a green triangle?",  # negation lost: dropped
        },
    )
    splitter = ModelClaimSplitter(gen, seed=5)
    out = splitter.split_many(
        [
            ("<think>hmm</think>A red circle {and} a blue box.", "p1", 0),
            ("broken", "p1", 1),
            ("It is pretty.", "p2", 0),
            ("<think>never finished", "p3", 0),  # nothing after stripping: no request at all
        ]
    )
    assert [[c.question for c in cs] for cs in out] == [["Is there a red circle?"], [], [], []]
    claim = out[0][0]
    assert (claim.text, claim.prompt_id, claim.response_index, claim.kind) == (
        "There is a red circle.",
        "p1",
        0,
        "other",
    )
    assert len(gen.calls) == 2  # one batched call per stage
    split_reqs = gen.calls[0]
    assert len(split_reqs) == 3
    assert all(r.mode == "fast" and r.sampling.temperature == 0.2 and r.images == [] for r in split_reqs)
    assert "A red circle {and} a blue box." in split_reqs[0].messages[0]["content"]  # braces kept literally
    s = splitter.stats
    assert (s.responses, s.claims, s.dropped_questions, s.errors, s.dropped_lines) == (3, 1, 2, 1, 0)


def test_templates_are_package_data_with_placeholders():
    assert "{response}" in load_template("split_claims.txt")
    assert "{claim}" in load_template("to_question.txt")
