"""The probing math against independent computations: sklearn's logistic
regression and metrics, and an online codelength worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from polypythias.extract import probing


def blobs(layers: int, n: int, dim: int, classes: int, seed: int, spread: float = 1.5):
    """Gaussian classes in ``dim`` dimensions, less separable in deeper layers,
    with correlated features (as hidden states have)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = np.empty((layers, n, dim))
    for layer in range(layers):
        centres = rng.normal(size=(classes, dim)) * spread / (1 + layer)
        mixing = rng.normal(size=(dim, dim)) / math.sqrt(dim) + np.eye(dim)
        x[layer] = (centres[y] + rng.normal(size=(n, dim))) @ mixing + rng.normal(size=dim) * 3
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def prepared(x: torch.Tensor) -> torch.Tensor:
    (standard,) = probing.standardise(x)
    return probing.with_intercept(standard).float()


def sklearn_probe(x: np.ndarray, y: np.ndarray, l2: float) -> LogisticRegression:
    """The same model in sklearn: the intercept is the appended constant feature,
    penalised like the rest; C = 1 / l2."""
    return LogisticRegression(C=1 / l2, fit_intercept=False, tol=1e-10, max_iter=10_000).fit(x, y)


@pytest.mark.parametrize("l2", [1.0, 10.0])
def test_probes_match_sklearn_on_every_layer_and_prefix(l2):
    x, y = blobs(layers=3, n=400, dim=12, classes=4, seed=int(l2))
    x = prepared(x)
    sizes = [13, 100, 400]
    fitter = probing.LogisticProbes(l2)
    predictor = fitter(x, y, 4, sizes)
    assert fitter.converged
    for k, size in enumerate(sizes):
        for layer in range(3):
            features = x[layer, :size].double().numpy()
            reference = sklearn_probe(features, y[:size].numpy(), l2)
            ours = predictor(k, x)[layer].exp().double().numpy()
            theirs = reference.predict_proba(x[layer].double().numpy())
            # The fit stops at max |gradient| 1e-4 (sklearn's default tol), not at
            # the exact optimum: probabilities agree to a few thousandths.
            assert np.abs(ours - theirs).max() < 5e-3, (size, layer)
            assert np.abs(ours - theirs).mean() < 5e-4, (size, layer)
            agree = (ours.argmax(1) == theirs.argmax(1)).mean()
            assert agree >= 0.99, (size, layer, agree)


def test_a_prefix_missing_a_class_still_codes_it_in_finite_bits():
    # The intercept is penalised, so a class absent from the first block keeps a
    # finite logit (with an unpenalised intercept it would run to minus infinity).
    x, y = blobs(layers=2, n=60, dim=4, classes=3, seed=3)
    order = torch.argsort((y == 2).long(), stable=True)  # all class-2 items last
    x, y = prepared(x)[:, order], y[order]
    first_two = int((y != 2).sum())
    bits, predictor = probing.online_codelength(x, y, 3, [first_two, 60], probing.LogisticProbes(1.0))
    assert torch.isfinite(bits).all()
    reference = sklearn_probe(x[0, :first_two].double().numpy(), y[:first_two].numpy(), 1.0)
    assert reference.classes_.tolist() == [0, 1]  # sklearn drops the class; we keep it
    assert (predictor(0, x[:, first_two:]).exp()[..., 2] > 1e-4).all()


def test_fits_are_deterministic():
    x, y = blobs(layers=2, n=300, dim=8, classes=5, seed=4)
    x = prepared(x)
    first = probing.LogisticProbes(3.0).fit(x, y, 5, [30, 300])
    second = probing.LogisticProbes(3.0).fit(x, y, 5, [30, 300])
    assert torch.equal(first, second)


class FrequencyFitter:
    """Predicts add-one smoothed label frequencies of the prefix, ignoring x."""

    def __call__(self, x, y, n_classes, sizes):
        tables = [
            torch.log((torch.bincount(y[:size], minlength=n_classes).double() + 1) / (size + n_classes))
            for size in sizes
        ]
        return lambda k, features: tables[k].expand(features.shape[0], features.shape[1], n_classes)


def test_online_codelength_by_hand():
    y = torch.tensor([0, 0, 1, 0, 1, 1, 0, 0])
    x = torch.zeros(2, 8, 1)  # two "layers"; the fitter ignores them
    bits, _ = probing.online_codelength(x, y, 2, [2, 4, 8], FrequencyFitter())
    # Block 1 (2 labels): uniform, 1 bit each.
    # Block 2 (labels 1, 0) coded with counts of [0, 0]: p0 = 3/4, p1 = 1/4.
    # Block 3 (labels 1, 1, 0, 0) with counts of [0, 0, 1, 0]: p0 = 4/6, p1 = 2/6.
    expected = 2 + (2 + math.log2(4 / 3)) + (2 * math.log2(3) + 2 * math.log2(1.5))
    assert expected == pytest.approx(8.754887502163468)
    assert bits.tolist() == pytest.approx([expected, expected], abs=1e-9)


def test_online_codelength_of_a_single_block_is_the_uniform_code():
    y = torch.tensor([0, 2, 1, 2, 2])
    bits, _ = probing.online_codelength(torch.zeros(1, 5, 1), y, 3, [5], FrequencyFitter())
    assert bits.item() == pytest.approx(5 * math.log2(3))
    with pytest.raises(ValueError, match="block ends"):
        probing.online_codelength(torch.zeros(1, 5, 1), y, 3, [3, 2, 5], FrequencyFitter())


def test_block_ends():
    assert probing.block_ends(2000, probing.VOITA_TITOV_FRACTIONS) == [2, 4, 8, 16, 32, 64, 125, 250, 500, 1000, 2000]
    # Small splits: fractions that round to the same end collapse; the first is >= 1.
    assert probing.block_ends(5, probing.VOITA_TITOV_FRACTIONS) == [1, 2, 5]
    assert probing.block_ends(1, probing.VOITA_TITOV_FRACTIONS) == [1]
    assert probing.block_ends(10, [0.5]) == [5, 10]


def test_standardise_uses_the_train_statistics():
    train = torch.tensor([[[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]]])  # feature 2 constant
    test = torch.tensor([[[7.0, 6.0]]])
    standard_train, standard_test = probing.standardise(train, test)
    std = math.sqrt(8 / 3)
    assert standard_train[0, :, 0].tolist() == pytest.approx([-2 / std, 0, 2 / std])
    assert standard_train[0, :, 1].tolist() == [0, 0, 0]
    assert standard_test[0, 0].tolist() == pytest.approx([4 / std, 1.0])
    assert probing.with_intercept(standard_test)[0, 0, -1].item() == 1.0


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 5, 200)  # class 5 is only ever predicted, class 6 never seen
    predicted = np.where(rng.random((3, 200)) < 0.6, gold, rng.integers(0, 7, (3, 200)))
    predicted[2] = np.where(predicted[2] == 6, 5, predicted[2])
    ours_accuracy = probing.accuracy(torch.tensor(gold), torch.tensor(predicted))
    ours_f1 = probing.macro_f1(torch.tensor(gold), torch.tensor(predicted), 7)
    for layer in range(3):
        assert ours_accuracy[layer].item() == pytest.approx(accuracy_score(gold, predicted[layer]))
        assert ours_f1[layer].item() == pytest.approx(f1_score(gold, predicted[layer], average="macro"))
