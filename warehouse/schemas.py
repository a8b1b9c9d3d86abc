"""The lake's datasets, described once.

Every Parquet file in the lake is written with one of these schemas, never an
inferred one. Partition columns (suite, model_size, seed, step) live in the Hive
path, not in the files; every row carries the ``extraction_id`` of the attempt
that wrote it, so staging can keep the latest successful extraction per key.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

#: Bumped whenever a dataset's columns change incompatibly. Stored in each
#: file's schema metadata so a reader can refuse files of another version.
SCHEMA_VERSION = 1
SCHEMA_VERSION_KEY = b"polypythias.schema_version"


@dataclass(frozen=True, slots=True)
class Dataset:
    """One Parquet dataset of the lake."""

    name: str
    schema: pa.Schema
    #: Hive partition columns, outermost first.
    partition_by: tuple[str, ...]
    #: Columns the rows are sorted by inside a file (after the partition).
    sort_by: tuple[str, ...]
    description: str

    def __post_init__(self) -> None:
        metadata = {SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()}
        object.__setattr__(self, "schema", self.schema.with_metadata(metadata))


CHECKPOINT_PARTITION = ("suite", "model_size", "seed", "step")
RUN_PARTITION = ("suite", "model_size", "seed")

PARTITION_TYPES = {
    "suite": pa.string(),
    "model_size": pa.string(),
    "seed": pa.int64(),
    "step": pa.int64(),
}


def _schema(*fields: pa.Field) -> pa.Schema:
    return pa.schema([pa.field("extraction_id", pa.string(), nullable=False), *fields])


MANIFEST = Dataset(
    name="manifest",
    description="One row per extraction attempt of one extractor on one checkpoint.",
    partition_by=CHECKPOINT_PARTITION,
    sort_by=("extractor",),
    schema=_schema(
        pa.field("extractor", pa.string(), nullable=False),
        # success | failed | diverged (NaN or inf weights or outputs: settled, not a failure)
        pa.field("status", pa.string(), nullable=False),
        pa.field("started_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        # Rows written per dataset, e.g. {"token_stats": 2048}.
        pa.field("rows", pa.map_(pa.string(), pa.int64()), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
        # Where the checkpoint came from: "repo@revision" or a local folder.
        pa.field("source", pa.string(), nullable=False),
        pa.field("device", pa.string()),
        pa.field("host", pa.string()),
        pa.field("package_versions", pa.map_(pa.string(), pa.string()), nullable=False),
        pa.field("error", pa.string()),
        # The weight file the checkpoint loaded from: safetensors | bin (a pickle, read
        # through torch's weights-only unpickler); null when none was found. Added
        # after schema version 1's first files: older files read it as null.
        pa.field("weights_format", pa.string()),
    ),
)

TOKEN_STATS = Dataset(
    name="token_stats",
    description=(
        "One row per predicted token of the fixed evaluation documents: the model's "
        "prediction of token `position` from the tokens before it."
    ),
    partition_by=CHECKPOINT_PARTITION,
    sort_by=("doc_id", "position"),
    schema=_schema(
        pa.field("doc_id", pa.int64(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("target_id", pa.int32(), nullable=False),
        pa.field("target_logprob", pa.float32(), nullable=False),
        # Entropy of the predictive distribution, in nats.
        pa.field("entropy", pa.float32(), nullable=False),
        # 1 = the target was the most probable token.
        pa.field("target_rank", pa.int32(), nullable=False),
        pa.field("topk_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("topk_logprobs", pa.list_(pa.float32()), nullable=False),
    ),
)

WEIGHT_STATS = Dataset(
    name="weight_stats",
    description=(
        "One row per weight matrix (fused query_key_value split into q, k, v), plus "
        "one `all_weights` and one `all_biases` row per checkpoint with the "
        "distribution statistics over every weight / bias value."
    ),
    partition_by=CHECKPOINT_PARTITION,
    sort_by=("tensor_name",),
    schema=_schema(
        pa.field("tensor_name", pa.string(), nullable=False),
        # q k v attn_out ffn_in ffn_out embed unembed | all_weights all_biases
        pa.field("kind", pa.string(), nullable=False),
        pa.field("layer", pa.int32()),
        pa.field("n_rows", pa.int64(), nullable=False),
        pa.field("n_cols", pa.int64(), nullable=False),
        # Matrix statistics (null on the all_weights / all_biases rows).
        pa.field("l1", pa.float64()),
        pa.field("l2", pa.float64()),
        pa.field("trace", pa.float64()),  # square matrices only
        pa.field("spectral", pa.float64()),
        pa.field("code_sparsity", pa.float64()),  # l1 / l2
        pa.field("computational_sparsity", pa.float64()),  # trace / spectral
        pa.field("sv_mean", pa.float64()),
        pa.field("sv_var", pa.float64()),
        # Distribution of the values (median on the all_weights / all_biases rows only).
        # Every statistic is null on a row with NaN or inf values (see nonfinite).
        pa.field("mean", pa.float64()),
        pa.field("median", pa.float64()),
        pa.field("var", pa.float64()),
        pa.field("weight_hash", pa.string()),
        # The matrix's values at fixed pseudo-random positions (same tensor name and
        # shape → same positions in every checkpoint; see weight_stats.sample_positions),
        # for estimating distances between checkpoints. Null on the aggregate rows and
        # in files written before weight_stats version 2.
        pa.field("value_sample", pa.list_(pa.float32())),
        # How many of the row's values are NaN or inf (a diverged checkpoint; then
        # its statistics and value_sample are null). Null in files written before
        # the column existed.
        pa.field("nonfinite", pa.int64()),
    ),
)

TRAINING_LOG = Dataset(
    name="training_log",
    description="One row per optimiser step of a training run.",
    # One file covers a whole run: a partition per step would be thousands of
    # one-row files.
    partition_by=RUN_PARTITION,
    sort_by=("step",),
    schema=_schema(
        pa.field("step", pa.int64(), nullable=False),
        pa.field("loss", pa.float64(), nullable=False),
        pa.field("lr", pa.float64(), nullable=False),
        pa.field("grad_norm", pa.float64()),
        pa.field("tokens_seen", pa.int64()),
    ),
)

SUITE_GRID = Dataset(
    name="suite_grid",
    description=(
        "The checkpoints a suite file expects, per extractor; written by every "
        "`polypythias extract` so the marts can tell missing checkpoints."
    ),
    partition_by=("suite",),
    sort_by=("model_size", "seed", "step", "extractor"),
    schema=_schema(
        pa.field("model_size", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("extractor", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ),
)

EVAL_RESULTS = Dataset(
    name="eval_results",
    description=(
        "One row per lm-eval task x metric x filter of one evaluation of a checkpoint, "
        "from the `evals` extractor or from `polypythias ingest lm-eval`."
    ),
    partition_by=CHECKPOINT_PARTITION,
    sort_by=("task", "num_fewshot", "metric", "filter"),
    schema=_schema(
        pa.field("task", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        # lm-eval's filter pipeline ("none" in the older format, which had none).
        pa.field("filter", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        # Bootstrap standard error over items (null when lm-eval gives "N/A").
        pa.field("stderr", pa.float64()),
        # Items evaluated (null when the file does not say).
        pa.field("n_samples", pa.int64()),
        pa.field("num_fewshot", pa.int32(), nullable=False),
        pa.field("task_version", pa.string()),
        pa.field("harness_version", pa.string()),
        # When the evaluation ran: reruns of one checkpoint x task, newest wins.
        pa.field("evaluated_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ),
)

EVAL_SAMPLES = Dataset(
    name="eval_samples",
    description=(
        "One row per lm-eval task item (and filter) of one evaluation of a checkpoint: "
        "per-choice log-likelihoods, the predicted choice and the item's metric values."
    ),
    partition_by=CHECKPOINT_PARTITION,
    sort_by=("task", "num_fewshot", "filter", "doc_id"),
    schema=_schema(
        pa.field("task", pa.string(), nullable=False),
        pa.field("filter", pa.string(), nullable=False),
        pa.field("num_fewshot", pa.int32(), nullable=False),
        pa.field("doc_id", pa.int64(), nullable=False),
        # lm-eval's sha256 of the document: the same item across checkpoints.
        pa.field("doc_hash", pa.string()),
        # The gold answer as lm-eval reports it (a choice index or a continuation).
        pa.field("target", pa.string()),
        # Index of the gold choice for multiple-choice tasks, else null.
        pa.field("target_index", pa.int32()),
        # One entry per choice (one for log-likelihood tasks); null for generation tasks.
        pa.field("choice_loglikelihoods", pa.list_(pa.float64())),
        pa.field("choice_is_greedy", pa.list_(pa.bool_())),
        # argmax of choice_loglikelihoods for multiple-choice tasks, else null.
        pa.field("predicted", pa.int32()),
        # The item's metric values, e.g. {"acc": 1.0, "acc_norm": 0.0}.
        pa.field("metrics", pa.map_(pa.string(), pa.float64()), nullable=False),
    ),
)

EVAL_FILES = Dataset(
    name="eval_files",
    description=(
        "One row per lm-eval result file imported by `polypythias ingest lm-eval`: "
        "where it came from, who it says it is, and what disagreed."
    ),
    partition_by=CHECKPOINT_PARTITION,
    sort_by=("path",),
    schema=_schema(
        pa.field("path", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        # lm-eval-0.3 (results/versions/config) | lm-eval-0.4 (results_<timestamp>.json)
        # | gpt-neox (GPT-NeoX's evaluate.py) | prompt-source (the BigScience fork)
        pa.field("format", pa.string(), nullable=False),
        pa.field("model_args", pa.string(), nullable=False),
        pa.field("pretrained", pa.string(), nullable=False),
        pa.field("revision", pa.string(), nullable=False),
        # standard | deduped | ... : what the model name says beyond size and seed.
        pa.field("variant", pa.string(), nullable=False),
        pa.field("num_fewshot", pa.int32(), nullable=False),
        pa.field("evaluated_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("n_tasks", pa.int64(), nullable=False),
        pa.field("samples_files", pa.list_(pa.string()), nullable=False),
        # Data-quality finding, e.g. the file name says another step than model_args.
        pa.field("finding", pa.string()),
    ),
)

PROBE_RESULTS = Dataset(
    name="probe_results",
    description=(
        "One row per probing task x layer x metric of one checkpoint: a linear probe's "
        "test score and the labels' online (MDL) codelength under that layer's features."
    ),
    partition_by=CHECKPOINT_PARTITION,
    sort_by=("task", "layer", "metric"),
    schema=_schema(
        pa.field("task", pa.string(), nullable=False),
        # token (one label per word) | sequence (one label per text)
        pa.field("level", pa.string(), nullable=False),
        # 0 = the embeddings, i = the output of transformer block i.
        pa.field("layer", pa.int32(), nullable=False),
        # accuracy | macro_f1 (on the test split)
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        # Online codelength of the train labels, in bits (Voita & Titov 2020), and the
        # uniform code's (n_train x log2 n_classes): compression = uniform / online.
        pa.field("codelength", pa.float64(), nullable=False),
        pa.field("uniform_codelength", pa.float64(), nullable=False),
        # Test accuracy of always predicting the train split's most frequent label.
        pa.field("majority_accuracy", pa.float64(), nullable=False),
        pa.field("n_classes", pa.int32(), nullable=False),
        pa.field("n_train", pa.int64(), nullable=False),
        pa.field("n_test", pa.int64(), nullable=False),
        # Words of each split that got no token from the tokenizer and were left out
        # (not in n_train / n_test); 0 for a sequence-level task. Added after schema
        # version 1's first files: older files read them as null.
        pa.field("n_train_without_token", pa.int64()),
        pa.field("n_test_without_token", pa.int64()),
    ),
)

PROBE_PREDICTIONS = Dataset(
    name="probe_predictions",
    description="One row per probing task x layer x test item of one checkpoint: gold and predicted label.",
    partition_by=CHECKPOINT_PARTITION,
    sort_by=("task", "layer", "item_id"),
    schema=_schema(
        pa.field("task", pa.string(), nullable=False),
        pa.field("layer", pa.int32(), nullable=False),
        # Position of the item (a word, or a text) in the task's test split: the
        # same item in every checkpoint.
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("gold", pa.string(), nullable=False),
        pa.field("predicted", pa.string(), nullable=False),
    ),
)

TRAINING_MAP_STATES = Dataset(
    name="training_map_states",
    description=(
        "One row per run x step of a training map computed elsewhere (its latent "
        "state and optional 1-D score), from `polypythias ingest training-map`; "
        "re-importing a suite x model_size adds a newer file that supersedes the earlier ones."
    ),
    # One file covers the whole map of a size: the file imported.
    partition_by=("suite", "model_size"),
    sort_by=("seed", "step"),
    schema=_schema(
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("state", pa.int32(), nullable=False),
        pa.field("score", pa.float64()),
        # The file imported (absolute path as given) and its content hash.
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_sha256", pa.string(), nullable=False),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ),
)

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        MANIFEST,
        TOKEN_STATS,
        WEIGHT_STATS,
        TRAINING_LOG,
        SUITE_GRID,
        EVAL_RESULTS,
        EVAL_SAMPLES,
        EVAL_FILES,
        PROBE_RESULTS,
        PROBE_PREDICTIONS,
        TRAINING_MAP_STATES,
    )
}
