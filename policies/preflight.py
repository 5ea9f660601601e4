"""Can this model be loaded here? One check, run in `rl.train`'s preflight before any actor starts.

`check_loadable(name_or_path, field, trust_remote_code)` looks at a local folder or, for a hub
name, at the Hugging Face cache and then (unless offline mode is on) at the hub itself with one
short request, and at the model's `config.json` for remote code. It raises `PolicyError` with one
line that names the config field and the model, says where it looked and what to do. It reads
`config.json` only: no weights, no transformers model class.
"""

from __future__ import annotations

import json
from pathlib import Path

from policies.loading import PolicyError, looks_local

HUB_TIMEOUT_S = 10.0


def _fix_hint(name: str) -> str:
    return (f"give a local model folder, or download it where the hub is reachable (`hf download {name}`) and "
            "run with HF_HUB_OFFLINE=1")


def _hub_config(name: str, field: str) -> Path | None:
    """The cached `config.json` of hub model `name`, None if the hub has it but it is not cached;
    PolicyError when it is neither cached nor reachable."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        return Path(cached)
    where = f"not a local folder and not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
    if constants.HF_HUB_OFFLINE:
        raise PolicyError(f"{field}: cannot load {name!r}: {where}, and offline mode is on (HF_HUB_OFFLINE=1); "
                          + _fix_hint(name))
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json"), timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        raise PolicyError(f"{field}: {name!r} is gated on the hub: accept its licence on its model page and log "
                          "in (`hf auth login`), or give a local model folder") from None
    except RepositoryNotFoundError:
        raise PolicyError(f"{field}: {name!r} is {where}, and the hub has no such model (a typo, or a private "
                          "repo: log in with `hf auth login`); give a local model folder or a hub name") from None
    except Exception as exc:  # connection errors come from httpx, requests or OSError, by version
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PolicyError(f"{field}: cannot load {name!r}: {where}, and the hub ({constants.ENDPOINT}) cannot be "
                          f"reached ({reason}); " + _fix_hint(name)) from None
    return None


def _check_remote_code(config_path: Path, name: str, field: str, trust_remote_code: bool) -> None:
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PolicyError(f"{field}: {config_path} is not readable JSON ({exc}); the model folder is damaged") from None
    if trust_remote_code or "auto_map" not in config:
        return
    from transformers import CONFIG_MAPPING

    if config.get("model_type") not in CONFIG_MAPPING:
        raise PolicyError(f"{field}: {name!r} ships its own model code (auto_map in config.json, model_type "
                          f"{config.get('model_type')!r} unknown to transformers); set policy.trust_remote_code: "
                          "true if you trust it")


def check_loadable(name_or_path: str, field: str = "policy.name_or_path", trust_remote_code: bool = False) -> None:
    """Raise PolicyError (one line) unless `name_or_path` is a loadable model here."""
    if looks_local(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise PolicyError(f"{field}: model folder {path} does not exist; give an existing Hugging Face model "
                              "folder, a hub name, or leave it empty for the embedded tiny model")
        if not (path / "config.json").exists():
            raise PolicyError(f"{field}: {path} has no config.json; it is not a model folder")
        _check_remote_code(path / "config.json", str(path), field, trust_remote_code)
        return
    cached = _hub_config(name_or_path, field)
    if cached is not None:
        _check_remote_code(cached, name_or_path, field, trust_remote_code)
