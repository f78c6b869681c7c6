"""How large a template may make a value: `{{ 'x' * 100000000 }}` must not render 100 MB.

The sandbox (`templates._Sandbox`) checks the operations that grow a value by a factor the
template chooses before they run, `*` and `**`, the padding and replacing string methods and
filters, and every result of an operator, method or filter after it; a rendered value is
checked at the end. One bound, `MAX_RENDERED_CHARS`, for all of them: a value larger than it is
an error naming the limit, not an allocation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sized
from typing import Any, Final

from jinja2.exceptions import SecurityError

#: The largest string, list or dict (in items) a template may produce.
MAX_RENDERED_CHARS: Final = 1_000_000
#: Exponents beyond this make numbers no run needs (and CPU-seconds to compute).
MAX_POWER_BITS: Final = 4096


def _too_large(size: int) -> SecurityError:
    return SecurityError(f"the value would have {size:,} characters or items, more than the "
                         f"{MAX_RENDERED_CHARS:,} a template may produce")


def check_size(value: Any) -> Any:
    if isinstance(value, Sized) and not isinstance(value, bytes | bytearray | memoryview) \
            and len(value) > MAX_RENDERED_CHARS:
        raise _too_large(len(value))
    if isinstance(value, bytes | bytearray) and len(value) > MAX_RENDERED_CHARS:
        raise _too_large(len(value))
    return value


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Before `left <operator> right` runs."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int) and \
                    len(seq) * max(times, 0) > MAX_RENDERED_CHARS:
                raise _too_large(len(seq) * times)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 \
            and abs(left) > 1 and abs(left).bit_length() * right > MAX_POWER_BITS:
        raise SecurityError(f"{left} ** {right} has more than {MAX_POWER_BITS} bits")


def _replace_size(text: str, old: str, new: str, count: int = -1) -> int:
    hits = text.count(old) if old else len(text) + 1
    if count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def check_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Before a string method a template calls (`'x'.ljust(10 ** 9)`)."""
    owner, name = getattr(func, "__self__", None), getattr(func, "__name__", "")
    if not isinstance(owner, str):
        return
    if name in ("ljust", "rjust", "center", "zfill") and args and isinstance(args[0], int) \
            and args[0] > MAX_RENDERED_CHARS:
        raise _too_large(args[0])
    if name == "expandtabs":
        size = (args[0] if args else kwargs.get("tabsize", 8)) * owner.count("\t") + len(owner)
        if size > MAX_RENDERED_CHARS:
            raise _too_large(size)
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and \
            isinstance(args[1], str):
        size = _replace_size(owner, args[0], args[1], *(a for a in args[2:3] if isinstance(a, int)))
        if size > MAX_RENDERED_CHARS:
            raise _too_large(size)


def bounded_filter(name: str, filter_: Callable[..., Any]) -> Callable[..., Any]:
    """`filter_` with its result checked, and the growing ones' arguments checked first."""

    @functools.wraps(filter_)  # keeps Jinja's pass_context / pass_eval_ctx marks
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = [a for a in args if not hasattr(a, "environment")]  # skip a passed context
        if name == "replace" and len(values) >= 3 and all(isinstance(v, str) for v in values[:3]):
            size = _replace_size(*values[:3])
            if size > MAX_RENDERED_CHARS:
                raise _too_large(size)
        if name in ("center", "indent", "wordwrap") and len(values) >= 2 and \
                isinstance(values[1], int) and values[1] > MAX_RENDERED_CHARS:
            raise _too_large(values[1])
        return check_size(filter_(*args, **kwargs))

    return wrapper


__all__ = ["MAX_POWER_BITS", "MAX_RENDERED_CHARS", "bounded_filter", "check_binop",
           "check_call", "check_size"]
