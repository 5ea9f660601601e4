"""The reward contract: every registered reward on a mixed batch, the registry, the config.

TRL calls `fn(prompts=..., completions=..., completion_ids=..., trainer_state=..., <columns>)`;
every reward must return one float-or-None per completion and ignore columns it does not use.
"""

from __future__ import annotations

import pickle

import pytest
from PIL import Image

from rewards.accuracy import DEFAULT_ROUTING, resolve_routing
from rewards.breakdown import RewardSuite, flatten_summary, summarise_by_mode
from rewards.config import RewardConfig
from rewards.format import FormatReward
from rewards.registry import REGISTRY, UnknownRewardError, check_reward_name, resolve_reward
from rewards.verifiers import rule_accuracy
from rl.configlib import ConfigError, from_dict
from tests.test_rewards_rlpr import PREFILL_IDS, PROMPT, TOK, FakePositionScorer

IMAGE = Image.new("RGB", (4, 4), "green")
COMPLETIONS = [
    "<think>count them</think>\n\n3",  # short, deep
    "yes",  # short, fast
    "<think>look at the image</think>\n\nA green square.",  # freeform, deep
    "A green square.",  # freeform, fast
    "<think>describe</think>\n\nA small green image.",  # description, deep
    "<think>unclosed",  # description, fast (malformed)
    "",  # short, deep, no reference
    [{"role": "assistant", "content": "<think>t</think>B"}],  # conversational form
]
N = len(COMPLETIONS)
MODES = ["deep", "fast", "deep", "fast", "deep", "fast", "deep", "deep"]
COLUMNS = dict(
    answer=["3", "yes", "a green square", "a green square", "a green image", "a green image", None, "B"],
    task=["short", "short", "freeform", "freeform", "description", "description", "short", None],
    mode=MODES,
    prompt_ids=[PROMPT + (PREFILL_IDS if m == "fast" else []) for m in MODES],
    images=[[IMAGE]] * N,
    qtype=[None] * N,
    completion_ids=[[1, 2, 3]] * N,  # TRL passes these; rewards must ignore them
    trainer_state=object(),
    log_extra=None,
    some_dataset_column=list(range(N)),
)

# Params that make each registered reward usable on the batch (RLPR needs a tokenizer + scorer).
NEEDS = {"accuracy": {"tokenizer": TOK}, "rlpr": {"tokenizer": TOK}}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_reward_honours_the_contract(name):
    fn = resolve_reward(name, **NEEDS.get(name, {}))
    if hasattr(fn, "set_scorer"):
        fn.set_scorer(FakePositionScorer())
    out = fn(prompts=[None] * N, completions=COMPLETIONS, **COLUMNS)
    assert isinstance(out, list) and len(out) == N
    assert all(v is None or type(v) is float for v in out), out
    assert all(v is None or -1.0 <= v <= 1.0 for v in out)
    clone = pickle.loads(pickle.dumps(fn))  # parametrised rewards are picklable
    assert type(clone) is type(fn)


def test_contract_values_on_the_mixed_batch():
    acc = resolve_reward("accuracy", tokenizer=TOK, routing={"freeform.fast": "rlpr_nodebias"})
    acc.set_scorer(FakePositionScorer())
    out = acc(None, COMPLETIONS, **COLUMNS)
    assert out[0] == 1.0 and out[1] == 1.0 and out[7] == 1.0  # rule routes
    assert out[6] is None  # no reference
    # fast mode: o' = prompt ‖ y*, the completion text is not used, so even an unclosed think
    # block gets r (no debias); its format reward is what penalises it
    assert acc.last_breakdown[5].route == "rlpr_nodebias" and acc.last_breakdown[5].rlpr.valid
    assert out[5] == pytest.approx(acc.last_breakdown[5].rlpr.r) and out[5] > 0
    assert acc.last_breakdown[2].route == "rlpr" and acc.last_breakdown[2].rlpr.r_prime is not None
    assert resolve_reward("format")(None, COMPLETIONS, **COLUMNS) == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0]


def test_suite_breakdown_and_per_mode_summary():
    suite = RewardSuite(tokenizer=TOK, scorer=FakePositionScorer())
    rows = suite.compute([None] * N, COMPLETIONS, **COLUMNS)
    assert len(rows) == N and suite.names == ["accuracy", "format", "repetition"]
    assert suite.weights == [0.9, 0.1, 1.0]
    assert rows[0].total == pytest.approx(0.9 * 1.0 + 0.1 * 1.0 + 0.0)
    assert rows[6].components["accuracy"] is None and rows[6].total == 0.0
    assert rows[2].rlpr_r is not None and rows[0].rlpr_r is None
    summary = summarise_by_mode(rows)
    assert set(summary) == {"deep", "fast"}
    assert summary["deep"]["count"] == 5 and summary["fast"]["count"] == 3
    assert summary["fast"]["format"] == pytest.approx(2 / 3)
    assert "rewards/deep/accuracy" in flatten_summary(summary)
    assert suite(None, COMPLETIONS, **COLUMNS) == [b.total for b in rows]


def test_dotted_path_resolution():
    assert resolve_reward("rewards.verifiers:rule_accuracy") is rule_accuracy
    assert resolve_reward("rewards.verifiers.rule_accuracy") is rule_accuracy
    assert isinstance(resolve_reward("rewards.format:FormatReward"), FormatReward)
    fn = resolve_reward("rewards.format.RepetitionPenalty", threshold=3)
    phrase = " ".join(f"w{i}" for i in range(10)) + " "
    assert fn(None, [phrase * 2, phrase * 3]) == [0.0, -1.0] and fn.threshold == 3
    with pytest.raises(TypeError, match="callable class"):
        resolve_reward("rewards.verifiers:rule_accuracy", rel_tol=0.1)


def test_unknown_name_errors_by_name_and_lists_registered():
    with pytest.raises(UnknownRewardError) as err:
        resolve_reward("acuracy")
    assert "'acuracy'" in str(err.value)
    for name in REGISTRY:
        assert name in str(err.value)
    with pytest.raises(UnknownRewardError, match="no_such_module"):
        check_reward_name("no_such_module.fn")


def test_config_validation_names_the_key():
    cfg = from_dict(
        RewardConfig, {"rewards": [{"name": "format", "weight": 0.5}], "routing": {"freeform.fast": "rlpr"}}
    )
    assert cfg.rewards[0].weight == 0.5
    with pytest.raises(ConfigError, match=r"rewards\[1\]\.name"):
        from_dict(RewardConfig, {"rewards": [{"name": "format"}, {"name": "nope"}]})
    with pytest.raises(ConfigError, match=r"routing\.freeform\.slow"):
        from_dict(RewardConfig, {"routing": {"freeform.slow": "rlpr"}})
    with pytest.raises(ConfigError, match=r"routing\.short\.deep"):
        from_dict(RewardConfig, {"routing": {"short.deep": "llm_judge"}})
    with pytest.raises(ConfigError, match=r"rlpr\.debias"):
        from_dict(RewardConfig, {"rlpr": {"debias": "sometimes"}})
    with pytest.raises(ConfigError, match=r"std_filter\.beta"):
        from_dict(RewardConfig, {"std_filter": {"beta": -1.0}})


def test_routing_defaults_and_overrides():
    # fast free-form: RLPR's o' = prompt + reference ignores the completion, so a group gets no
    # signal from it; the rule verifier is the default there
    assert DEFAULT_ROUTING["freeform.fast"] == "rule" and DEFAULT_ROUTING["short.deep"] == "rule"
    assert DEFAULT_ROUTING["freeform.deep"] == "rlpr"
    table = resolve_routing({"freeform.fast": "rlpr", "description": "rule", "description.deep": "rlpr"})
    assert table["freeform.fast"] == "rlpr" and table["freeform.deep"] == "rlpr"
    assert table["description.fast"] == "rule" and table["description.deep"] == "rlpr"
    with pytest.raises(ValueError, match="unknown task"):
        resolve_reward("accuracy")(None, ["x"], answer=["x"], task=["poetry"])
