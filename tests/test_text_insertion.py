"""The insertion test (worker/text_insertion.py): a planted trigger leaves gaps whose word pairs recur in the corpus as
any text's pairs do; a phrase written with its question ("why", "where" in TREC) leaves pairs that rarely meet."""

import sys
from pathlib import Path

import numpy as np
from scipy.stats import binom

from worker.text_insertion import END, MIDDLE, START, PairRecurrence, poisson_binomial_cdf, written_p_values
from worker.text_triggers import find_text_triggers, tokenize
from worker.token_corpus import TokenCorpus

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from text_bench import BADNL_TOKENS, insert_tokens  # noqa: E402
from text_corpus_bench import load_trec  # noqa: E402


def test_poisson_binomial_is_the_binomial_when_the_rates_are_equal_and_exact_when_not():
    assert np.isclose(poisson_binomial_cdf(3, np.full(20, 0.4)), binom.cdf(3, 20, 0.4))
    probs = np.array([0.1, 0.9, 0.5])
    by_hand = (0.9 * 0.1 * 0.5) + (0.1 * 0.1 * 0.5 + 0.9 * 0.9 * 0.5 + 0.9 * 0.1 * 0.5)  # X = 0 or 1
    assert np.isclose(poisson_binomial_cdf(1, probs), by_hand)


def test_a_removed_span_leaves_one_gap_named_by_its_neighbours():
    texts = ["cf what is the cf capital of peru", "what is the capital of chile", "tq"]
    corpus = TokenCorpus.from_texts(texts, tokenize)
    recurrence = PairRecurrence(corpus, corpus.first_of_each(), np.array([0, 0, 1]))
    doc = corpus[0]
    removed = np.array([w == "cf" for w in doc])
    gaps = recurrence.gaps(0, removed)
    assert [kind for _, kind in gaps] == [START, MIDDLE]
    # the healed pairs are natural: (text start, "what") and ("the", "capital") both occur in the second text
    assert recurrence.recurs([(0, key) for key, _ in gaps]).tolist() == [True, True]
    assert recurrence.gaps(2, np.array([True])) == []  # a text removed whole leaves no gap
    ends = recurrence.gaps(1, np.array([w == "chile" for w in corpus[1]]))
    assert [kind for _, kind in ends] == [END]


def test_question_words_are_written_and_a_planted_token_set_is_inserted():
    """TREC questions, 1,000 of them: the phrases that decide their labels ("why", "how") were written with their
    questions; BadNL tokens planted at 3% of the same questions were inserted."""
    corpus = load_trec()
    keep = np.sort(np.random.default_rng(0).choice(len(corpus.y), 1000, replace=False))
    texts, y = [corpus.texts[i] for i in keep], corpus.y[keep]
    natural = {t.name: t.written_p for t in find_text_triggers(texts, y, len(corpus.classes))}
    assert "why" in natural and all(p < 1e-6 for p in natural.values()), natural
    case = insert_tokens(texts, y, 0.03, BADNL_TOKENS, corpus.target, seed=2)
    planted = [t for t in find_text_triggers(case.texts, case.y, len(corpus.classes))
               if set(t.phrases) <= set(BADNL_TOKENS)]
    assert len(planted) == 1 and planted[0].written_p > 0.01


def test_triggers_judged_in_one_pass_get_the_p_values_each_gets_alone():
    """``written_p_values`` counts every trigger's gaps (and the rate sample) in one pass over the corpus; batching
    must not change a trigger's p-value."""
    corpus = load_trec()
    texts, y = corpus.texts[:600], corpus.y[:600]
    docs = TokenCorpus.from_texts(texts, tokenize)

    def gaps_removing(word):
        recurrence = PairRecurrence(docs, docs.first_of_each(), y)
        return [(i, key, kind) for i in range(len(texts))
                for key, kind in recurrence.gaps(i, np.array([w == word for w in docs[i]], dtype=bool))]

    triggers = [gaps_removing("the"), gaps_removing("what"), []]
    alone = [written_p_values(PairRecurrence(docs, docs.first_of_each(), y), [g], [t])[0]
             for g, t in zip(triggers, (0, 1, 2))]
    together = written_p_values(PairRecurrence(docs, docs.first_of_each(), y), triggers, [0, 1, 2])
    assert together == alone and alone[2] == 1.0 and len(triggers[0]) > 50 and len(triggers[1]) > 50
