"""The reward registry: one explicit name → factory dict, plus a dotted-path escape hatch.

`resolve_reward("format")` builds a registered reward; `resolve_reward("my_pkg.my_mod:fn")` (or
`"my_pkg.my_mod.fn"`) imports any TRL-style reward function or callable class. Classes are
instantiated with the given params; plain functions take no params.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from rewards.accuracy import AccuracyReward
from rewards.format import FormatReward, RepetitionPenalty
from rewards.rlpr import RLPRReward
from rewards.verifiers import RuleAccuracy

RewardFn = Callable[..., list]  # fn(prompts, completions, **columns) -> list[float | None]

REGISTRY: dict[str, Callable[..., RewardFn]] = {
    "accuracy": AccuracyReward,  # routed per (task, mode): rule / rlpr / rlpr_nodebias
    "rule_accuracy": RuleAccuracy,  # rule verifiers only
    "rlpr": RLPRReward,  # RLPR probability reward on every row
    "format": FormatReward,  # mode-aware think-block format
    "repetition": RepetitionPenalty,  # -1 on a 10-word window repeated >= 10 times
}


class UnknownRewardError(ValueError):
    """A reward name is neither registered nor an importable dotted path."""


def registered_names() -> list[str]:
    return sorted(REGISTRY)


def _unknown(name: str, why: str = "") -> UnknownRewardError:
    return UnknownRewardError(
        f"unknown reward {name!r}{why}; registered rewards: {', '.join(registered_names())}; "
        "or give a dotted path such as 'my_pkg.my_mod:my_reward'"
    )


def import_object(path: str) -> Any:
    """Import `"pkg.mod:attr.sub"` or `"pkg.mod.attr"` (the longest importable module prefix)."""
    if ":" in path:
        module_name, _, attr_path = path.partition(":")
        candidates = [(module_name, attr_path)]
    else:
        parts = path.split(".")
        candidates = [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
    last_error: Exception | None = None
    for module_name, attr_path in candidates:
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as exc:
            last_error = exc
            continue
        try:
            for attr in attr_path.split("."):
                obj = getattr(obj, attr)
        except AttributeError as exc:
            last_error = exc
            continue
        return obj
    raise _unknown(path, f" (cannot import it: {last_error})")


def check_reward_name(name: str) -> None:
    """Raise UnknownRewardError unless `name` is registered or imports to a callable."""
    if name in REGISTRY:
        return
    if "." not in name and ":" not in name:
        raise _unknown(name)
    if not callable(import_object(name)):
        raise _unknown(name, " (it imports but is not callable)")


def resolve_reward(name: str, **params: Any) -> RewardFn:
    """Build the reward `name` with `params` (registered name or dotted path)."""
    if name in REGISTRY:
        return REGISTRY[name](**params)
    if "." not in name and ":" not in name:
        raise _unknown(name)
    obj = import_object(name)
    if isinstance(obj, type):
        return obj(**params)
    if not callable(obj):
        raise _unknown(name, " (it imports but is not callable)")
    if params:
        raise TypeError(f"reward {name!r} is a function; params {sorted(params)} need a callable class")
    return obj
