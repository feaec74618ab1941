"""What referring expressions name: position, relation, colour, size, and their length.

One documented word-level rule set, applied the same way to RRSIS-D's expressions and to the
embedded benchmark's, so that the two mixes can be set side by side (docs/data.md). An expression
may name several kinds; each share is the fraction of expressions naming that kind at least once.

- position: a place in the image said of the target ("on the lower right", "in the middle",
  "at the top") or a superlative of place ("leftmost", "uppermost", "on the far left");
  a place phrase followed by "of" ("on the left of the bridge") is a relation instead;
- relation: the target placed against another object ("... of the bridge", "above", "below",
  "next to", "beside", "near", "close to", "similar in size to", "driving on", "parked");
- colour: a colour word ("gray", "white", "cyan", ...);
- size: a size or extent word ("tiny", "small", "large", "huge", "long", "slender", "largest").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["KINDS", "expression_kinds", "expression_mix"]

KINDS = ("position", "relation", "colour", "size")

_PLACE = r"(?:(?:upper|lower|top|bottom|middle|far|very) )?(?:left|right|top|bottom|middle|center|centre)"
_POSITION = re.compile(
    rf"\b(?:on|at|in) the {_PLACE}(?: side)?\b(?! of\b)"
    r"|\b(?:leftmost|rightmost|topmost|bottommost|uppermost|lowest|lowermost)\b"
    r"|\bclosest to the (?:left|right|top|bottom)\b(?! of\b)"
)
_RELATION = re.compile(
    rf"\b(?:on|at|in) the {_PLACE}(?: side)? of\b"
    r"|\b(?:above|below|beneath|under|over|next to|beside|besides|near|close to|adjacent to"
    r"|similar in size to|driving on|parked|between|surrounded by|around)\b"
)
_COLOUR = re.compile(
    r"\b(?:white|black|gray|grey|red|blue|green|orange|cyan|yellow|brown|purple|pink|silver"
    r"|dark|light)\b"
)
_SIZE = re.compile(
    r"\b(?:tiny|small|smaller|smallest|little|large|larger|largest|big|bigger|biggest|huge"
    r"|giant|long|longer|longest|slender|short|wide|narrow|thin|tiniest)\b"
)
_PATTERNS = {"position": _POSITION, "relation": _RELATION, "colour": _COLOUR, "size": _SIZE}


def expression_kinds(text: str) -> set[str]:
    """The kinds of :data:`KINDS` that ``text`` names (lower-cased word rules, module docstring)."""
    low = " ".join(text.lower().split())
    return {kind for kind, pattern in _PATTERNS.items() if pattern.search(low)}


def expression_mix(texts: Iterable[str]) -> dict[str, Any]:
    """Shares of expressions naming each kind, the mean word count and the count.

    Returns:
        ``{"count": n, "words_mean": float, "position": share, "relation": ..., "colour": ...,
        "size": ..., "none": share naming no kind}`` with shares in [0, 1].
    """
    counts = dict.fromkeys((*KINDS, "none"), 0)
    words = 0
    n = 0
    for text in texts:
        kinds = expression_kinds(text)
        for kind in kinds:
            counts[kind] += 1
        counts["none"] += not kinds
        words += len(text.split())
        n += 1
    if n == 0:
        raise ValueError("no expressions to measure")
    return {"count": n, "words_mean": words / n, **{k: v / n for k, v in counts.items()}}
