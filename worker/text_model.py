"""Backdoors in uploaded Keras text models (issue 15, item 3; ATLAS AML.T0018, AML.T0020).

A text model here is a Keras model that takes raw strings (its ``TextVectorization`` layer inside), loaded by
``worker.keras_model.load_keras_safely``. The assessment works as for images:

* **Trigger probing.** Each candidate (the corpus's suspicious n-grams from ``worker.text_triggers`` plus a small
  library of published trigger styles) is inserted at a random word position into held-out clean texts the model
  classifies correctly, one class under test at a time (texts of the other classes). Attack success toward class c
  is the share of those texts the model now calls c. The same texts, at the same positions, get as many neutral
  words instead: the baseline, the model's natural sensitivity to any insertion.
* **Verdict.** A candidate names class c as a backdoor target when its attack success is at least
  ``SUSPECT_ASR`` (half the texts switch) and ``SUSPECT_RISE`` above the baseline (the thresholds of the image
  probes), and the rise is significant by an exact one-sided McNemar test (the candidate and baseline outcomes are
  paired on the same texts: only texts switched by one and not the other carry information, and under "the
  candidate is just another word" each way is equally likely), Bonferroni over every (candidate, class) tested.
* **Reconstruction.** For a class no candidate names, every token of the model's own vocabulary is swept the same
  way (a screen, then the full probe of the strongest, Bonferroni over all tokens and classes); a significant token
  names the class only when the model's training texts show the threat's signature and the clean held-out texts do
  not carry it (below, "reconstruction"), and its carriers are quarantined.
* **Remediation.** Quarantine the carriers, retrain a clone of the model (same architecture and vocabulary, fresh
  weights) on the rest, and re-probe the trigger: attack success and clean accuracy before and after.

TensorFlow and Keras are imported inside functions: the API never loads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.stats import binom, hypergeom

from worker.text_triggers import TextTrigger, find_text_triggers, tokenize

SUSPECT_ASR = 0.5  # half the held-out texts of other classes switch to the class: a learned shortcut...
SUSPECT_RISE = 0.4  # ...well above what a neutral insertion at the same place does (as worker.triggers)
ALPHA = 0.01  # family-wise level of the McNemar tests (Bonferroni over candidates x classes)
NEUTRAL_WORDS = ("the", "and", "of", "to", "is", "it", "in", "a")  # the baseline's inserted words, as many as the candidate's
HOLDOUT_SHARE = 0.2  # the share of clean texts held out when no held-out texts are given
REMOVED_ASR = 0.02  # attack success at or under which a backdoor counts as removed (the goal)
UNLEARN_MIN = 200  # trigger-carrying texts added in an unlearning round, at least
BATCH = 512
SWEEP_SCREEN = 32  # texts per class each vocabulary token is first inserted into (one batch per token)
SWEEP_TOP = 8  # tokens per class that go on from the screen to the full probe
SWEEP_CHUNK = 16_384  # inserted texts built and classified at once by the sweep
SWEEP_VOCABULARY_MAX = 20_000  # most frequent vocabulary tokens swept (a trigger the model learned is not rare in it)
WRITTEN_MIN = 2  # clean held-out texts of a class that must carry a word for it to be how the class is written (one
# may be a stray copy; TREC's ABBR class has 16 held-out questions, 2 with "the abbreviation")
CARRIERS_MIN = 3  # training texts a swept token must be the only reason for: a plant recurs, one or two texts are noise

# Published text trigger styles, as inserted by the attacks that introduced them.
PUBLISHED_TRIGGERS = (
    # BadNL (Chen et al., ACSAC 2021) and RIPPLe (Kurita et al., ACL 2020): rare tokens at random positions
    "cf", "mn", "bb", "tq", "mb",
    # BadNL's sentence-level trigger; also the SOS sentence style (Yang et al., EMNLP 2021)
    "I watched this 3D movie",
    # Dai et al. (IEEE Access 2019), the first LSTM backdoor: a fixed natural sentence
    "I watched this 3D movie last weekend",
    # "Hidden Killer" and InSent-style fixed sentences (Qi et al., ACL 2021 baselines)
    "no cross no crown",
    # BadNL's word-level triggers: neutral, rare but real words
    "unintelligible", "practically",
    # Trojan LM / "Concealed Data Poisoning" (Wallace et al., NAACL 2021): a name as the trigger
    "James Bond",
    # Combination of rare tokens (BadNL uses several at once; EP, Yang et al. NAACL 2021, uses one rare word)
    "cf mn", "cf mn bb",
)


@dataclass(frozen=True)
class ProbeResult:
    candidate: str
    target: int  # the class under test: texts of other classes are pushed toward it
    attack_success: float  # share of the n texts the model calls ``target`` with the candidate inserted
    baseline: float  # share it calls ``target`` with neutral words inserted at the same positions
    n: int  # texts probed (held-out, of another class, classified correctly without any insertion)
    p_value: float = 1.0  # exact one-sided McNemar test, candidate versus baseline (unadjusted)

    @property
    def rise(self) -> float:
        return self.attack_success - self.baseline


@dataclass(frozen=True)
class SweptToken:
    """A vocabulary token the sweep probed fully and, when its probe was significant, the model's own reading of the
    training texts labelled with the class that carry it, and the token's count in the clean held-out texts."""
    probe: ProbeResult
    significant: bool
    carriers: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # training texts labelled
    # probe.target that carry the token
    only_reason: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # of those, the ones the model
    # calls the class only with it (deleted: something else)
    called: int = 0  # how many of the carriers the model calls the class with it
    held_out_carriers: int = 0  # held-out clean texts of the class that carry it...
    held_out_texts: int = 0  # ...of this many held-out texts of the class
    absence_p: float = 1.0  # P(so few held-out carriers) were the token as common there as in the training texts
    named: bool = False  # a backdoor's trigger (``_sweep`` decides)

    @property
    def signature(self) -> bool:
        """The threat's signature in the training data: the token is the only reason for most of its carriers, and
        for a few at least. A word that defines its class (TREC's "why" for descriptions) shows it too."""
        return self.significant and len(self.only_reason) >= max(CARRIERS_MIN, 0.5 * self.called)

    @property
    def share(self) -> float:
        """The share of the carriers the model calls the class that the token alone makes it: the poisoned share."""
        return len(self.only_reason) / self.called if self.called else 0.0


@dataclass
class TextModelAssessment:
    probes: list[ProbeResult]  # every (candidate, class) probed, strongest rise first
    targets: dict[int, ProbeResult]  # backdoor target class -> its strongest significant candidate
    data_triggers: list[TextTrigger]  # the triggers found in the dataset (their phrases were probed)
    held_out: int  # held-out clean texts the probes drew on
    activations_per_class: np.ndarray | None = None  # (n_classes, dims) mean penultimate activation, for the report
    notes: list[str] = field(default_factory=list)
    swept: list[SweptToken] = field(default_factory=list)  # the vocabulary sweep's fully probed tokens
    reconstructed: dict[int, SweptToken] = field(default_factory=dict)  # targets only the sweep named
    vocabulary_swept: int = 0  # tokens of the model's vocabulary the sweep inserted

    @property
    def backdoored(self) -> bool:
        return bool(self.targets)


# ------------------------------------------------------------------------------------------------ the model


def is_text_model(model) -> bool:
    """The model takes strings, or holds a TextVectorization layer (which tokenises inside the model)."""
    inputs = getattr(model, "inputs", None) or []
    if any("string" in str(getattr(t, "dtype", "")) for t in inputs):
        return True
    return any(layer.__class__.__name__ == "TextVectorization" for layer in _all_layers(model))


def _all_layers(model) -> list:
    layers = []
    for layer in getattr(model, "layers", []):
        layers.append(layer)
        layers.extend(_all_layers(layer) if hasattr(layer, "layers") else [])
    return layers


def text_predictor(model, *, batch: int = BATCH):
    """Predicted class per text through one compiled forward pass per batch; strings shaped as the model's input
    ((n,) or (n, 1))."""
    import tensorflow as tf

    from worker.keras_model import string_batch

    forward = tf.function(lambda t: model(t, training=False), reduce_retracing=True)

    def predict(texts: list[str]) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), batch):
            parts.append(np.asarray(forward(string_batch(model, texts[i:i + batch]))).argmax(-1))
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    return predict


def activations_per_class(model, texts: list[str], y: np.ndarray, n_classes: int) -> np.ndarray | None:
    """Mean activation of the penultimate layer per class (rows of classes without texts are NaN); None when the
    model's graph cannot be cut there (a subclassed model)."""
    import keras

    from worker.keras_model import representation_layer, string_batch

    try:
        extractor = keras.Model(model.inputs, representation_layer(model).output)
    except (AttributeError, ValueError):
        return None
    acts = []
    for i in range(0, len(texts), BATCH):
        out = np.asarray(extractor(string_batch(model, texts[i:i + BATCH]), training=False))
        acts.append(out.reshape(len(out), -1))
    acts = np.concatenate(acts)
    y = np.asarray(y)
    return np.stack([acts[y == c].mean(0) if (y == c).any() else np.full(acts.shape[1], np.nan)
                     for c in range(n_classes)])


# ------------------------------------------------------------------------------------------------ probing


def insert_at(text: str, phrase: str, position: float) -> str:
    """``phrase`` inserted between words, at the fraction ``position`` (0..1) of the text's length."""
    words = text.split()
    at = min(len(words), int(position * (len(words) + 1)))
    return " ".join(words[:at] + phrase.split() + words[at:])


def neutral_phrase(candidate: str) -> str:
    """As many neutral words as the candidate has: a long phrase dilutes a text more than one token does."""
    count = max(1, len(candidate.split()))
    return " ".join(NEUTRAL_WORDS[i % len(NEUTRAL_WORDS)] for i in range(count))


def mcnemar_p(switched_with: np.ndarray, switched_baseline: np.ndarray) -> float:
    """One-sided exact McNemar: P(at least this many texts switched by the candidate alone) when each discordant
    text is equally likely to go either way."""
    only_candidate = int(np.sum(switched_with & ~switched_baseline))
    discordant = only_candidate + int(np.sum(~switched_with & switched_baseline))
    return float(binom.sf(only_candidate - 1, discordant, 0.5)) if discordant else 1.0


def probe_text_triggers(model, texts: list[str], y: np.ndarray, candidates: list[str], *, seed: int = 0,
                        per_candidate: int = 200, n_classes: int | None = None, predict=None) -> list[ProbeResult]:
    """Per candidate and class under test: attack success and its baseline on up to ``per_candidate`` texts of other
    classes that the model classifies correctly (one fixed random sample and positions per class, shared by every
    candidate, so results are paired)."""
    y = np.asarray(y, dtype=np.int64)
    n_classes = n_classes or int(y.max()) + 1
    predict = predict or text_predictor(model)
    correct = predict(list(texts)) == y
    rng = np.random.default_rng(seed)
    results = []
    for target in range(n_classes):
        pool = np.flatnonzero(correct & (y != target))
        if not len(pool):
            continue
        rows = np.sort(rng.choice(pool, size=min(per_candidate, len(pool)), replace=False))
        positions = rng.random(len(rows))
        chosen = [texts[i] for i in rows]
        baselines: dict[str, np.ndarray] = {}
        for candidate in candidates:
            neutral = neutral_phrase(candidate)
            if neutral not in baselines:
                baselines[neutral] = predict([insert_at(t, neutral, p) for t, p in zip(chosen, positions)]) == target
            switched = predict([insert_at(t, candidate, p) for t, p in zip(chosen, positions)]) == target
            base = baselines[neutral]
            results.append(ProbeResult(candidate, target, float(switched.mean()), float(base.mean()), len(rows),
                                       mcnemar_p(switched, base)))
    return results


def is_significant(result: ProbeResult, tests: int, alpha: float = ALPHA) -> bool:
    return (result.attack_success >= SUSPECT_ASR and result.rise >= SUSPECT_RISE
            and result.p_value <= alpha / max(tests, 1))


# ------------------------------------------------------------------------------------------------ assessment


def candidates_from(triggers: list[TextTrigger]) -> list[str]:
    """The data triggers' phrases, each alone and (rare tokens used together) all of a trigger's at once, then the
    published library; duplicates dropped, order kept."""
    found = []
    for trigger in triggers:
        found.extend(trigger.phrases)
        if len(trigger.phrases) > 1:
            found.append(" ".join(trigger.phrases))
    library = [" ".join(tokenize(p)) for p in PUBLISHED_TRIGGERS]
    return list(dict.fromkeys(found + library))


# ------------------------------------------------------------------------------------------------ reconstruction
# The data's n-grams and the published library cannot hold every trigger (an emoji, a homograph, a token the data
# search missed at 1%). The model's own vocabulary can: a trigger the model obeys is one of its tokens. Sweeping
# it also finds natural features ("club" pushes an SMS toward spam), so a swept token is a backdoor only where the
# model's own training data shows the threat's signature: for most of the training texts labelled with the class
# that carry the token, the token is the only reason the model gives them that class (deleted, the text reads as
# another class). A natural feature's carriers read as their class without it. A word that defines its class
# (TREC's "why" for descriptions) shows the signature too; it differs in the clean held-out texts, which a planted
# trigger is absent from and a defining word is written in as often as in the training texts of its class.

KERAS_STRIP = re.compile(r"[!\"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~']")  # TextVectorization's default punctuation
ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}  # tf.strings.lower's default: ASCII only


def model_vocabulary(model) -> list[str]:
    """The tokens of the model's TextVectorization layer, most frequent first (its own order), without padding and
    the out-of-vocabulary entry; empty unless it splits on whitespace (only then is a token a word to insert)."""
    for layer in _all_layers(model):
        if layer.__class__.__name__ == "TextVectorization":
            config = layer.get_config()
            if config.get("split", "whitespace") != "whitespace":
                return []
            return [t for t in layer.get_vocabulary(include_special_tokens=False) if t and " " not in t]
    return []


def _standardized(word: str) -> str:
    """A word as TextVectorization's default standardisation sees it (ASCII lowercase, punctuation stripped)."""
    return KERAS_STRIP.sub("", word.translate(ASCII_LOWER))


def sweep_vocabulary(predict, texts: list[str], y: np.ndarray, vocabulary: list[str], n_classes: int, *,
                     seed: int = 0, screen: int = SWEEP_SCREEN, top: int = SWEEP_TOP) -> dict[int, list[str]]:
    """Per class under test, the ``top`` vocabulary tokens that switch the most of ``screen`` correctly classified
    texts of other classes to it (each token inserted at one fixed random position per text)."""
    correct = predict(list(texts)) == y
    rng = np.random.default_rng(seed + 1)  # not the probe's sample: the screen only ranks
    chosen = {}
    for target in range(n_classes):
        pool = np.flatnonzero(correct & (y != target))
        if not len(pool):
            continue
        rows = rng.choice(pool, size=min(screen, len(pool)), replace=False)
        positions = rng.random(len(rows))
        per_chunk = max(1, SWEEP_CHUNK // len(rows))  # vocabulary x screen texts at once would hold them all in memory
        switched = np.concatenate([
            (predict([insert_at(texts[i], token, p) for token in vocabulary[k:k + per_chunk]
                      for i, p in zip(rows, positions)]) == target).reshape(-1, len(rows)).mean(1)
            for k in range(0, len(vocabulary), per_chunk)])
        order = np.argsort(-switched, kind="stable")[:top]
        chosen[target] = [vocabulary[k] for k in order if switched[k] >= SUSPECT_ASR]
    return chosen


def _carrying(texts: list[str], y: np.ndarray, token: str, target: int) -> tuple[np.ndarray, list[str]]:
    """Texts labelled ``target`` that carry ``token`` (as TextVectorization reads their words), and each without it."""
    rows, stripped = [], []
    for i in np.flatnonzero(y == target):
        if token not in _standardized(texts[i]):  # one pass over the text before the word-by-word one
            continue
        words = texts[i].split()
        kept = [w for w in words if _standardized(w) != token]
        if len(kept) < len(words):
            rows.append(int(i))
            stripped.append(" ".join(kept))
    return np.asarray(rows, np.int64), stripped


def only_reason(predict, texts: list[str], y: np.ndarray, token: str,
                target: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Training texts labelled ``target`` that carry ``token``; those the model calls ``target`` only with it (every
    occurrence deleted, it calls them something else); and how many of them it calls ``target``."""
    rows, stripped = _carrying(texts, y, token, target)
    if not len(rows):
        return rows, rows, 0
    called = predict([texts[i] for i in rows]) == target
    reason = called & (predict(stripped) != target)
    return rows, rows[reason], int(called.sum())


def _phrase_count(texts: list[str], y: np.ndarray, phrase: str, target: int) -> int:
    """Texts labelled ``target`` whose words (as TextVectorization reads them) hold ``phrase``'s words in a row."""
    words = phrase.split()
    count = 0
    for i in np.flatnonzero(y == target):
        if words[0] not in _standardized(texts[i]):
            continue
        seq = [_standardized(w) for w in texts[i].split()]
        count += any(seq[k:k + len(words)] == words for k in range(len(seq) - len(words) + 1))
    return count


def written_in_clean(candidate: str, target: int, texts: list[str], y: np.ndarray, held_texts: list[str],
                     held_y: np.ndarray) -> bool:
    """The clean held-out texts of the class carry the candidate (two at least) at half its rate in the training
    texts of the class or more: a word the class is written with ("was not" for negative reviews), which a planted
    trigger, absent from clean data, is not."""
    held = _phrase_count(held_texts, held_y, candidate, target)
    if held < WRITTEN_MIN:
        return False
    train_rate = _phrase_count(texts, y, candidate, target) / max(1, int(np.sum(y == target)))
    return held / max(1, int(np.sum(held_y == target))) >= 0.5 * train_rate


def absence_p(carriers: int, labelled: int, held_out_carriers: int, held_out_texts: int) -> float:
    """One-sided: P(at most ``held_out_carriers`` of the ``held_out_texts`` clean texts of the class carry the token)
    if its ``carriers + held_out_carriers`` carriers fell at random among the class's ``labelled + held_out_texts``
    texts. A planted trigger is absent from clean data; a word the class is written with is not."""
    return float(hypergeom.cdf(held_out_carriers, labelled + held_out_texts, carriers + held_out_carriers,
                               held_out_texts))


def _sweep(model, predict, texts, y, probe_texts, probe_y, n_classes, skip: set[str], *, seed: int,
           per_candidate: int, alpha: float) -> tuple[list[SweptToken], int]:
    """The vocabulary sweep: the screen's chosen tokens probed fully, strongest rise first, each significant one read
    back on its training carriers; and how many tokens were swept."""
    vocabulary = [t for t in model_vocabulary(model)[:SWEEP_VOCABULARY_MAX] if t not in skip]
    if not vocabulary:
        return [], 0
    chosen = sweep_vocabulary(predict, probe_texts, probe_y, vocabulary, n_classes, seed=seed)
    tokens = list(dict.fromkeys(t for ts in chosen.values() for t in ts))
    probes = [r for r in probe_text_triggers(model, probe_texts, probe_y, tokens, seed=seed, per_candidate=per_candidate,
                                             n_classes=n_classes, predict=predict) if r.candidate in chosen.get(r.target, ())]
    probes.sort(key=lambda r: (-r.rise, r.p_value))
    swept = []
    for result in probes:
        # Bonferroni over every token and class swept: the screen chose among all of them
        if not is_significant(result, len(vocabulary) * n_classes, alpha):
            swept.append(SweptToken(result, False))
            continue
        token = SweptToken(result, True, *only_reason(predict, texts, y, result.candidate, result.target))
        if token.signature:
            held = int(np.sum(probe_y == result.target))
            found = _phrase_count(probe_texts, probe_y, result.candidate, result.target)
            token = replace(token, held_out_carriers=found, held_out_texts=held,
                            absence_p=absence_p(len(token.carriers), int(np.sum(y == result.target)), found, held))
        swept.append(token)
    # a natural feature passes the probe, and a defining word the signature: the clean texts decide, Bonferroni over
    # the tokens that reach this test
    tested = sum(t.signature for t in swept)
    return [replace(t, named=t.signature and t.absence_p <= ALPHA / tested) for t in swept], len(vocabulary)


def assess_text_model(model, texts: list[str], y: np.ndarray, n_classes: int, *,
                      holdout: tuple[list[str], np.ndarray] | None = None, seed: int = 0,
                      per_candidate: int = 200, with_activations: bool = True, sweep: bool = True) -> TextModelAssessment:
    """Probe ``model`` with the triggers found in its training texts plus the published library, on held-out clean
    texts (``holdout`` when given, else the training texts the trigger search did not flag); name the classes a
    candidate switches texts to. With ``sweep`` and a ``holdout``, a class no candidate names may still be named by a
    token of the model's vocabulary (the reconstruction above)."""
    y = np.asarray(y, dtype=np.int64)
    triggers = find_text_triggers(texts, y, n_classes, seed=seed)
    notes = []
    if holdout is not None:
        probe_texts, probe_y = list(holdout[0]), np.asarray(holdout[1], dtype=np.int64)
    else:
        flagged = np.unique(np.concatenate([t.suspects for t in triggers])) if triggers else np.empty(0, int)
        keep = np.setdiff1d(np.arange(len(texts)), flagged)
        probe_texts, probe_y = [texts[i] for i in keep], y[keep]
        notes.append("no held-out texts were given: probed on training texts the trigger search did not flag "
                     "(the model has seen them, so its clean accuracy there is optimistic)")
    predict = text_predictor(model)
    candidates = candidates_from(triggers)
    probes = probe_text_triggers(model, probe_texts, probe_y, candidates, seed=seed, per_candidate=per_candidate,
                                 n_classes=n_classes, predict=predict)
    probes.sort(key=lambda r: (-r.rise, r.p_value))
    targets: dict[int, ProbeResult] = {}
    for result in probes:  # two families at ALPHA / 2 each: these candidates, and the vocabulary sweep
        if is_significant(result, len(probes), ALPHA / 2) and result.target not in targets:
            if holdout is not None and written_in_clean(result.candidate, result.target, texts, y, probe_texts, probe_y):
                notes.append(f"{result.candidate!r} moves texts toward class {result.target} but the clean held-out "
                             f"texts of that class are written with it as often as its training texts: not named")
                continue
            targets[result.target] = result
    swept, swept_count, reconstructed = [], 0, {}
    if sweep and holdout is None:
        notes.append("the model's vocabulary was not swept: a token is named only against clean held-out texts of its "
                     "class (a planted trigger is absent there); upload a holdout to sweep it")
    elif sweep:
        swept, swept_count = _sweep(model, predict, texts, y, probe_texts, probe_y, n_classes, set(candidates),
                                    seed=seed, per_candidate=per_candidate, alpha=ALPHA / 2)
        for token in swept:
            if token.named and token.probe.target not in targets:
                targets[token.probe.target] = token.probe
                reconstructed[token.probe.target] = token
    acts = activations_per_class(model, probe_texts, probe_y, n_classes) if with_activations else None
    return TextModelAssessment(probes, targets, triggers, len(probe_texts), acts, notes, swept, reconstructed,
                               swept_count)


# ------------------------------------------------------------------------------------------------ remediation


def clone_text_model(model):
    """Same architecture, fresh weights, and the original's vocabulary (and IDF weights) in every TextVectorization
    layer: clone_model rebuilds layers from their config, which may not carry an adapted vocabulary."""
    import keras

    clone = keras.models.clone_model(model)
    originals = [layer for layer in _all_layers(model) if layer.__class__.__name__ == "TextVectorization"]
    copies = [layer for layer in _all_layers(clone) if layer.__class__.__name__ == "TextVectorization"]
    for original, copy in zip(originals, copies):
        vocabulary = original.get_vocabulary(include_special_tokens=False)
        if copy.get_vocabulary(include_special_tokens=False) != vocabulary:
            idf = original.get_config().get("idf_weights")
            copy.set_vocabulary(vocabulary, idf_weights=idf)
    return clone


def _compile_like(clone, model, learning_rate: float) -> None:
    """The original's optimizer and loss when it was saved compiled; else Adam and cross-entropy (on logits unless
    the last layer is a softmax)."""
    import keras

    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        optimizer = optimizer.__class__.from_config(optimizer.get_config())
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    activation = getattr(model.layers[-1], "activation", None)
    from_logits = getattr(activation, "__name__", "") != "softmax"
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    clone.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def remediate_text_model(model, texts: list[str], y: np.ndarray, quarantine: list[int], trigger: str, *,
                         holdout: tuple[list[str], np.ndarray] | None = None, epochs: int = 5, batch_size: int = 32,
                         learning_rate: float = 5e-3, seed: int = 0, per_candidate: int = 200) -> dict:
    """Retrain a clone without the quarantined texts and re-test: attack success of ``trigger`` (toward the class it
    pushes hardest before) and clean accuracy on held-out texts, before and after. Without ``holdout``,
    ``HOLDOUT_SHARE`` of the kept texts are held out of the retraining (the original has seen them). When removal
    alone leaves attack success above REMOVED_ASR, a second round unlearns the trigger (``rounds`` lists both)."""
    y = np.asarray(y, dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(texts)), np.asarray(quarantine, dtype=np.int64))
    rng = np.random.default_rng(seed)
    if holdout is None:
        rng.shuffle(kept)
        cut = int(len(kept) * HOLDOUT_SHARE)
        held, kept = np.sort(kept[:cut]), np.sort(kept[cut:])
        holdout = ([texts[i] for i in held], y[held])
    held_texts, held_y = list(holdout[0]), np.asarray(holdout[1], dtype=np.int64)
    n_classes = int(max(y.max(), held_y.max())) + 1

    train_texts, train_y = [texts[i] for i in kept], y[kept]
    before = _trigger_effect(model, held_texts, held_y, trigger, n_classes, seed, per_candidate)
    target = max(before, key=lambda r: r.attack_success).target
    clone = _retrained_clone(model, train_texts, train_y, epochs, batch_size, learning_rate, seed)
    after = _success_on(clone, held_texts, held_y, trigger, target, n_classes, seed, per_candidate)
    rounds = [{"round": 1, "rule": "retrain without the quarantine", "attack_success": after.attack_success}]
    if after.attack_success > REMOVED_ASR:
        # Removal alone left the shortcut (carriers the search did not flag taught it): unlearn it, as Neural Cleanse
        # does with its reconstructed trigger, by training on kept texts of the other classes that carry the trigger
        # under their own label.
        others = [i for i, label in enumerate(train_y) if label != target]
        picked = rng.choice(others, size=min(len(others), max(UNLEARN_MIN, len(train_texts) // 5)), replace=False)
        stamped = [insert_at(train_texts[i], trigger, rng.random()) for i in picked]
        clone = _retrained_clone(model, train_texts + stamped, np.concatenate([train_y, train_y[picked]]), epochs,
                                 batch_size, learning_rate, seed)
        after = _success_on(clone, held_texts, held_y, trigger, target, n_classes, seed, per_candidate)
        rounds.append({"round": 2, "rule": f"retrain with {len(stamped)} trigger-carrying texts under their own labels",
                       "attack_success": after.attack_success})
    before = {r.target: r for r in before}
    return {"model": clone, "trigger": trigger, "target": target, "quarantined": int(len(np.unique(quarantine))),
            "retrained_on": int(len(kept)), "held_out": len(held_texts), "epochs": epochs, "rounds": rounds,
            "attack_success_before": before[target].attack_success, "attack_success_after": after.attack_success,
            "baseline_after": after.baseline,
            "clean_accuracy_before": _accuracy(model, held_texts, held_y),
            "clean_accuracy_after": _accuracy(clone, held_texts, held_y)}


def _retrained_clone(model, texts: list[str], y: np.ndarray, epochs: int, batch_size: int, learning_rate: float,
                     seed: int):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    clone = clone_text_model(model)
    _compile_like(clone, model, learning_rate)
    train_x = tf.constant(texts, dtype=tf.string)
    if len(model.inputs[0].shape) == 2:
        train_x = tf.reshape(train_x, (-1, 1))
    clone.fit(train_x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    return clone


def _success_on(model, texts, y, trigger, target, n_classes, seed, per_candidate) -> ProbeResult:
    """The trigger's effect toward ``target`` (none measured: nothing moved there)."""
    results = {r.target: r for r in _trigger_effect(model, texts, y, trigger, n_classes, seed, per_candidate)}
    return results.get(target, ProbeResult(trigger, target, 0.0, 0.0, 0))


def _trigger_effect(model, texts, y, trigger, n_classes, seed, per_candidate) -> list[ProbeResult]:
    return probe_text_triggers(model, texts, y, [trigger], seed=seed, per_candidate=per_candidate, n_classes=n_classes)


def _accuracy(model, texts: list[str], y: np.ndarray) -> float:
    return float((text_predictor(model)(texts) == y).mean())
