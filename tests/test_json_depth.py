"""The request's JSON depth limit is exact: brackets inside strings, escaped quotes and backslashes never fool it."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.errors import JsonTooDeep
from cds_service.validation import _check_depth

_TRICKY_TEXT = st.text(alphabet='ab[]{}"\\\n', max_size=6)
_JSON = st.recursive(st.none() | st.integers() | _TRICKY_TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY_TEXT, inner, max_size=3),
                     max_leaves=30)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(_JSON, st.integers(min_value=0, max_value=6))
def test_the_depth_check_agrees_with_the_real_nesting(value, limit):
    text = json.dumps(value, ensure_ascii=False).encode()
    if _depth(value) > limit:
        try:
            _check_depth(text, limit)
        except JsonTooDeep:
            return
        raise AssertionError(f"depth {_depth(value)} passed a limit of {limit}: {text!r}")
    _check_depth(text, limit)  # raises if it refuses a document within the limit


@settings(max_examples=50, deadline=None)
@given(_JSON, st.integers(min_value=0, max_value=6), st.integers(min_value=250, max_value=400))
def test_the_depth_check_agrees_with_the_real_nesting_when_escapes_are_many(value, limit, escapes):
    # Past 256 escapes the check drops them with one regex pass instead of one step each: both ways must agree.
    text = json.dumps([value, '"[\\{' * escapes], ensure_ascii=False).encode()
    if 1 + _depth(value) > limit:
        try:
            _check_depth(text, limit)
        except JsonTooDeep:
            return
        raise AssertionError(f"depth {1 + _depth(value)} passed a limit of {limit}: {text!r}")
    _check_depth(text, limit)
