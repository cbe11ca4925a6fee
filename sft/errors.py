"""User-facing errors: one clear line, no traceback.

Anything a user can fix (a bad config value, a missing file, a malformed data row) raises
`UserError` with a message that says what is wrong and what to do. Entry points catch it,
print the single line and exit non-zero.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """An error the user can fix; its message is printed as one line without a traceback."""

    exit_code = 2


def exit_on_user_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a console entry point so a `UserError` prints `error: ...` and exits non-zero."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(e.exit_code)

    return wrapper
