"""Characters a reader does not see as writing, defined once: the report layers show them as escapes (a trigger of
zero-width spaces would otherwise print as nothing, a bidi override would reorder a line), and the text trigger
search counts each as a token of its own. Plain strings for a regex character class; no imports, so the API and the
CLI can use them."""

CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 and C1 controls and DEL (tab and newline aside)
ZERO_WIDTH = "\u200b-\u200d\u2060\ufeff"  # zero-width space, non-joiner, joiner, word joiner, no-break space (BOM)
# those, the direction marks, soft hyphen, bidi embeddings, overrides and isolates, invisible operators, tag characters
INVISIBLE = f"{ZERO_WIDTH}\u00ad\u034f\u180e\u200e\u200f\u202a-\u202e\u2060-\u206f\U000e0000-\U000e007f"
# arrows, technical symbols, shapes, dingbats, emoji
PICTOGRAPHS = "\u2190-\u21ff\u2300-\u23ff\u25a0-\u27bf\u2900-\u297f\u2b00-\u2bff\U0001f000-\U0001faff"
PRIVATE_USE = "\ue000-\uf8ff"

# Letters of other scripts drawn like a lowercase Latin letter (a subset of Unicode's confusables, UTS #39: Cyrillic,
# Greek, Armenian and dotless i), each mapped to the letter it passes for. A word that mixes them with Latin letters is
# spelled to deceive: the homograph trigger of Li et al. (CCS 2021) swaps a few letters of a text this way, and spam
# does it to slip past filters.
LATIN_LOOKALIKES = {
    "\u0430": "a", "\u0441": "c", "\u0501": "d", "\u0435": "e", "\u04bb": "h", "\u0456": "i", "\u0458": "j",
    "\u04cf": "l", "\u043e": "o", "\u0440": "p", "\u051b": "q", "\u0455": "s", "\u0443": "y", "\u051d": "w",
    "\u0445": "x", "\u03b1": "a", "\u03f2": "c", "\u03b5": "e", "\u03b9": "i", "\u03ba": "k", "\u03bd": "v",
    "\u03bf": "o", "\u03c1": "p", "\u03c5": "u", "\u03c7": "x", "\u0585": "o", "\u057d": "u", "\u0131": "i",
    # capitals drawn like Latin ones (В К М Н Т, Β Η Μ Τ Ζ), as lowercasing leaves them
    "\u0432": "b", "\u043a": "k", "\u043c": "m", "\u043d": "h", "\u0442": "t",
    "\u03b2": "b", "\u03b7": "h", "\u03bc": "m", "\u03c4": "t", "\u03b6": "z",
}
# the scripts those come from: any of their letters inside a word with Latin letters marks it
OTHER_SCRIPT_LETTERS = "\u0131\u0370-\u03ff\u0400-\u052f\u0531-\u058f"


_LOOKALIKE_ESCAPES = {ord(c): f"\\u{ord(c):04x}" for c in LATIN_LOOKALIKES}


def unmasked(text: str) -> str:
    """``text`` with every look-alike letter as an escape (``fr\\u0435e``): printed as itself it reads as Latin."""
    return text.translate(_LOOKALIKE_ESCAPES)


def shown(text: str) -> str:
    """``repr(text)`` (invisible characters escaped) with the look-alike letters escaped too, for a trigger's name."""
    return unmasked(repr(text))
