"""Report quality: corpus BLEU-1..4 (paper Table IV) and ROUGE-L.

BLEU (Papineni et al., 2002) is computed by sacrebleu (pinned in requirements.txt):

* tokenisation: sacrebleu's ``"13a"`` tokenizer (the mteval-v13a rules: punctuation is split off
  as its own token, except periods/commas inside numbers such as ``2.5``), after lowercasing;
* BLEU-n is the *cumulative* score: brevity penalty x geometric mean of the clipped (modified)
  n-gram precisions of orders 1..n with uniform weights 1/n, pooled over the whole corpus
  (sacrebleu ``max_ngram_order=n``). This is the "BLEU-1..4" of report-generation papers;
* smoothing: none by default (a corpus with no matching n-gram of some order scores 0);
  ``smooth_method`` accepts sacrebleu's "exp", "floor" and "add-k";
* scores are given in [0, 1] (sacrebleu's value / 100), as in the paper's tables.

ROUGE-L is the LCS F-measure of Lin (2004) per hypothesis/reference pair, averaged over the
corpus (with several references, the best one counts), on lowercase alphanumeric tokens (the
rules of Google's ``rouge-score`` without stemming). It is implemented here (a dozen lines of
dynamic programming) because no pinned dependency provides it.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

import numpy as np
from sacrebleu.metrics import BLEU

from codixr.metrics.errors import MetricInputError

BLEU_TOKENIZER = "13a"
_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def _reference_streams(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str]]:
    """sacrebleu's layout: one list per reference slot, each as long as ``hypotheses``."""
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise MetricInputError("hypotheses and references must be lists of reports, not a single string.")
    if len(hypotheses) != len(references):
        raise MetricInputError(f"got {len(hypotheses)} hypotheses but {len(references)} references; give one entry per report.")
    if not hypotheses:
        raise MetricInputError("no reports given: hypotheses and references are empty.")
    per_report = [[r] if isinstance(r, str) else list(r) for r in references]
    n_refs = {len(r) for r in per_report}
    if len(n_refs) != 1 or 0 in n_refs:
        raise MetricInputError("every hypothesis needs the same number (at least one) of references.")
    return [list(slot) for slot in zip(*per_report)]


@functools.lru_cache(maxsize=32)
def _bleu(order: int, smooth_method: str, smooth_value: float | None, tokenize: str, lowercase: bool) -> BLEU:
    return BLEU(lowercase=lowercase, tokenize=tokenize, smooth_method=smooth_method,
                smooth_value=smooth_value, max_ngram_order=order)


def bleu_scores(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    max_order: int = 4,
    smooth_method: str = "none",
    smooth_value: float | None = None,
    tokenize: str = BLEU_TOKENIZER,
    lowercase: bool = True,
) -> dict[str, float]:
    """Corpus BLEU-1..``max_order`` in [0, 1]: ``{"BLEU-1": ..., "BLEU-2": ..., ...}``.

    ``references`` holds one reference per hypothesis, or a list of references per hypothesis
    (the same number for each). See the module docstring for tokenisation and smoothing.
    """
    if smooth_method not in BLEU.SMOOTH_DEFAULTS:
        raise MetricInputError(f"smooth_method must be one of {sorted(BLEU.SMOOTH_DEFAULTS)}; got {smooth_method!r}.")
    streams = _reference_streams(hypotheses, references)
    return {
        f"BLEU-{n}": _bleu(n, smooth_method, smooth_value, tokenize, lowercase).corpus_score(list(hypotheses), streams).score / 100.0
        for n in range(1, max_order + 1)
    }


def rouge_tokens(text: str) -> list[str]:
    """Lowercase alphanumeric tokens (punctuation dropped), as ``rouge-score`` tokenises without stemming."""
    return _ROUGE_TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (O(len(a) * len(b)))."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_pair(hypothesis: str, reference: str, beta: float = 1.0) -> float:
    """ROUGE-L F-measure of one hypothesis against one reference: (1+b^2)PR / (R + b^2 P), P = LCS/|hyp|, R = LCS/|ref|."""
    hyp, ref = rouge_tokens(hypothesis), rouge_tokens(reference)
    lcs = lcs_length(hyp, ref) if hyp and ref else 0
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], beta: float = 1.0) -> float:
    """Corpus ROUGE-L: the mean over reports of the best ROUGE-L F-measure against that report's references."""
    streams = _reference_streams(hypotheses, references)
    per_report = [max(rouge_l_pair(h, slot[i], beta) for slot in streams) for i, h in enumerate(hypotheses)]
    return float(np.mean(per_report))


def text_metrics(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], **bleu_options) -> dict[str, float]:
    """BLEU-1..4 and ROUGE-L of generated reports against reference reports, all in [0, 1]."""
    scores = bleu_scores(hypotheses, references, **bleu_options)
    scores["ROUGE-L"] = rouge_l(hypotheses, references)
    return scores
