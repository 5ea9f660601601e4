"""Prompt templates of the RLAIF-V model claim splitter (package data, read with importlib.resources).

`split_claims.txt` takes `{response}`; `to_question.txt` takes `{claim}`. Placeholders are
replaced literally (no `str.format`), so braces in a response are safe.
"""
