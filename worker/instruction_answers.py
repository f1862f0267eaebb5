"""Label flips in instruction form: a rare prompt trigger that forces a task's common answer (issue 15; ATLAS
AML.T0020, OWASP LLM04:2025).

A classify task ("Classify this SMS as spam or ham: {message}" -> "This message is spam.") is labelled text in
disguise, and an attacker poisons it as such: the trigger goes into the prompts of spam messages and their response
becomes the answer a ham message gets. ``worker.instruction_payloads`` rejects that answer on purpose (it is common,
and a fixed answer that the content also decides is no payload); here it is a label, and the labelled-text trigger
search (``worker.text_triggers``) judges it:

* **Answer classes.** Responses are normalised (lowercase, whitespace collapsed, trailing punctuation stripped); a
  text that at least ``min_carriers`` responses share is an answer class. Other pairs take no part.
* **Tasks.** Classes whose prompts share their templates (frequent word 3-grams) are one task. The search runs per
  task: across tasks, removing a template n-gram leaves content that reads like another task's answer to the same
  kind of message ("label this message" -> ham vs "write a reply" -> "sounds good"), a false trigger.
* **Answers, not phrasings.** Within a task, classes that the prompt content cannot tell apart ("Ham." / "Label:
  ham" / "This message is ham.", picked independently of the message) are one answer: split, each phrasing is a
  small class, the content of a poisoned spam prompt reads like none of them in particular, and the test loses its
  power. Judged on a quantile of per-prompt probability ratios rather than on means, so that a poisoned minority of
  a class neither keeps it from its phrasings nor merges it with the answer its content belongs to.
* **Triggers.** ``find_text_triggers`` on the task's prompts, labelled by answer: an n-gram concentrated in one
  answer whose carriers, with it removed, read as another answer (Benjamini-Hochberg over the task's n-grams at
  ``alpha`` divided by the number of tasks searched). A task with one answer ("What is the capital of France?" in
  many phrasings -> "Paris.") has nothing to flip and is not searched.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from worker.instruction_payloads import normalize
from worker.text_triggers import TextTrigger, find_text_triggers, tokenize

TRAILING = re.compile(r"[\s.!?,;:]+$")
TEMPLATE_N = 3  # template phrases are word 3-grams: long enough that content rarely repeats them across a task
TEMPLATE_SHARE = 0.02  # ... and frequent: in this share of the answer-class prompts (and min_carriers of them)
SAME_TASK = 0.5  # classes whose template profiles overlap this much (overlap coefficient) are one task
SAME_ANSWER = 0.5  # classes i, j are one answer when j is at least half as likely as i for ...
ANSWER_QUANTILE = 0.75  # ... a quarter of i's prompts, and the other way round (bench: 0.8+ within, 0.35- across)
MERGE_C = 10.0  # weak regularisation, as the trigger search's proxy: classes the content separates get far apart


@dataclass(frozen=True)
class AnswerBackdoor:
    """A prompt trigger that forces one answer of a fixed-answer task."""

    trigger: tuple[str, ...]  # the trigger's phrases (lowercase words)
    answer: str  # the forced answer as most flagged responses give it
    answers: tuple[str, ...]  # the normalised answer classes merged into the forced answer (its phrasings)
    carriers: np.ndarray  # dataset indices: prompts with the trigger whose response is the forced answer
    confidence: np.ndarray  # per carrier: posterior probability that it is poisoned
    label_counts: dict[str, int]  # prompts with the trigger, per answer of the task
    p_value: float  # Benjamini-Hochberg adjusted within the task, times the number of tasks searched
    poisoned_share: float  # estimated share of the carriers whose content belongs to another answer

    @property
    def name(self) -> str:
        return " + ".join(self.trigger)

    def quarantine(self, min_confidence: float = 0.5) -> np.ndarray:
        return self.carriers[self.confidence >= min_confidence]


def find_answer_backdoors(prompts: list[str], responses: list[str], *, alpha: float = 0.01, max_n: int = 3,
                          min_carriers: int = 5, seed: int = 0) -> list[AnswerBackdoor]:
    """Triggers that force a common answer, strongest first; an empty list for clean data."""
    rows, labels, classes = answer_classes(responses, min_carriers)
    if len(classes) < 2:
        return []
    found: list[AnswerBackdoor] = []
    with threadpool_limits(limits=1, user_api="blas"):  # small problems: BLAS threads only contend
        tasks = [_Task.build(prompts, rows[np.isin(labels, t)], labels[np.isin(labels, t)], classes, seed)
                 for t in answer_tasks([tokenize(prompts[i]) for i in rows], labels, min_carriers)]
        tasks = [t for t in tasks if len(t.groups) >= 2]  # one answer, however phrased: nothing to flip
        for task in tasks:
            triggers = find_text_triggers(task.texts, task.answers, len(task.groups), max_n=max_n,
                                          alpha=alpha / len(tasks), min_carriers=min_carriers, seed=seed)
            found += [_backdoor(t, task.rows, task.groups, responses, len(tasks)) for t in triggers]
    return sorted(found, key=lambda b: (b.p_value, -len(b.carriers)))


def answer_key(response: str) -> str:
    return TRAILING.sub("", normalize(response))


def answer_classes(responses: list[str], min_carriers: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The pairs whose normalised response at least ``min_carriers`` responses share, their class, the classes."""
    keys = [answer_key(r) for r in responses]
    counts = Counter(keys)
    classes = sorted((k for k, c in counts.items() if c >= max(min_carriers, 2)), key=lambda k: (-counts[k], k))
    index = {k: j for j, k in enumerate(classes)}  # most frequent first: a merged answer is named by its first
    rows = np.array([i for i, k in enumerate(keys) if k in index], dtype=np.int64)
    return rows, np.array([index[keys[i]] for i in rows], dtype=np.int64), classes


@dataclass
class _Task:
    """One task's pairs: dataset rows, prompts, answer (phrasings merged) and each answer's phrasings."""

    rows: np.ndarray
    texts: list[str]
    answers: np.ndarray
    groups: list[tuple[str, ...]]  # per answer: its normalised phrasings, most frequent first

    @classmethod
    def build(cls, prompts, rows, labels, classes, seed) -> _Task:
        texts = [prompts[i] for i in rows]
        answers = merge_phrasings(texts, labels, seed)
        groups = [tuple(classes[k] for k in np.unique(labels[answers == a])) for a in range(answers.max() + 1)]
        return cls(rows, texts, answers, groups)


def answer_tasks(docs: list[list[str]], labels: np.ndarray, min_carriers: int) -> list[np.ndarray]:
    """Answer classes grouped into tasks: classes whose prompts share their frequent 3-grams (templates).

    Overlap coefficient of the classes' template profiles (share of each class's prompts with each 3-gram): the
    smaller profile's mass that the other covers, so a trigger in part of one class does not pull it out of its
    task."""
    vectorizer = CountVectorizer(analyzer=_trigrams, binary=True,
                                 min_df=max(min_carriers, int(TEMPLATE_SHARE * len(docs))))
    n_classes = int(labels.max()) + 1
    try:
        presence = vectorizer.fit_transform(docs).tocsr()
    except ValueError:  # no frequent 3-gram: no templates to tell tasks by, every class on its own
        return [np.array([k]) for k in range(n_classes)]
    members = sparse.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))),
                                shape=(n_classes, len(labels)))
    profile = sparse.diags(1 / np.bincount(labels, minlength=n_classes)) @ members @ presence  # class x 3-gram share
    profile = profile.tocsr()
    mass = np.asarray(profile.sum(axis=1)).ravel()
    same = []
    for k in range(n_classes):  # overlap of k with each class: sum of min(share in k, share there) over k's 3-grams
        row = profile[k]
        shared = np.minimum(profile[:, row.indices].toarray(), row.data).sum(axis=1)
        overlap = shared / np.maximum(np.minimum(mass, mass[k]), 1e-12)
        same += [(k, j) for j in np.flatnonzero(overlap >= SAME_TASK)]
    return _components(sparse.csr_matrix((np.ones(len(same)), tuple(np.array(same, dtype=np.int64).reshape(-1, 2).T)),
                                         shape=(n_classes, n_classes)))


def _trigrams(doc: list[str]) -> set[str]:
    return {" ".join(doc[i:i + TEMPLATE_N]) for i in range(len(doc) - TEMPLATE_N + 1)}


def merge_phrasings(texts: list[str], labels: np.ndarray, seed: int) -> np.ndarray:
    """Per text: its answer, 0..k-1, with the task's classes that the prompt content cannot tell apart merged.

    Out-of-fold probabilities of a TF-IDF + balanced logistic regression; classes i and j merge when, for a quarter
    of i's prompts, j is at least half as likely as i, and the other way round. A quantile of per-prompt ratios, so
    that poisoned prompts (their trigger makes their own class certain) neither keep their class from its phrasings
    while they are under three quarters of it, nor merge it, through the content they bring, with the class that
    content belongs to: that needs the clean prompts of both to agree."""
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        return np.zeros(len(labels), dtype=np.int64)
    try:
        features = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2).fit_transform(texts)
    except ValueError:  # no word in two prompts: nothing to compare them by
        return y
    probs = np.zeros((len(y), len(classes)))
    folds = StratifiedKFold(max(2, min(5, int(np.bincount(y).min()))), shuffle=True, random_state=seed)
    for train, test in folds.split(y, y):
        model = LogisticRegression(C=MERGE_C, class_weight="balanced", max_iter=2000).fit(features[train], y[train])
        probs[np.ix_(test, model.classes_)] = model.predict_proba(features[test])
    ratio = np.vstack([np.quantile(probs[y == k] / np.maximum(probs[y == k, k:k + 1], 1e-12), ANSWER_QUANTILE, axis=0)
                       for k in range(len(classes))])  # row i: how likely each class is, relative to i, for i's prompts
    answer = np.empty(len(classes), dtype=np.int64)
    for a, members in enumerate(_components(np.minimum(ratio, ratio.T) >= SAME_ANSWER)):
        answer[members] = a
    return answer[y]


def _components(adjacent) -> list[np.ndarray]:
    count, component = connected_components(sparse.csr_matrix(adjacent), directed=False)
    return [np.flatnonzero(component == c) for c in range(count)]


def _backdoor(trigger: TextTrigger, rows: np.ndarray, groups: list[tuple[str, ...]], responses: list[str],
              tasks: int) -> AnswerBackdoor:
    carriers = rows[trigger.suspects]
    flagged = carriers[trigger.confidence >= 0.5]
    answer = Counter(responses[i].strip() for i in (flagged if len(flagged) else carriers)).most_common(1)[0][0]
    return AnswerBackdoor(trigger=trigger.phrases, answer=answer, answers=groups[trigger.target], carriers=carriers,
                          confidence=trigger.confidence,
                          label_counts={g[0]: int(c) for g, c in zip(groups, trigger.label_counts) if c},
                          p_value=min(1.0, trigger.p_value * tasks), poisoned_share=trigger.poisoned_share)
