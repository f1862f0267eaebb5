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
