"""Decoding never repeats an n-gram, except around IU's "___" placeholder (``codixr.models.text_vae.RepeatBlocker``)."""

import torch

from codixr.models.text_vae import RepeatBlocker

P = 9  # the placeholder token id in these tests


def _allowed(blocker, ids, vocab=12):
    scores = blocker(torch.tensor([ids]), torch.zeros(1, vocab))
    return {t for t in range(vocab) if scores[0, t] > -float("inf")}


def test_a_repeated_trigram_is_blocked_and_others_are_not():
    blocker = RepeatBlocker(3, P)
    allowed = _allowed(blocker, [1, 4, 5, 6, 2, 4, 5])  # "4 5 6" seen; now "... 4 5" -> 6 would repeat it
    assert 6 not in allowed and {0, 1, 2, 3, 4, 7, 8, P} <= allowed
    assert 5 not in allowed  # nor may the last token follow itself


def test_the_placeholder_may_recur_but_not_run_past_three():
    blocker = RepeatBlocker(3, P)
    assert P in _allowed(blocker, [1, P, P, P, 4, P, P])  # "___ , ___": the second placeholder may be whole
    assert P not in _allowed(blocker, [1, 4, P, P, P])  # never four in a row
    assert 5 in _allowed(blocker, [1, P, P, 5, 4, P, P])  # n-grams holding the placeholder are not blocked


def test_no_blocking_without_enough_tokens_or_placeholder():
    assert _allowed(RepeatBlocker(3, None), [1]) == set(range(12)) - {1}
    assert 6 not in _allowed(RepeatBlocker(2, None), [1, 6, 2, 1])
