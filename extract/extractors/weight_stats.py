"""Weight statistics per matrix: the training-map features of Hu et al. (2023).

Definitions (W one weight matrix, σ its singular values):

- ``l1`` = Σ|w| (entrywise), ``l2`` = √Σw² (Frobenius), ``spectral`` = max σ;
- ``trace`` = Σ diag(W), square matrices only;
- ``code_sparsity`` = l1 / l2, ``computational_sparsity`` = trace / spectral;
- ``sv_mean``, ``sv_var`` = mean and population variance of σ;
- ``mean``, ``var`` (population) of the matrix's values.

GPT-NeoX fuses the query, key and value projections into one
``query_key_value`` matrix laid out per head as [q | k | v]; it is split into
three hidden × hidden matrices. Two extra rows per checkpoint, kinds
``all_weights`` and ``all_biases``, give mean, median and variance over every
parameter whose name ends in ``weight`` / ``bias`` (layer norms included);
``median`` is computed on these two rows only.
``weight_hash`` is a SHA-256 digest (first 128 bits) of the tensor's dtype, shape and bytes, so
identical weights at different steps or runs can be found.

Diverged checkpoints (``runs_on_diverged``): ``nonfinite`` counts a row's NaN and
inf values. A row with any has every statistic null (never NaN: they are
undefined) and no value sample; its shape, kind and hash are still recorded.
Finite rows cost nothing extra: Σ|w| in float64 is finite exactly when every
value is (float32 values cannot overflow it), so the count is only taken where
it is not.

``value_sample`` holds a fixed sample of each matrix's values: the values at
``SAMPLE_SIZE`` distinct positions (all of them in a smaller matrix) drawn uniformly
from a hash of the tensor's name and shape alone (``sample_positions``), so every
checkpoint and run of a model shape is sampled at the same positions. The squared
distance between two checkpoints' weights is then estimated from the lake alone,
without bias: Σ over matrices of numel / m · Σ (a − b)² over the m sampled values.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import TYPE_CHECKING

import pyarrow as pa

from polypythias.extract.extractors import Extractor, ExtractorOptions, register
from polypythias.warehouse.schemas import WEIGHT_STATS

if TYPE_CHECKING:
    import torch

    from polypythias.extract.suite import Suite

# Parameter name (after any "gpt_neox." prefix) → kind.
_KINDS = (
    (re.compile(r"embed_in\.weight$"), "embed"),
    (re.compile(r"(?:embed_out|lm_head)\.weight$"), "unembed"),
    (re.compile(r"layers\.(\d+)\.attention\.query_key_value\.weight$"), "qkv"),
    (re.compile(r"layers\.(\d+)\.attention\.dense\.weight$"), "attn_out"),
    (re.compile(r"layers\.(\d+)\.mlp\.dense_h_to_4h\.weight$"), "ffn_in"),
    (re.compile(r"layers\.(\d+)\.mlp\.dense_4h_to_h\.weight$"), "ffn_out"),
)


#: Most values stacked for one batch of matrix statistics (float64 working copy: 32 MiB).
_STACK_ELEMENTS = 1 << 22

#: Values sampled per matrix for the distance estimates of checkpoint integrity.
SAMPLE_SIZE = 64


def classify(name: str) -> tuple[str, int | None] | None:
    """(kind, layer) of a weight matrix, or None for parameters that are not one."""
    for pattern, kind in _KINDS:
        match = pattern.search(name)
        if match:
            return kind, int(match.group(1)) if match.groups() else None
    return None


def split_qkv(weight: torch.Tensor, num_heads: int) -> dict[str, torch.Tensor]:
    """Split GPT-NeoX's fused [3·hidden, hidden] projection into q, k and v."""
    hidden = weight.shape[1]
    per_head = weight.reshape(num_heads, 3, hidden // num_heads, hidden)
    return {part: per_head[:, i].reshape(hidden, hidden) for i, part in enumerate("qkv")}


def tensor_hash(tensor: torch.Tensor) -> str:
    import torch

    data = tensor.detach().contiguous().cpu()
    digest = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
    digest.update(data.view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


def sample_positions(tensor_name: str, shape: tuple[int, ...], size: int = SAMPLE_SIZE) -> list[int]:
    """Flat (row-major) positions of a matrix's value sample, ascending: ``size``
    distinct positions drawn uniformly, or every position of a smaller matrix.

    They depend on the tensor's name and shape only, through a BLAKE2b counter
    stream (not Python's salted ``hash``, not a library's random generator whose
    stream may change between versions), so they are the same in every process.
    """
    numel = math.prod(shape)
    if numel <= size:
        return list(range(numel))
    key = f"{tensor_name}|{'x'.join(str(n) for n in shape)}|".encode()
    chosen: set[int] = set()
    counter = 0
    while len(chosen) < size:
        digest = hashlib.blake2b(key + counter.to_bytes(8, "little"), digest_size=8).digest()
        # 64 random bits modulo numel: the bias is below numel / 2**64.
        chosen.add(int.from_bytes(digest, "little") % numel)
        counter += 1
    return sorted(chosen)


def median(values: torch.Tensor) -> float:
    """The exact median as numpy defines it (mean of the two middle values when even).

    Large tensors are bracketed first: a sorted random sample gives bounds that
    hold the middle ranks with overwhelming probability; counting the values below
    the lower bound and selecting (not sorting) the middle ranks among the few
    values inside it is a few cheap passes instead of a full selection. If the
    bracket misses, it falls back to a full selection.
    """
    import torch

    flat = values.reshape(-1)
    n = flat.numel()
    middle = [(n - 1) // 2, n // 2]  # 0-based ranks of the middle value(s)
    if n > 100_000:
        generator = torch.Generator(device=flat.device).manual_seed(0)
        sample = flat[torch.randint(n, (8192,), generator=generator, device=flat.device)].sort().values
        low, high = sample[4096 - 256], sample[4096 + 256]
        below = int((flat < low).sum())
        inside = flat[(flat >= low) & (flat <= high)]
        ranks = [r - below for r in middle]
        if 0 <= ranks[0] and ranks[1] < inside.numel():
            return _middle(inside, ranks)
    return _middle(flat, middle)


def _middle(flat: torch.Tensor, ranks: list[int]) -> float:
    """Mean of the values of 0-based ranks ``ranks`` (equal, or adjacent) in ``flat``."""
    first = flat.kthvalue(ranks[0] + 1).values
    if ranks[1] == ranks[0]:
        second = first
    elif int((flat <= first).sum()) > ranks[1]:
        second = first  # ties: the next rank holds the same value
    else:
        greater = flat[flat > first]  # empty only when the rest are NaN
        second = greater.min() if greater.numel() else flat.kthvalue(ranks[1] + 1).values
    return float((first.double() + second.double()) / 2)


def distribution(values: torch.Tensor) -> dict[str, float | int | None]:
    """Mean, median and population variance of the values, and how many are NaN or
    inf (then the three are null)."""
    flat = values.reshape(-1).double()
    mean, var = _mean_var(flat)
    if not math.isfinite(float(mean)):  # the mean of float64 values overflows only through NaN or inf
        return {"mean": None, "median": None, "var": None, "nonfinite": _count_nonfinite(flat)}
    return {
        "mean": float(mean),
        "median": median(values.reshape(-1).float()),
        "var": float(var),
        "nonfinite": 0,
    }


def _count_nonfinite(values: torch.Tensor) -> int:
    import torch

    return int((~torch.isfinite(values)).sum())


def _mean_var(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance along the last dimension, in two passes (the
    centred sum of squares): as exact as torch's ``var`` and several times faster
    on CPU, where ``var`` runs Welford's update value by value."""
    import torch

    mean = values.mean(-1, keepdim=True)
    var = torch.linalg.vector_norm(values - mean, dim=-1).square() / values.shape[-1]
    return mean.squeeze(-1), var


def _combine(parts: list[tuple[int, float, float]]) -> dict[str, float]:
    """Mean and population variance of the union of parts given as (count, mean, var)."""
    n = sum(count for count, _, _ in parts)
    mean = sum(count * m for count, m, _ in parts) / n
    var = sum(count * (v + (m - mean) ** 2) for count, m, v in parts) / n
    return {"mean": mean, "var": var}


def singular_values(weight: torch.Tensor) -> torch.Tensor:
    """σ of a matrix, descending, from the eigenvalues of its smaller Gram matrix.

    In float32 the σ agree with a float64 SVD to ~2e-5 of the largest σ (their
    mean and variance to ~1e-6 relative) at a third of the cost of an SVD.
    """
    return _singular_values(weight.unsqueeze(0))[0]


def _singular_values(weights: torch.Tensor) -> torch.Tensor:
    """``singular_values`` of each matrix of a [batch, rows, cols] stack."""
    import torch

    w = weights.float()
    gram = w @ w.mT if w.shape[1] <= w.shape[2] else w.mT @ w
    eigenvalues = torch.stack([torch.linalg.eigvalsh(g) for g in gram])
    return eigenvalues.clamp(min=0).sqrt().flip(-1).double()


def matrix_stats(weight: torch.Tensor) -> dict[str, float | None]:
    return batch_matrix_stats(weight.unsqueeze(0))[0]


def batch_matrix_stats(weights: torch.Tensor) -> list[dict[str, float | None]]:
    """``matrix_stats`` of each matrix of a [batch, rows, cols] stack of equal shapes.

    One tensor operation per statistic for the whole stack: on small models the
    cost of a checkpoint's weight statistics is mostly per-operation overhead.
    """
    import torch

    weights = weights.detach()
    w = weights.double()
    flat = w.reshape(w.shape[0], -1)
    l1 = flat.abs().sum(-1)
    # Finite exactly when every value is; only then are the statistics defined.
    finite = torch.isfinite(l1)
    nonfinite = [0] * w.shape[0]
    if not bool(finite.all()):
        nonfinite = (~torch.isfinite(flat)).sum(-1).tolist()
        # Zeros in their place, so that no NaN reaches the eigensolver (it may fail
        # on them); their statistics are nulled below.
        keep = finite[:, None, None]
        weights = torch.where(keep, weights, weights.new_zeros(()))
        w = torch.where(keep, w, 0.0)
        flat = w.reshape(w.shape[0], -1)
    sv = _singular_values(weights)
    mean, var = _mean_var(flat)
    sv_mean, sv_var = _mean_var(sv)
    stats = {
        "l1": l1,
        "l2": torch.linalg.vector_norm(flat, dim=-1),
        "spectral": sv[:, 0],
        "sv_mean": sv_mean,
        "sv_var": sv_var,
        "mean": mean,
        "var": var,
    }
    if w.shape[1] == w.shape[2]:
        stats["trace"] = w.diagonal(dim1=1, dim2=2).sum(-1)
    columns = {name: values.tolist() for name, values in stats.items()}
    rows = []
    for i in range(w.shape[0]):
        if nonfinite[i]:
            rows.append({**dict.fromkeys(_MATRIX_STATS), "nonfinite": nonfinite[i]})
            continue
        row = {name: values[i] for name, values in columns.items()}
        l1, l2, spectral = row["l1"], row["l2"], row["spectral"]
        trace = row.get("trace")
        rows.append(
            {
                "l1": l1,
                "l2": l2,
                "trace": trace,
                "spectral": spectral,
                "code_sparsity": l1 / l2 if l2 else None,
                "computational_sparsity": trace / spectral if trace is not None and spectral else None,
                "sv_mean": row["sv_mean"],
                "sv_var": row["sv_var"],
                "mean": row["mean"],
                "var": row["var"],
                "nonfinite": 0,
            }
        )
    return rows


#: The statistics of a matrix row, all null on a matrix with NaN or inf values.
_MATRIX_STATS = (
    "l1",
    "l2",
    "trace",
    "spectral",
    "code_sparsity",
    "computational_sparsity",
    "sv_mean",
    "sv_var",
    "mean",
    "var",
)


@register
class WeightStats(Extractor):
    name = "weight_stats"
    outputs = (WEIGHT_STATS,)
    # 2: value_sample, the per-matrix value sample of the distance estimates.
    version = 2
    # What it computes per tensor stays defined on a diverged checkpoint.
    runs_on_diverged = True

    def __init__(self, options: ExtractorOptions, suite: Suite) -> None:
        super().__init__(options, suite)
        # (tensor names, shape, device) of a stack → its sample positions, [batch, m]:
        # the same for every checkpoint of a model shape, so drawn once per job.
        self._positions: dict[tuple, torch.Tensor] = {}

    def _sample_positions(self, names: tuple[str, ...], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        import torch

        key = (names, shape, device)
        if key not in self._positions:
            positions = [sample_positions(name, shape) for name in names]
            self._positions[key] = torch.tensor(positions, device=device)
        return self._positions[key]

    def run(self, model, tokenizer, checkpoint, device) -> dict[str, pa.Table]:
        import torch

        matrices = []  # (tensor_name, kind, layer, matrix), in parameter order
        weights, biases = [], []
        weights_by_name = {}
        num_heads = model.config.num_attention_heads
        with torch.inference_mode():
            for name, parameter in model.named_parameters():
                if name.endswith("bias"):
                    biases.append(parameter.reshape(-1))
                elif name.endswith("weight"):
                    weights.append(parameter.reshape(-1))
                    weights_by_name[name] = parameter.reshape(-1)
                found = classify(name)
                if found is None:
                    continue
                kind, layer = found
                parts = split_qkv(parameter, num_heads) if kind == "qkv" else {kind: parameter}
                for part, matrix in parts.items():
                    tensor_name = name if kind != "qkv" else f"{name}[{part}]"
                    matrices.append((tensor_name, part, layer, matrix))
            # Matrices of one shape and dtype are stacked (up to _STACK_ELEMENTS values
            # at a time, so large models stay one matrix at a time): one operation per
            # statistic, where small models' cost is mostly per-operation overhead.
            groups: dict[tuple, list[int]] = {}
            for index, (*_, matrix) in enumerate(matrices):
                groups.setdefault((tuple(matrix.shape), matrix.dtype), []).append(index)
            chunks = []
            for (shape, _), indices in groups.items():
                size = max(1, _STACK_ELEMENTS // (shape[0] * shape[1]))
                chunks += [indices[i : i + size] for i in range(0, len(indices), size)]
            stats: dict[int, dict] = {}
            hashes: dict[int, str] = {}
            samples: dict[int, list[float]] = {}
            for indices in chunks:
                stack = torch.stack([matrices[i][3] for i in indices])
                names = tuple(matrices[i][0] for i in indices)
                positions = self._sample_positions(names, tuple(stack.shape[1:]), stack.device)
                # One gather for the stack's samples (float32 holds bf16/fp16 values exactly).
                sampled = stack.reshape(len(indices), -1).gather(1, positions).float().tolist()
                chunk_stats = batch_matrix_stats(stack)
                for i, matrix, row, sample in zip(indices, stack, chunk_stats, sampled, strict=True):
                    stats[i] = row
                    hashes[i] = tensor_hash(matrix)
                    samples[i] = None if row["nonfinite"] else sample
            rows = [
                {
                    "tensor_name": tensor_name,
                    "kind": kind,
                    "layer": layer,
                    "n_rows": matrix.shape[0],
                    "n_cols": matrix.shape[1],
                    **stats[i],
                    "weight_hash": hashes[i],
                    "value_sample": samples[i],
                }
                for i, (tensor_name, kind, layer, matrix) in enumerate(matrices)
            ]
            for kind, values in (("all_weights", weights), ("all_biases", biases)):
                if values:
                    flat = torch.cat([v.float() for v in values])
                    if kind == "all_weights":
                        # Mean and variance combined from the matrices' own (computed
                        # above) and the other weights', as exact as one pass over all.
                        others = [v for name, v in weights_by_name.items() if classify(name) is None]
                        parts = [(r["n_rows"] * r["n_cols"], r["mean"], r["var"]) for r in rows]
                        nonfinite = sum(r["nonfinite"] for r in rows)
                        if others:
                            other_values = torch.cat(others).double()
                            mean, var = _mean_var(other_values)
                            if math.isfinite(float(mean)):
                                parts.append((other_values.numel(), float(mean), float(var)))
                            else:
                                nonfinite += _count_nonfinite(other_values)
                        if nonfinite:
                            stats = {"mean": None, "median": None, "var": None, "nonfinite": nonfinite}
                        else:
                            stats = {**_combine(parts), "median": median(flat), "nonfinite": 0}
                    else:
                        stats = distribution(flat)
                    rows.append(
                        {
                            "tensor_name": kind,
                            "kind": kind,
                            "n_rows": flat.numel(),
                            "n_cols": 1,
                            **stats,
                        }
                    )
        schema = WEIGHT_STATS.schema.remove(0)  # without extraction_id
        return {WEIGHT_STATS.name: pa.Table.from_pylist(rows, schema=schema)}
