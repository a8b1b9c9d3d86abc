"""Linear probes and their minimum description length, many at once.

The ``probes`` extractor fits, for every checkpoint, one probe per task x layer on
the train split and, for the online code, one more per task x layer x block of
that split. A micro checkpoint thus needs ~100 small multinomial logistic
regressions; fitting them one by one with sklearn takes seconds. Here they are
*one* batched problem in torch: the fits are independent, so each keeps its own
L-BFGS memory, step size and stopping test, and only the matrix products are
shared. The math, in the notation of the functions below:

- Features are standardised with the train split's mean and standard deviation
  (a constant feature becomes 0), then a constant 1 is appended for the intercept.
- A probe with weights ``W`` (features+1 x classes) minimises
  ``sum_i CE(y_i, softmax(x_i W)) + l2/2 * ||W||^2`` over its n training items:
  sklearn's ``LogisticRegression(C=1/l2, fit_intercept=False)`` on the same
  (standardised, 1-appended) features. The intercept is penalised like every other
  weight, deliberately: a block of the online code may lack a class, and an
  unpenalised intercept would then run off to minus infinity and give the next
  block's items of that class an infinite codelength.
- The L2 penalty is per fit, not per item (sklearn's C): a probe trained on the
  first 2 items of the online code is held close to uniform, one trained on the
  whole split barely.
- Online codelength (Voita & Titov 2020, "Information-Theoretic Probing with
  Minimum Description Length"): with block ends ``t_1 < … < t_S = n``, the first
  ``t_1`` labels are sent with the uniform code (``log2 K`` bits each) and block
  ``(t_k, t_k+1]`` with the probe trained on the first ``t_k`` items:
  ``t_1 log2 K - sum_k sum_{i in block k+1} log2 p_k(y_i | x_i)``. Compression is
  the uniform code's ``n log2 K`` over that.

The fits run in float32 (the stopping tolerance, ``GRADIENT_TOLERANCE``, is far
above float32 rounding; the Armijo test allows for it) on the device the features
are on. Nothing is random: results are identical run to run on the same device
with the same thread count.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

#: Voita & Titov's block ends, as fractions of the train split: 0.1 %, 0.2 %, 0.4 %,
#: 0.8 %, 1.6 %, 3.2 %, 6.25 %, 12.5 %, 25 %, 50 %, 100 %.
VOITA_TITOV_FRACTIONS: tuple[float, ...] = (
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.0625,
    0.125,
    0.25,
    0.5,
    1.0,
)
#: A fit stops when the largest absolute entry of its gradient (of the objective
#: divided by its number of items, as sklearn's lbfgs) is below this.
GRADIENT_TOLERANCE = 1e-4
MAX_ITERATIONS = 500
HISTORY = 10


class Predictor(Protocol):
    """Fitted probes, one per block end: ``predictor(k, x)`` gives the natural-log
    class probabilities, shape (layers, items, classes), of the probe trained on
    the first ``sizes[k]`` items, for features ``x`` of shape (layers, items, dim)."""

    def __call__(self, k: int, x: torch.Tensor) -> torch.Tensor: ...


#: ``fit(x, y, n_classes, sizes) -> Predictor``: trains one probe per layer on each
#: prefix ``x[:, :size]`` of the (layers, items, dim) features.
Fitter = Callable[[torch.Tensor, torch.Tensor, int, Sequence[int]], Predictor]


# -- features ------------------------------------------------------------------


def standardise(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Features (layers, items, dim) scaled with the train split's per-layer mean and
    population standard deviation, as float64; a feature constant on train maps to 0."""
    train = train.double()
    mean = train.mean(1, keepdim=True)
    std = train.std(1, unbiased=False, keepdim=True)
    std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
    return tuple((x.double() - mean) / std for x in (train, *others))


def with_intercept(x: torch.Tensor) -> torch.Tensor:
    """(…, items, dim) → (…, items, dim + 1): a constant 1 appended."""
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)


# -- the online code ----------------------------------------------------------------


def block_ends(n: int, fractions: Sequence[float]) -> list[int]:
    """Block ends ``t_1 < … < t_S = n`` for ``n`` items: each fraction of ``n``,
    rounded (half to even, as Python's ``round``), at least 1, duplicates dropped
    (small splits get fewer blocks)."""
    if n < 1:
        raise ValueError(f"need at least one item, got {n}")
    return sorted({min(n, max(1, round(f * n))) for f in fractions} | {n})


def online_codelength(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    ends: Sequence[int],
    fit: Fitter,
) -> tuple[torch.Tensor, Predictor]:
    """Online codelength in bits of labels ``y`` (items,) given features ``x``
    (layers, items, dim), one per layer; and the fitted predictor, whose last probe
    (``k = len(ends) - 1``) is trained on all items.

    ``fit`` is called once, with every block end, so that it can fit them together.
    """
    ends = list(ends)
    if not ends or ends[-1] != y.shape[0] or any(a >= b for a, b in itertools.pairwise(ends)):
        raise ValueError(f"block ends must increase to the number of items ({y.shape[0]}), got {ends}")
    predictor = fit(x, y, n_classes, ends)
    bits = torch.full((x.shape[0],), ends[0] * math.log2(n_classes), dtype=torch.float64, device=x.device)
    for k in range(len(ends) - 1):
        start, stop = ends[k], ends[k + 1]
        logp = predictor(k, x[:, start:stop])
        gold = y[start:stop].view(1, -1, 1).expand(logp.shape[0], -1, 1)
        bits -= logp.gather(-1, gold).squeeze(-1).double().sum(-1) / math.log(2)
    return bits, predictor


# -- logistic regression -----------------------------------------------------------


class LogisticProbes:
    """Multinomial L2 logistic regressions on the prefixes of a train split.

    ``LogisticProbes(l2)`` is a ``Fitter``: calling it fits one probe per layer and
    prefix size (all at once) and returns the fitted predictor. ``x`` must already
    be standardised and carry the intercept column (``with_intercept``).
    """

    def __init__(
        self,
        l2: float,
        tolerance: float = GRADIENT_TOLERANCE,
        max_iterations: int = MAX_ITERATIONS,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if l2 <= 0:
            raise ValueError(f"l2 must be > 0, got {l2}")
        self.l2, self.tolerance, self.max_iterations, self.dtype = l2, tolerance, max_iterations, dtype
        #: After a fit: iterations used, and whether every probe met the tolerance.
        self.iterations = 0
        self.converged = False

    def __call__(self, x: torch.Tensor, y: torch.Tensor, n_classes: int, sizes: Sequence[int]) -> LinearPredictor:
        return LinearPredictor(self.fit(x, y, n_classes, sizes))

    def fit(self, x: torch.Tensor, y: torch.Tensor, n_classes: int, sizes: Sequence[int]) -> torch.Tensor:
        """Weights (len(sizes), layers, dim, n_classes); probe k is trained on the
        first ``sizes[k]`` items of every layer."""
        x = x.to(self.dtype).contiguous()
        layers, n, dim = x.shape
        sizes = list(sizes)
        if not sizes or min(sizes) < 1 or max(sizes) > n:
            raise ValueError(f"prefix sizes must be in 1…{n}, got {sizes}")
        xt = x.transpose(1, 2).contiguous()  # (layers, dim, items): fast X^T R
        onehot = torch.nn.functional.one_hot(y.long(), n_classes).to(x.dtype)
        gold = y.long().view(1, -1, 1).expand(layers, -1, 1)
        n_fits = len(sizes)

        def evaluate(w: torch.Tensor, need: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Objective / items and its gradient for each (fit, layer); fits none
            of whose layers is in ``need`` are skipped (zeros)."""
            w = w.view(n_fits, layers, dim, n_classes)
            value = w.new_zeros(n_fits, layers)
            grad = torch.zeros_like(w)
            need = need.view(n_fits, layers)
            for k, size in enumerate(sizes):
                if not bool(need[k].any()):
                    continue
                logits = torch.bmm(x[:, :size], w[k])
                lse = torch.logsumexp(logits, dim=-1, keepdim=True)
                value[k] = (lse.squeeze(-1) - logits.gather(-1, gold[:, :size]).squeeze(-1)).sum(-1)
                value[k] += 0.5 * self.l2 * w[k].square().sum((1, 2))
                residual = torch.exp(logits - lse) - onehot[:size]
                grad[k] = torch.baddbmm(w[k], xt[:, :, :size], residual, beta=self.l2)
                value[k] /= size
                grad[k] /= size
            return value.view(-1), grad.view(n_fits * layers, -1)

        start = x.new_zeros(n_fits * layers, dim * n_classes)
        weights, self.iterations, self.converged = _lbfgs(evaluate, start, self.tolerance, self.max_iterations)
        return weights.view(n_fits, layers, dim, n_classes)


class LinearPredictor:
    """A ``Predictor`` from weights (probes, layers, dim, classes)."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.weights = weights

    def __call__(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(torch.bmm(x.to(self.weights.dtype), self.weights[k]), dim=-1)


def _lbfgs(
    evaluate: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    start: torch.Tensor,
    tolerance: float,
    max_iterations: int,
) -> tuple[torch.Tensor, int, bool]:
    """Minimise P independent smooth strongly convex functions at once.

    ``evaluate(w, need)`` returns the values (P,) and gradients (P, d) at ``w``
    (P, d), and may skip the problems not in ``need`` (P,) bool. Each problem has
    its own L-BFGS memory, step (backtracking from 1 with the Armijo test) and
    stopping test (max |gradient| <= tolerance); a problem that has stopped keeps
    its weights. Returns the weights, the iterations used and whether all
    problems met the tolerance.
    """
    w = start.clone()
    everything = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
    value, grad = evaluate(w, everything)
    active = grad.abs().amax(1) > tolerance
    history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (s, y, 1 / s'y)
    gamma = torch.ones_like(value)  # initial inverse-Hessian scale, s'y / y'y of the newest pair
    iteration = 0
    while bool(active.any()) and iteration < max_iterations:
        iteration += 1
        direction = _two_loop(grad, history, gamma).neg_()
        if not history:
            # First step: unit length, so the line search starts at a sane scale.
            direction /= grad.norm(dim=1, keepdim=True).clamp_min(1.0)
        direction[~active] = 0
        slope = (grad * direction).sum(1)
        step = torch.ones_like(value)
        pending = active.clone()
        new_w, new_value, new_grad = w, value.clone(), grad.clone()
        slack = 8 * torch.finfo(value.dtype).eps * value.abs()  # rounding in the values
        for _ in range(20):
            trial = torch.addcmul(w, step[:, None], direction)
            trial_value, trial_grad = evaluate(trial, pending)
            accept = pending & (trial_value <= value + 1e-4 * step * slope + slack)
            new_w = torch.where(accept[:, None], trial, new_w)
            new_value = torch.where(accept, trial_value, new_value)
            new_grad = torch.where(accept[:, None], trial_grad, new_grad)
            pending &= ~accept
            if not bool(pending.any()):
                break
            # Minimum of the quadratic through f(0), f'(0) and f(step), kept within
            # [step / 10, step / 2]: usually one more evaluation suffices.
            curvature = trial_value - value - step * slope
            guess = -slope * step * step / (2 * curvature.clamp_min(1e-30))
            step = torch.where(pending, torch.minimum(torch.maximum(guess, step / 10), step / 2), step)
        # A problem whose line search found no decrease is as good as rounding allows.
        active &= ~pending
        s, y = new_w - w, new_grad - grad
        sy, yy = (s * y).sum(1), (y * y).sum(1)
        curved = sy > 0  # always, for a strictly convex problem, but for rounding
        rho = torch.where(curved, 1.0 / torch.where(curved, sy, torch.ones_like(sy)), torch.zeros_like(sy))
        gamma = torch.where(curved & (yy > 0), sy / yy.clamp_min(1e-30), gamma)
        history.append((s, y, rho))
        if len(history) > HISTORY:
            del history[0]
        w, value, grad = new_w, new_value, new_grad
        active &= grad.abs().amax(1) > tolerance
    converged = bool((grad.abs().amax(1) <= tolerance).all())
    return w, iteration, converged


def _two_loop(
    grad: torch.Tensor, history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], gamma: torch.Tensor
) -> torch.Tensor:
    """The L-BFGS inverse-Hessian estimate times ``grad``, per problem (row)."""
    q = grad.clone()
    alphas = []
    for s, y, rho in reversed(history):
        alpha = rho * (s * q).sum(1)
        q.sub_(alpha[:, None] * y)
        alphas.append(alpha)
    q.mul_(gamma[:, None])
    for (s, y, rho), alpha in zip(history, reversed(alphas), strict=True):
        beta = rho * (y * q).sum(1)
        q.add_((alpha - beta)[:, None] * s)
    return q


# -- metrics -------------------------------------------------------------------------


def accuracy(gold: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """Fraction correct along the last dimension."""
    return (gold == predicted).double().mean(-1)


def macro_f1(gold: torch.Tensor, predicted: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Unweighted mean F1 over the classes present in gold or predicted (as sklearn's
    ``f1_score(average='macro')``), along the last dimension. ``predicted`` may have
    leading dimensions (e.g. layers); ``gold`` broadcasts."""
    gold = gold.expand_as(predicted)
    classes = torch.arange(n_classes, device=gold.device).view(-1, *([1] * gold.dim()))
    is_gold, is_predicted = gold == classes, predicted == classes
    true_positive = (is_gold & is_predicted).sum(-1).double()
    support = is_gold.sum(-1).double() + is_predicted.sum(-1).double()
    present = support > 0
    f1 = torch.where(present, 2 * true_positive / support.clamp_min(1), torch.zeros_like(support))
    return f1.sum(0) / present.sum(0).clamp_min(1)
