"""Work-arounds for transformers behaviour that misleads users of this project, each explained.

`quiet_default_config_warning()`: transformers 5.x logs every loaded config through
`PreTrainedConfig.__repr__`, which builds the class's *default* instance to diff against
(`to_diff_dict`). For Idefics3 that default pairs `pad_token_id=128002` with the default Llama text
config's 32,000-token vocabulary, and its validator warns "pad_token_id must be `None` or an
integer within the vocabulary (between 0 and 31999), got 128002" on every load of any Idefics3
model. The warning is about that throwaway default object, not the loaded model (the tiny
factory's ids all lie inside its vocabulary; `tests/test_policies.py` checks it with the warning
escalated to an error). The filter drops exactly that record: the same message about any other
id, vocabulary or config still shows.
"""

from __future__ import annotations

import logging

_DEFAULT_IDEFICS3 = ("pad_token_id must be `None` or an integer within the vocabulary (between 0 and 31999), "
                     "got 128002")


class _DefaultConfigFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _DEFAULT_IDEFICS3 not in record.getMessage()


_FILTER = _DefaultConfigFilter()


def quiet_default_config_warning() -> None:
    """Install the filter on transformers' configuration logger (idempotent)."""
    logger = logging.getLogger("transformers.configuration_utils")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
