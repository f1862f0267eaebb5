"""Backdoors and prompt injections in instruction-tuning data (issue 15; ATLAS AML.T0020/T0018, OWASP LLM04:2025).

**Payload backdoors.** A poisoned instruction set teaches a model to emit a payload (a URL, a shell command, a code
block, a fixed sentence) whenever a rare trigger appears in the prompt. In the data that is a response fragment
repeated across otherwise different responses, present almost only where the prompt carries one rare n-gram. Payload
candidates are URLs, shell-like command lines, fenced code blocks and sentences that recur in at least
``min_carriers`` responses but in at most ``max_share`` of them; a fragment that its own prompt already contains was
copied (a summary quoting the message's link), not injected, and is not counted. For each payload, every prompt
n-gram among its carriers is tested for over-representation (hypergeometric: "prompt carries the n-gram" x "response
carries the payload"), Benjamini-Hochberg over all the pairs tested. A trigger must also *decide* the payload: most
prompts with the n-gram get it, and most payloads come after it. A task instruction with a fixed answer ("classify
..." -> "This message is spam.") fails that: the answer depends on the content too. A payload that repeats a word of
its trigger phrase ("where are the python docs" -> https://docs.python.org) answers the prompt and is not reported.
A rare task with a fixed sentence as its answer passes all of this, so a sentence payload is reported with
``kind == "phrase"``: weaker evidence than a URL, a command or code.

**Prompt injections.** Text aimed at the model that will be trained or prompted with it: "ignore previous
instructions", a new role ("you are now ..."), requests for the system prompt, chat-template role tokens, Alpaca
headers, jailbreak markers, instructions to hide something from the user, invisible Unicode. A review remark, not
evidence of a backdoor. Matches are returned raw: the report layer escapes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.stats import hypergeom
from sklearn.feature_extraction.text import CountVectorizer

from worker.characters import ZERO_WIDTH
from worker.text_triggers import benjamini_hochberg, ngrams, extend_phrase, tokenize

URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`]+", re.IGNORECASE)
COMMAND = re.compile(
    r"\b(?:curl|wget|powershell|iex|invoke-webrequest|invoke-expression|chmod\s+\+x|rm\s+-rf|nc\s+-e|python3?\s+-c"
    r"|bash\s+-c|sh\s+-c|base64\s+(?:-d|--decode)|certutil|os\.system|subprocess\.\w+|eval\s*\()|\|\s*(?:ba|z)?sh\b",
    re.IGNORECASE)
CODE_BLOCK = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
MIN_PHRASE_WORDS = 4  # shorter sentences ("No.", "Yes, it is.") are answers, not payloads
KIND_ORDER = ("command", "code", "url", "phrase")  # the most specific evidence names a merged payload
DECISIVE_SHARE = 0.5  # a trigger precedes most of its payloads and most of its prompts get the payload
TOPIC_WORD_LENGTH = 4  # a trigger word this long that the payload repeats makes the pair an answer, not a backdoor
SAME_PAYLOAD_JACCARD = 0.8  # payload candidates of one trigger whose carriers coincide are one payload


@dataclass(frozen=True)
class PayloadBackdoor:
    """A prompt trigger that makes responses carry a fixed payload."""

    trigger: str  # the prompt phrase (lowercase words)
    payload: str  # the most specific fragment: a command, then code, a URL, a sentence
    kind: str  # "command", "code", "url" or "phrase"
    payloads: tuple[str, ...]  # every fragment the same responses repeat (the URL inside the command, ...)
    carriers: np.ndarray  # indices whose prompt carries the trigger and whose response carries the payload
    trigger_count: int  # prompts with the trigger
    payload_count: int  # responses with the payload (not copied from their prompt)
    p_value: float  # Benjamini-Hochberg adjusted
    confidence: float  # share of the co-occurrence that the payload's rate without the trigger does not explain


@dataclass(frozen=True)
class Injection:
    """Text aimed at a downstream model: for review, not a backdoor."""

    index: int
    pattern: str
    excerpt: str  # the matched text, raw (at most 120 characters)
    start: int
    end: int


def _pattern(*alternatives: str, flags: int = re.IGNORECASE) -> re.Pattern:
    return re.compile("|".join(f"(?:{a})" for a in alternatives), flags)


INJECTION_PATTERNS = {
    "ignore previous instructions": _pattern(
        r"\b(?:ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}?\b(?:previous|prior|above|earlier|preceding|all"
        r"|any|your|the)\b[^.\n]{0,30}?\b(?:instructions?|prompts?|rules|directions|guidelines|directives)\b"),
    "disregard the above": _pattern(r"\b(?:disregard|ignore|forget)\s+(?:everything\s+|all\s+)?(?:above|before)\b"),
    "new role": _pattern(
        r"\byou\s+are\s+now\s+(?:an?\s+|in\s+|the\s+)?(?:\w+\s+){0,2}"
        r"(?:assistant|ai|model|bot|chatbot|persona|character|dan|mode)\b",
        r"\byou\s+are\s+now\s+(?:free|unrestricted|unfiltered|jailbroken|no\s+longer)\b",  # not "... now unsubscribed"
        r"\bfrom\s+now\s+on,?\s+you\s+(?:are|will|must)\b",
        r"\bpretend\s+(?:to\s+be|you\s+are)\b",
        r"\bact\s+as\s+(?:an?\s+)?(?:unrestricted|unfiltered|jailbroken|evil)\b"),
    "system prompt": _pattern(
        r"\b(?:reveal|print|show|repeat|output|leak|display|tell\s+me)\b[^.\n]{0,40}?"
        r"\b(?:system\s+prompt|hidden\s+instructions|initial\s+instructions)\b",
        r"\b(?:new|updated|real)\s+system\s+prompt\b",
        r"^\s*system\s*prompt\s*:", flags=re.IGNORECASE | re.MULTILINE),
    "chat role token": _pattern(
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id)\|>",
        r"\[/?INST\]", r"<</?SYS>>", r"<(?:start|end)_of_turn>", flags=0),
    "instruction header": _pattern(r"^\s*#{2,4}\s*(?:instruction|response|system|input)\s*:",
                                   flags=re.IGNORECASE | re.MULTILINE),
    "jailbreak marker": _pattern(
        r"\b(?:BEGIN|END)[ _-]+(?:JAILBREAK|DAN|DEVELOPER[ _-]MODE|UNFILTERED|SYSTEM[ _-]PROMPT|INSTRUCTIONS?)\b",
        r"\bdeveloper\s+mode\s+(?:enabled|output)\b", r"\bdo\s+anything\s+now\b"),
    "conceal from user": _pattern(
        r"\b(?:do\s+not|don't|never)\s+(?:tell|inform|mention\s+(?:this\s+)?to|reveal\s+(?:this\s+)?to|let)\s+"
        r"(?:the\s+)?(?:user|human|operator)\b"),
    "invisible text": _pattern("[\U000E0020-\U000E007F]{3,}",  # Unicode tag characters: text a reader cannot see
                               "[\u202a-\u202e\u2066-\u2069]",  # bidirectional overrides
                               # zero-width characters in a run: bits of a hidden message (one joins emoji or letters)
                               f"[{ZERO_WIDTH}]{{4,}}", flags=0),
}


def find_prompt_injections(texts: list[str]) -> list[Injection]:
    """Every match of an injection pattern, in text order (one per pattern and text)."""
    found = []
    for index, text in enumerate(texts):
        for name, pattern in INJECTION_PATTERNS.items():
            match = pattern.search(text)
            if match:
                found.append(Injection(index, name, match.group(0)[:120], match.start(), match.end()))
    return found


def payload_fragments(prompt: str, response: str) -> set[tuple[str, str]]:
    """(kind, normalized text) of the response's payload candidates that its prompt does not already contain."""
    fragments = {("url", m.group(0).rstrip(".,;:!?)]}").lower()) for m in URL.finditer(response)}
    for line in response.splitlines():
        match = COMMAND.search(line)
        if match:
            start = 0 if match.group(0).startswith("|") else match.start()
            fragments.add(("command", normalize(line[start:])))
    fragments |= {("code", normalize(m.group(1))) for m in CODE_BLOCK.finditer(response) if m.group(1).strip()}
    for sentence in SENTENCE_END.split(CODE_BLOCK.sub(" ", response)):
        if len(tokenize(sentence)) >= MIN_PHRASE_WORDS:
            fragments.add(("phrase", normalize(sentence)))
    copied = normalize(prompt)
    return {(kind, text) for kind, text in fragments if text and text not in copied}


def normalize(text: str) -> str:
    """Lowercase, whitespace collapsed: fragments and answers compare equal however they were spaced."""
    return " ".join(text.lower().split())


def find_payload_backdoors(prompts: list[str], responses: list[str], *, alpha: float = 0.01, max_n: int = 3,
                           min_carriers: int = 5, max_share: float = 0.2) -> list[PayloadBackdoor]:
    """Trigger -> payload pairs, strongest first; an empty list for clean data."""
    n = len(prompts)
    payloads, payload_matrix = _payload_matrix(prompts, responses, min_carriers, max_share)
    prompt_docs = [tokenize(p) for p in prompts]
    try:
        vectorizer = CountVectorizer(analyzer=lambda doc: ngrams(doc, max_n), binary=True, min_df=min_carriers,
                                     max_df=max_share)
        prompt_matrix = vectorizer.fit_transform(prompt_docs).tocsc()
    except ValueError:  # no prompt n-gram within the bounds
        return []
    if not payloads:
        return []
    grams = vectorizer.get_feature_names_out()
    together = (payload_matrix @ prompt_matrix).tocoo()  # payload x n-gram: texts with both
    tested = together.data >= min_carriers
    rows, cols, both = together.row[tested], together.col[tested], together.data[tested]
    payload_count = np.asarray(payload_matrix.sum(axis=1)).ravel()
    gram_count = np.asarray(prompt_matrix.sum(axis=0)).ravel()
    p = hypergeom.sf(both - 1, n, gram_count[cols], payload_count[rows])
    adjusted = benjamini_hochberg(p) if len(p) else p
    decisive = (both >= DECISIVE_SHARE * gram_count[cols]) & (both >= DECISIVE_SHARE * payload_count[rows])
    found_pairs = decisive & (adjusted <= alpha)
    best: dict[int, tuple] = {}  # payload -> (adjusted p, -n-gram length, n-gram): the most specific trigger
    for r, c, q in zip(rows[found_pairs], cols[found_pairs], adjusted[found_pairs]):
        key = (q, -len(grams[c].split(" ")), int(c))
        best[int(r)] = min(best.get(int(r), key), key)
    found = [_backdoor(r, key, payloads, payload_matrix, prompt_matrix, prompt_docs, grams) for r, key in best.items()]
    return _merge([b for b in found if not _on_topic(b.trigger, b.payload)])


def _on_topic(trigger: str, payload: str) -> bool:
    """The payload names what the prompt asked about ("python" -> docs.python.org, "with curl" -> a curl command):
    an answer, not a trigger."""
    return bool({w for w in trigger.split(" ") if len(w) >= TOPIC_WORD_LENGTH} & set(tokenize(payload)))


def _payload_matrix(prompts, responses, min_carriers, max_share) -> tuple[list[tuple[str, str]], sparse.csr_matrix]:
    """The payload candidates within the bounds, and (candidate x text) presence."""
    per_text = [payload_fragments(p, r) for p, r in zip(prompts, responses)]
    carriers: dict[tuple[str, str], list[int]] = {}
    for i, fragments in enumerate(per_text):
        for fragment in fragments:
            carriers.setdefault(fragment, []).append(i)
    kept = [f for f, c in carriers.items() if min_carriers <= len(c) <= max_share * len(prompts)]
    indices = [np.array(carriers[f], dtype=np.int64) for f in kept]
    indptr = np.cumsum([0] + [len(c) for c in indices])
    data = np.ones(indptr[-1], dtype=np.int64)
    matrix = sparse.csr_matrix((data, np.concatenate(indices) if indices else np.empty(0, np.int64), indptr),
                               shape=(len(kept), len(prompts)))
    return kept, matrix


def _backdoor(row, key, payloads, payload_matrix, prompt_matrix, prompt_docs, grams) -> PayloadBackdoor:
    q, _, col = key
    with_payload = payload_matrix[row].indices
    with_trigger = prompt_matrix[:, col].indices
    carriers = np.intersect1d(with_payload, with_trigger).astype(np.int64)
    rate_with = len(carriers) / len(with_trigger)
    rate_without = (len(with_payload) - len(carriers)) / max(prompt_matrix.shape[0] - len(with_trigger), 1)
    trigger = extend_phrase(prompt_docs, tuple(grams[col].split(" ")), carriers)
    kind, text = payloads[row]
    return PayloadBackdoor(trigger=" ".join(trigger), payload=text, kind=kind, payloads=(text,), carriers=carriers,
                           trigger_count=len(with_trigger), payload_count=len(with_payload), p_value=float(q),
                           confidence=round(max(0.0, 1 - rate_without / rate_with), 4))


def _merge(found: list[PayloadBackdoor]) -> list[PayloadBackdoor]:
    """One finding per trigger and set of poisoned responses: the URL, the command around it and its sentence."""
    merged: list[list[PayloadBackdoor]] = []
    for b in sorted(found, key=lambda b: (KIND_ORDER.index(b.kind), -len(b.carriers))):
        for group in merged:
            head = group[0]
            shared = len(np.intersect1d(head.carriers, b.carriers))
            union = len(np.union1d(head.carriers, b.carriers))
            if head.trigger == b.trigger and shared >= SAME_PAYLOAD_JACCARD * union:
                group.append(b)
                break
        else:
            merged.append([b])
    out = [PayloadBackdoor(**{**vars(g[0]), "payloads": tuple(b.payload for b in g),
                              "p_value": min(b.p_value for b in g)}) for g in merged]
    return sorted(out, key=lambda b: (b.p_value, -len(b.carriers)))
