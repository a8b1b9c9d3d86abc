"""Token-level statistics of the model's predictions on fixed evaluation documents.

For every token of every document, the model predicts it from the tokens before
it (with the tokenizer's BOS token prepended when it has one, so the first token
is predicted too). ``position`` is the 0-based index of the predicted token in
the document's own tokens. Documents longer than ``max_length`` tokens are
truncated. Documents are batched by length with right padding; the attention
mask keeps padding from changing any real token's prediction.

Logits that are not finite (NaN or inf) at any predicted position raise
``Diverged`` (the checkpoint is recorded as diverged, without rows), saying at how
many positions of how many documents.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from polypythias.extract.extractors import (
    Diverged,
    Extractor,
    ExtractorError,
    ExtractorOptions,
    read_text,
    register,
)
from polypythias.warehouse.schemas import TOKEN_STATS


class TokenStatsOptions(ExtractorOptions):
    documents: str = Field(
        description=(
            "Evaluation documents: .jsonl (one object per line with a text field), "
            ".parquet (a text column) or .txt (one document per non-empty line). "
            "doc_id is the document's 0-based index in the file."
        )
    )
    text_field: str = Field("text", description="Field / column holding the text.")
    top_k: int = Field(10, ge=1, le=1000, description="How many top predictions to keep.")
    batch_size: int = Field(16, ge=1, description="Documents per forward pass.")
    max_length: int | None = Field(
        None, ge=2, description="Truncate documents to this many tokens (default: the model's context)."
    )


def read_documents(path: Path, text_field: str) -> list[str]:
    """The evaluation documents of a file, in file order."""
    if not path.is_file():
        raise ExtractorError(f"{path}: evaluation documents not found")
    if path.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ExtractorError(f"{path}:{number}: not JSON: {error}") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise ExtractorError(f"{path}:{number}: no string field {text_field!r}")
            texts.append(record[text_field])
    elif path.suffix == ".parquet":
        table = pq.read_table(path)
        if text_field not in table.column_names:
            raise ExtractorError(f"{path}: no column {text_field!r}")
        texts = table.column(text_field).to_pylist()
    elif path.suffix == ".txt":
        texts = [line for line in read_text(path).splitlines() if line.strip()]
    else:
        raise ExtractorError(f"{path}: documents must be .jsonl, .parquet or .txt")
    if not texts:
        raise ExtractorError(f"{path}: no documents")
    return texts


@register
class TokenStats(Extractor):
    name = "token_stats"
    Options = TokenStatsOptions
    outputs = (TOKEN_STATS,)
    file_options = ("documents",)

    def __init__(self, options: TokenStatsOptions, suite) -> None:
        super().__init__(options, suite)
        self.path = suite.resolve_path(options.documents)
        self.texts = read_documents(self.path, options.text_field)
        self._encoded: tuple[int, list[list[int]]] | None = None

    def encode(self, tokenizer, max_length: int) -> list[list[int]]:
        # Checkpoints of a suite normally share a tokenizer: encode once per tokenizer.
        key = hash((tokenizer.name_or_path, len(tokenizer), max_length))
        if self._encoded is None or self._encoded[0] != key:
            bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
            ids = tokenizer(self.texts, add_special_tokens=False)["input_ids"]
            self._encoded = (key, [(bos + doc)[:max_length] for doc in ids])
        return self._encoded[1]

    def run(self, model, tokenizer, checkpoint, device) -> dict[str, pa.Table]:
        import torch

        max_length = self.options.max_length or model.config.max_position_embeddings
        sequences = self.encode(tokenizer, max_length)
        has_bos = tokenizer.bos_token_id is not None
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        batches = []
        nonfinite: list[pa.Array] = []  # doc_id of each position whose logits are not finite
        with torch.inference_mode():
            for start in range(0, len(order), self.options.batch_size):
                doc_ids = order[start : start + self.options.batch_size]
                table, bad = _batch_stats(
                    model, [sequences[i] for i in doc_ids], doc_ids, has_bos, pad_id, self.options.top_k, device
                )
                batches.append(table)
                if bad is not None:
                    nonfinite.append(table["doc_id"].filter(pa.array(bad.cpu().numpy())).combine_chunks())
        if nonfinite:
            docs = pa.concat_arrays(nonfinite)
            positions = sum(table.num_rows for table in batches)
            raise Diverged(
                f"token_stats: logits not finite (NaN or inf) at {len(docs)} of {positions} "
                f"predicted positions, in {len(set(docs.to_pylist()))} of {len(sequences)} documents"
            )
        return {TOKEN_STATS.name: pa.concat_tables(batches)}


def _batch_stats(model, sequences, doc_ids, has_bos, pad_id, top_k, device):
    """The batch's rows, and a mask of the rows whose logits are not all finite (None
    when all are)."""
    import torch

    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention[row, : len(sequence)] = 1
    logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
    # Keep only real positions: the logit at column c predicts token c + 1.
    rows, cols = attention[:, 1:].bool().nonzero(as_tuple=True)
    logprobs = torch.log_softmax(logits[rows.to(device), cols.to(device)].float(), dim=-1)
    targets = input_ids[rows, cols + 1].to(device)

    target_logprob = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    # One check per position: any NaN or ±inf logit makes the entropy NaN (log_softmax
    # turns +inf and NaN into NaN, and -inf gives 0 · -inf), so no pass over the vocabulary.
    bad = ~torch.isfinite(entropy)
    bad = bad if bool(bad.any()) else None
    target_rank = (logprobs > target_logprob.unsqueeze(-1)).sum(-1) + 1
    topk = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)

    # Without a prepended BOS, logit column c predicts document position c + 1.
    position = cols + (0 if has_bos else 1)
    n, k = len(rows), topk.indices.shape[-1]
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    table = pa.table(
        {
            "doc_id": pa.array(torch.tensor(doc_ids)[rows].numpy(), type=pa.int64()),
            "position": pa.array(position.numpy(), type=pa.int32()),
            "target_id": pa.array(targets.cpu().numpy(), type=pa.int32()),
            "target_logprob": pa.array(target_logprob.cpu().numpy(), type=pa.float32()),
            "entropy": pa.array(entropy.cpu().numpy(), type=pa.float32()),
            "target_rank": pa.array(target_rank.cpu().numpy(), type=pa.int32()),
            "topk_ids": pa.ListArray.from_arrays(
                offsets, pa.array(topk.indices.cpu().numpy().reshape(-1), type=pa.int32())
            ),
            "topk_logprobs": pa.ListArray.from_arrays(
                offsets, pa.array(topk.values.cpu().numpy().reshape(-1), type=pa.float32())
            ),
        }
    )
    return table, bad
