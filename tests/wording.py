"""What a user reads for an error: tests assert on the sentence `flows.errors` gives it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from flows.errors import user_message


def said(error: BaseException) -> str:
    """The one sentence a user reads for `error`."""
    return user_message(error)


@contextmanager
def refused(kind: type[BaseException], match: str | None = None) -> Iterator:
    """`pytest.raises(kind)`, with `match` searched in the sentence a user reads."""
    with pytest.raises(kind) as info:
        yield info
    if match is not None:
        text = said(info.value)
        assert re.search(match, text), f"{match!r} not in {text!r}"
