"""Training maps (Hu et al., 2023, "Latent State Models of Training Dynamics"), fitted
for the dbt model int_training_map_states_fitted.

Per suite × model_size, a Gaussian HMM with diagonal covariances (hmmlearn) is fitted
jointly on the runs' sequences of training-map features from fct_weight_features,
at every *horizon*: the prefix of the size's checkpoint steps up to horizon_step, so
that what a row says about step t at horizon t uses no later checkpoint.

At one horizon:

1. Features: the FEATURES columns of the rows with step <= horizon_step. Each is
   z-scored within its run over that prefix (population std); a feature constant in
   the run (std <= 1e-12 x max(1, |mean|)) is 0 there, and a missing value is 0 (the
   run's mean). A feature that is then 0 everywhere carries nothing and is left out.
2. Model selection: for n = 1 … training_map_max_states, unless the n-state model
   has more free parameters than the prefix has values (hmmlearn's own count,
   (n-1) + n(n-1) + 2nd against rows × d; hmmlearn warns that such a fit is
   degenerate), training_map_restarts fits with random_state =
   training_map_random_state + r for restart r (one fit for n = 1, which does
   not depend on it). Each is hmmlearn's GaussianHMM with
   n_iter=100 and implementation="scaling" (about twice as fast as "log"; redone
   with "log" where it underflows), every other setting its default (tol=0.01). The
   restart with the highest log-likelihood is kept (ties: the earlier restart); the
   n with the lowest model.bic(X, lengths) wins (ties: fewer states). The runs are
   the sequences, in seed order (lengths=).
3. States: the Viterbi path (model.predict), with the posterior probability of the
   Viterbi state at each checkpoint (model.predict_proba). Labels are canonical:
   the states the path visits, ordered by the mean checkpoint index of their
   checkpoints (the index of the step among the size's distinct steps, 0-based;
   ties: hmmlearn's label), then the states it never visits, by hmmlearn's label.
   So labels follow the order of training, and a rebuild gives the same labels.
4. Score: the first principal component of the z-scored features (centred over
   the prefix's rows, by SVD), its sign chosen so that it correlates positively with
   the checkpoint index (if the correlation is 0: its largest loading is positive).

Horizons: every distinct step of the size from the 3rd on (a size with fewer than
three steps gets no map). When a size has more horizons than
training_map_max_horizons (0 = no cap), only that many are fitted: evenly spaced
over the horizons by index (rounded), the last always included.

Reuse: every row carries its horizon's input_fingerprint, a digest of the prefix's
features (to 12 significant digits, so that the last bits of a parallel sum in
DuckDB do not count), the fit settings, this file and the versions of the fitting
libraries. A build keeps the rows of a horizon whose fingerprint the table already
holds and fits only the others, so adding the next checkpoints refits only the
horizons that reach them. Fits run in worker processes, one per core, when there are enough of them to
pay for starting the workers.
"""

import hashlib
import logging
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

FEATURES = (
    "l1_mean",
    "l2_mean",
    "spectral_mean",
    "code_sparsity_mean",
    "sv_mean_mean",
    "sv_var_mean",
    "trace_mean",
    "computational_sparsity_mean",
    "weights_mean",
    "weights_median",
    "weights_var",
    "biases_mean",
    "biases_median",
    "biases_var",
)
N_ITER = 100
#: A run's feature is constant when its std is at most this × max(1, |mean|).
CONSTANT = 1e-12
MIN_STEPS = 3

#: The table's columns and types (DuckDB reads the Arrow types exactly).
SCHEMA = pa.schema(
    [
        ("suite", pa.string()),
        ("model_size", pa.string()),
        ("map_source", pa.string()),
        ("horizon_step", pa.int64()),
        ("seed", pa.int64()),
        ("step", pa.int64()),
        ("checkpoint_index", pa.int64()),
        ("state", pa.int32()),
        ("state_probability", pa.float64()),
        ("score", pa.float64()),
        ("n_states", pa.int32()),
        ("n_features", pa.int32()),
        ("n_runs", pa.int32()),
        ("n_observations", pa.int64()),
        ("log_likelihood", pa.float64()),
        ("bic", pa.float64()),
        ("input_fingerprint", pa.string()),
    ]
)
log = logging.getLogger(__name__)
#: Fewer fits than this run in the build's own process: starting a worker (numpy,
#: pandas, hmmlearn, scikit-learn) costs about a second.
MIN_FITS_FOR_WORKERS = 8


@dataclass(frozen=True, slots=True)
class Settings:
    max_states: int
    restarts: int
    random_state: int
    max_horizons: int

    def digest(self) -> str:
        """What a fit depends on besides its data (max_horizons only picks horizons)."""
        versions = [metadata.version(p) for p in ("hmmlearn", "scikit-learn", "numpy")]
        return hashlib.sha256(
            repr((self.max_states, self.restarts, self.random_state, N_ITER, versions)).encode()
            + Path(__file__).read_bytes()
        ).hexdigest()


def fit_maps(features, settings, previous=None, workers=None):
    """The training maps of every suite × model_size of ``features``
    (fct_weight_features as a DataFrame), as a SCHEMA table.

    A horizon whose fingerprint is among ``previous`` (the rows of an earlier build)
    keeps those rows instead of being refitted. ``workers``: processes for the fits
    (default: one per core).
    """
    settings_digest = settings.digest()
    kept = {}
    if previous is not None and "input_fingerprint" in previous.columns:
        for key, rows in previous.groupby(["suite", "model_size", "horizon_step", "input_fingerprint"], sort=False):
            kept[key] = rows[list(SCHEMA.names)]
    plan, fits = [], []  # per horizon: the rows kept, or the key of a fit to make
    for (suite, model_size), size in features.groupby(["suite", "model_size"], sort=True):
        size = size.sort_values(["seed", "step"], kind="stable").reset_index(drop=True)
        steps = np.sort(size["step"].unique())
        index = {int(step): i for i, step in enumerate(steps)}
        horizons = [int(h) for h in horizons_of(steps, settings.max_horizons)]
        for horizon, fingerprint in _fingerprints(size, horizons, settings_digest).items():
            key = (suite, model_size, horizon, fingerprint)
            if key in kept:
                plan.append(kept[key])
            else:
                plan.append(key)
                fits.append((key, size[size["step"] <= horizon].reset_index(drop=True), index))
    log.info("training maps: %d horizons fitted, %d kept from the last build", len(fits), len(plan) - len(fits))
    fitted = _fit_all(fits, settings, workers)
    frames = [item if isinstance(item, pd.DataFrame) else fitted[item] for item in plan]
    if not frames:
        return SCHEMA.empty_table()
    table = pd.concat(frames, ignore_index=True)[SCHEMA.names]
    return pa.Table.from_pandas(table, schema=SCHEMA, preserve_index=False)


def _fingerprints(size, horizons, settings_digest):
    """horizon → digest of the rows with step ≤ horizon (``size`` sorted by seed, step)."""
    values = size[list(FEATURES)].to_numpy(dtype=float, na_value=np.nan)
    lines = [
        f"{seed},{step}:" + ",".join(f"{v:.12g}" for v in row)
        for seed, step, row in zip(size["seed"], size["step"], values, strict=True)
    ]
    steps = size["step"].to_numpy()
    out = {}
    for horizon in horizons:
        digest = hashlib.sha256(settings_digest.encode())
        for line in (line for line, step in zip(lines, steps, strict=True) if step <= horizon):
            digest.update(line.encode() + b"\n")
        out[horizon] = digest.hexdigest()
    return out


def _fit_all(fits, settings, workers):
    """key → the fitted rows of each (key, prefix, index); largest prefixes first."""
    fits = sorted(fits, key=lambda fit: -len(fit[1]))
    arguments = [(prefix, index, settings.max_states, settings.restarts, settings.random_state)
                 for _, prefix, index in fits]  # fmt: skip
    workers = min(workers or os.cpu_count() or 1, len(fits))
    if workers > 1 and len(fits) >= MIN_FITS_FOR_WORKERS:
        # Spawn, not fork: the build's process runs DuckDB's threads.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            results = list(pool.map(_fit_horizon_star, arguments))
    else:
        results = [fit_horizon(*args) for args in arguments]
    fitted = {}
    for (key, _, _), rows in zip(fits, results, strict=True):
        suite, model_size, horizon, fingerprint = key
        rows.insert(0, "suite", suite)
        rows.insert(1, "model_size", model_size)
        rows.insert(2, "map_source", "hmm")
        rows.insert(3, "horizon_step", horizon)
        rows["input_fingerprint"] = fingerprint
        fitted[key] = rows
    return fitted


def _fit_horizon_star(args):
    return fit_horizon(*args)


def horizons_of(steps, max_horizons):
    """The horizon steps of a size whose sorted distinct steps are ``steps``."""
    horizons = list(steps[MIN_STEPS - 1 :])
    if max_horizons and len(horizons) > max_horizons:
        if max_horizons == 1:
            return horizons[-1:]
        picks = np.unique(np.rint(np.linspace(0, len(horizons) - 1, max_horizons)).astype(int))
        horizons = [horizons[i] for i in picks]
    return horizons


def zscored(prefix):
    """The prefix's features z-scored within each run, and the columns kept."""
    values = prefix[list(FEATURES)].to_numpy(dtype=float, na_value=np.nan)
    z = np.zeros_like(values)
    for rows in prefix.groupby("seed", sort=True).indices.values():
        block = values[rows]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-null columns
            mean = np.nanmean(block, axis=0)
            std = np.nanstd(block, axis=0)
        varies = np.isfinite(std) & (std > CONSTANT * np.maximum(1.0, np.abs(np.nan_to_num(mean))))
        scaled = np.where(varies, (block - mean) / np.where(varies, std, 1.0), 0.0)
        z[rows] = np.nan_to_num(scaled, nan=0.0)
    keep = np.any(z != 0.0, axis=0)
    return z[:, keep], keep


def n_free_parameters(n_states, n_features):
    return (n_states - 1) + n_states * (n_states - 1) + 2 * n_states * n_features


def select_model(x, lengths, max_states, restarts, random_state):
    """The BIC-chosen GaussianHMM (best log-likelihood restart per candidate)."""
    from hmmlearn.hmm import GaussianHMM

    chosen, chosen_bic, chosen_ll = None, np.inf, None
    for n_states in range(1, max_states + 1):
        if n_states > 1 and n_free_parameters(n_states, x.shape[1]) > x.size:
            break  # more states only have more parameters
        best, best_ll = None, -np.inf
        # A 1-state fit does not depend on the random state: once is enough.
        for restart in range(restarts if n_states > 1 else 1):
            hmm, ll = None, -np.inf
            # Scaled forward-backward is about twice as fast as the log-space one;
            # where it underflows (ValueError), the restart is redone in log space.
            for implementation in ("scaling", "log"):
                candidate = GaussianHMM(
                    n_components=n_states,
                    covariance_type="diag",
                    n_iter=N_ITER,
                    random_state=random_state + restart,
                    implementation=implementation,
                )
                try:
                    candidate.fit(x, lengths)
                    hmm, ll = candidate, candidate.score(x, lengths)
                    break
                except (ValueError, np.linalg.LinAlgError):
                    continue  # underflow, or a degenerate restart (a state without data)
            if hmm is not None and np.isfinite(ll) and ll > best_ll:
                best, best_ll = hmm, ll
        if best is None:
            continue
        bic = best.bic(x, lengths)
        if bic < chosen_bic:
            chosen, chosen_bic, chosen_ll = best, bic, best_ll
    return chosen, chosen_bic, chosen_ll


def canonical_labels(states, checkpoint_index, n_states):
    """Map hmmlearn's labels to canonical ones (see the module's docstring)."""
    visited = sorted(
        np.unique(states),
        key=lambda k: (checkpoint_index[states == k].mean(), k),
    )
    order = list(visited) + [k for k in range(n_states) if k not in set(visited)]
    mapping = np.empty(n_states, dtype=int)
    mapping[order] = np.arange(n_states)
    return mapping


def first_component(x, checkpoint_index):
    """PC1 of x (centred), signed to rise with the checkpoint index."""
    if x.shape[1] == 0:
        return np.zeros(x.shape[0])
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    loading = vt[0]
    score = centred @ loading
    trend = np.dot(score - score.mean(), checkpoint_index - checkpoint_index.mean())
    if trend < 0 or (trend == 0 and loading[np.argmax(np.abs(loading))] < 0):
        score = -score
    return score


def fit_horizon(prefix, index, max_states, restarts, random_state):
    x, _ = zscored(prefix)
    lengths = prefix.groupby("seed", sort=True).size().to_numpy()
    checkpoint_index = prefix["step"].map(index).to_numpy(dtype=float)
    n_rows = len(prefix)
    if x.shape[1] == 0:
        states = np.zeros(n_rows, dtype=int)
        probability = np.ones(n_rows)
        n_states, bic, ll = 1, np.nan, np.nan
    else:
        import hmmlearn.hmm  # noqa: F401 - loads sklearn's OpenMP runtime: see below
        from threadpoolctl import threadpool_limits

        logging.getLogger("hmmlearn").setLevel(logging.ERROR)
        # One thread: the data are small (threads cost more than they save) and the
        # build shares the machine with dbt's other threads. threadpool_limits only
        # limits the libraries already loaded, so hmmlearn (and with it sklearn's
        # OpenMP k-means, which initialises every fit) is imported first: unlimited,
        # its spinning threads made the first horizon 15x slower on 2 busy cores.
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore")
            hmm, bic, ll = select_model(x, lengths, max_states, restarts, random_state)
            if hmm is None:  # pragma: no cover - a 1-state fit of finite data cannot fail
                raise RuntimeError("int_training_map_states_fitted: no HMM could be fitted")
            try:
                raw = hmm.predict(x, lengths)
                posterior = hmm.predict_proba(x, lengths)
            except ValueError:  # scaled forward-backward underflowed
                hmm.implementation = "log"
                raw = hmm.predict(x, lengths)
                posterior = hmm.predict_proba(x, lengths)
        n_states = hmm.n_components
        mapping = canonical_labels(raw, checkpoint_index, n_states)
        states = mapping[raw]
        probability = posterior[np.arange(n_rows), raw]
    return pd.DataFrame(
        {
            "seed": prefix["seed"].to_numpy(),
            "step": prefix["step"].to_numpy(),
            "checkpoint_index": checkpoint_index.astype(int),
            "state": states,
            "state_probability": probability,
            "score": first_component(x, checkpoint_index),
            "n_states": n_states,
            "n_features": x.shape[1],
            "n_runs": len(lengths),
            "n_observations": n_rows,
            "log_likelihood": ll,
            "bic": bic,
        }
    )
