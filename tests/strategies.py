"""Hypothesis strategies the property tests share."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def any_json(max_int: int, max_text: int, max_key: int, max_leaves: int) -> st.SearchStrategy[Any]:
    """Any JSON value (no NaN or infinities), nested a few levels, within the given sizes."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-max_int, max_value=max_int)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=max_text)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=max_key), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )
