"""What makes a string a text a model can be asked about: Unicode that encodes, with something printable in it.

Strings from JSON escapes (``"\\ud83d"`` without its pair) or from file names and shell arguments that are not
UTF-8 carry lone surrogates, which no tokenizer accepts; a string of control, zero-width or bidi characters only
tokenises to nothing a word could be shown for. Both are refused by name, like an empty text, wherever a text
enters: the API, ``explain-text``, and the files ``evaluate --texts`` reads.
"""

from __future__ import annotations

import unicodedata

from ..errors import InvalidInputError

__all__ = ["check_text", "lone_surrogate"]

#: Unicode categories with nothing to see: controls, format (zero-width, bidi), unassigned, private use, separators
_INVISIBLE = ("Cc", "Cf", "Cn", "Co", "Zs", "Zl", "Zp")


def lone_surrogate(text: str) -> int | None:
    """The position of the first lone surrogate in ``text`` (None: there is none)."""
    return next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None)


def check_text(text: str, where: str, *, printable: bool = True) -> str:
    """``text`` if it can be tokenised (and, with ``printable``, shows something); else an
    :class:`InvalidInputError` naming ``where`` (e.g. ``"texts[2]"``) and what to do."""
    at = lone_surrogate(text)
    if at is not None:
        raise InvalidInputError(
            f"{where} is not valid Unicode: a lone surrogate U+{ord(text[at]):04X} at character {at} (a JSON "
            "escape such as \\ud83d without its pair, or bytes that are not UTF-8); give the text as UTF-8"
        )
    if printable and all(unicodedata.category(ch) in _INVISIBLE for ch in text):
        raise InvalidInputError(
            f"{where} is empty: it has no printable character (only spaces, controls, zero-width or bidi marks); "
            "give some text to explain"
        )
    return text
