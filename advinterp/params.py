"""Declared component parameters, validated in one place with one message format.

A component lists its parameters as a class attribute::

    class PGD(Attack):
        params = {
            "eps": Param.number(8 / 255, low=0, doc="l_inf bound, pixel units"),
            "max_iter": Param.integer(10, low=1),
            "norm": Param.choice("inf", ("inf",)),
        }

``Component.__init__(**kwargs)`` stores them as attributes (scikit-learn style) and
:func:`validate` checks every value; a bad one raises
:class:`advinterp.exceptions.ParameterError` ("``PGD: eps=-1 is invalid; expected a number
>= 0.``").
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .exceptions import ParameterError

__all__ = ["Param", "validate"]


@dataclass(frozen=True)
class Param:
    """One parameter: its default, a predicate, the expectation text and a doc line.

    ``invalid`` holds example values the predicate rejects (the conformance suite uses
    them to check that bad values raise clear errors).
    """

    default: Any
    check: Callable[[Any], bool] | None = None
    expected: str = "any value"
    doc: str = ""
    invalid: tuple = field(default_factory=tuple)

    def validate(self, owner: str, name: str, value: Any) -> Any:
        if self.check is not None:
            ok = False
            try:
                ok = bool(self.check(value))
            except Exception:  # a predicate that cannot even evaluate means invalid
                ok = False
            if not ok:
                raise ParameterError(owner, name, value, self.expected)
        return value

    # ---- constructors for the common kinds --------------------------------------------
    @staticmethod
    def number(default: float | None, low: float | None = None, high: float | None = None,
               low_open: bool = False, allow_none: bool = False, doc: str = "") -> "Param":
        """A finite real number in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
        def check(v):
            if v is None:
                return allow_none
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                return False
            if low is not None and (v <= low if low_open else v < low):
                return False
            return high is None or v <= high
        exp = _range_text("a finite number", low, high, allow_none, low_open)
        return Param(default, check, exp, doc, _invalid_examples(low, float("nan")))

    @staticmethod
    def integer(default: int | None, low: int | None = None, high: int | None = None,
                allow_none: bool = False, doc: str = "") -> "Param":
        """An integer (not a bool) in ``[low, high]``."""
        def check(v):
            if v is None:
                return allow_none
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                return False
            return (low is None or v >= low) and (high is None or v <= high)
        exp = _range_text("an integer", low, high, allow_none)
        return Param(default, check, exp, doc, _invalid_examples(low, 1.5))

    @staticmethod
    def boolean(default: bool, doc: str = "") -> "Param":
        return Param(default, lambda v: isinstance(v, bool), "True or False", doc, ("yes", 2))

    @staticmethod
    def choice(default: Any, options: Sequence[Any], doc: str = "") -> "Param":
        opts = tuple(options)
        return Param(default, lambda v: v in opts, f"one of {', '.join(repr(o) for o in opts)}", doc,
                     ("__not_an_option__",))

    @staticmethod
    def any(default: Any, doc: str = "") -> "Param":
        return Param(default, None, "any value", doc)


def _range_text(what: str, low, high, allow_none: bool, low_open: bool = False) -> str:
    text = what
    if low is not None:
        text += f" {'>' if low_open else '>='} {low}"
    if high is not None:
        text += f"{' and' if low is not None else ''} <= {high}"
    return text + (" or None" if allow_none else "")


def _invalid_examples(low, wrong_kind) -> tuple:
    return ((low - 1,) if low is not None else ()) + (wrong_kind, "x")


def validate(owner: str, specs: Mapping[str, Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``values`` against ``specs``; return the full parameter dict with defaults.

    Unknown names raise a :class:`ParameterError` listing the accepted ones.
    """
    unknown = sorted(set(values) - set(specs))
    if unknown:
        import difflib

        name = unknown[0]
        close = difflib.get_close_matches(name, list(specs), n=3)
        hint = f"Did you mean {', '.join(close)}? " if close else ""
        raise ParameterError(owner, name, values[name], "no such parameter",
                             f"{hint}Accepted parameters: {', '.join(sorted(specs)) or '(none)'}.")
    out = {}
    for name, spec in specs.items():
        out[name] = spec.validate(owner, name, values.get(name, spec.default))
    return out
