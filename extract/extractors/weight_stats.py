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
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

import pyarrow as pa

from polypythias.extract.extractors import Extractor, register
from polypythias.warehouse.schemas import WEIGHT_STATS

if TYPE_CHECKING:
    import torch

# Parameter name (after any "gpt_neox." prefix) → kind.
_KINDS = (
    (re.compile(r"embed_in\.weight$"), "embed"),
    (re.compile(r"(?:embed_out|lm_head)\.weight$"), "unembed"),
    (re.compile(r"layers\.(\d+)\.attention\.query_key_value\.weight$"), "qkv"),
    (re.compile(r"layers\.(\d+)\.attention\.dense\.weight$"), "attn_out"),
    (re.compile(r"layers\.(\d+)\.mlp\.dense_h_to_4h\.weight$"), "ffn_in"),
    (re.compile(r"layers\.(\d+)\.mlp\.dense_4h_to_h\.weight$"), "ffn_out"),
)


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


def median(values: torch.Tensor) -> float:
    """The exact median as numpy defines it (mean of the two middle values when even).

    Large tensors are bracketed first: a sorted random sample gives bounds that
    hold the middle ranks with overwhelming probability; counting the values below
    the lower bound and sorting only those inside it is a few cheap passes instead
    of a full selection. If the bracket misses, it falls back to a full selection.
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
        inside = flat[(flat >= low) & (flat <= high)].sort().values
        ranks = [r - below for r in middle]
        if 0 <= ranks[0] and ranks[1] < inside.numel():
            return float((inside[ranks[0]].double() + inside[ranks[1]].double()) / 2)
    ordered = [flat.kthvalue(r + 1).values.double() for r in sorted(set(middle))]
    return float(sum(ordered) / len(ordered))


def distribution(values: torch.Tensor) -> dict[str, float]:
    flat = values.reshape(-1).double()
    return {
        "mean": float(flat.mean()),
        "median": median(values.reshape(-1).float()),
        "var": float(flat.var(correction=0)),
    }


def singular_values(weight: torch.Tensor) -> torch.Tensor:
    """σ of a matrix, descending, from the eigenvalues of its smaller Gram matrix.

    In float32 the σ agree with a float64 SVD to ~2e-5 of the largest σ (their
    mean and variance to ~1e-6 relative) at a third of the cost of an SVD.
    """
    import torch

    w = weight.float()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().flip(0).double()


def matrix_stats(weight: torch.Tensor) -> dict[str, float | None]:
    import torch

    w = weight.detach().double()
    sv = singular_values(w)
    l1 = float(w.abs().sum())
    l2 = float(torch.linalg.vector_norm(w))
    spectral = float(sv[0])
    trace = float(torch.trace(w)) if w.shape[0] == w.shape[1] else None
    return {
        "l1": l1,
        "l2": l2,
        "trace": trace,
        "spectral": spectral,
        "code_sparsity": l1 / l2 if l2 else None,
        "computational_sparsity": trace / spectral if trace is not None and spectral else None,
        "sv_mean": float(sv.mean()),
        "sv_var": float(sv.var(correction=0)),
        "mean": float(w.mean()),
        "var": float(w.var(correction=0)),
    }


@register
class WeightStats(Extractor):
    name = "weight_stats"
    outputs = (WEIGHT_STATS,)

    def run(self, model, tokenizer, checkpoint, device) -> dict[str, pa.Table]:
        import torch

        rows = []
        weights, biases = [], []
        num_heads = model.config.num_attention_heads
        with torch.inference_mode():
            for name, parameter in model.named_parameters():
                if name.endswith("bias"):
                    biases.append(parameter.reshape(-1))
                elif name.endswith("weight"):
                    weights.append(parameter.reshape(-1))
                found = classify(name)
                if found is None:
                    continue
                kind, layer = found
                parts = split_qkv(parameter, num_heads) if kind == "qkv" else {kind: parameter}
                for part, matrix in parts.items():
                    rows.append(
                        {
                            "tensor_name": name if kind != "qkv" else f"{name}[{part}]",
                            "kind": part,
                            "layer": layer,
                            "n_rows": matrix.shape[0],
                            "n_cols": matrix.shape[1],
                            **matrix_stats(matrix),
                            "weight_hash": tensor_hash(matrix),
                        }
                    )
            for kind, values in (("all_weights", weights), ("all_biases", biases)):
                if values:
                    flat = torch.cat([v.float() for v in values])
                    rows.append(
                        {
                            "tensor_name": kind,
                            "kind": kind,
                            "n_rows": flat.numel(),
                            "n_cols": 1,
                            **distribution(flat),
                        }
                    )
        schema = WEIGHT_STATS.schema.remove(0)  # without extraction_id
        return {WEIGHT_STATS.name: pa.Table.from_pylist(rows, schema=schema)}
