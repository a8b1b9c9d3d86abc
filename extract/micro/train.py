"""Train the micro suite: tiny GPT-NeoX models, several sizes x seeds, on CPU.

As in PolyPythias, every run of a size sees the same training corpus, and the seed
sets both the weight initialisation and the order in which the corpus is read.
Checkpoints follow Pythia's schedule (0, 1, 2, 4, ... then evenly spaced) and are
laid out like hub revisions, one self-contained folder per step:

    out_dir/
      suite.yaml                       the suite file for `polypythias extract`
      tokenizer/
      eval/documents.jsonl             held-out documents (another generator seed)
      {size}/seed{seed}/run.json       the run's configuration
      {size}/seed{seed}/step{step}/    config.json, model.safetensors, tokenizer

A folder appears under its final name only once complete (written under a hidden
temporary name, then renamed), so a crash never leaves a checkpoint that looks
whole. Training is deterministic: the same seed gives bit-identical weights on the
same machine and thread count.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import transformers
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from .language import Grammar, generate_documents
from .tokenizer import build_tokenizer

# Longest sequence the models accept; training uses `seq_len` <= this, and eval
# documents (at most about 100 words) fit in it whole.
CONTEXT = 128
TOKEN_STATS_TOP_K = 10
ADAM_BETAS = (0.9, 0.95)  # Pythia's


@dataclass(frozen=True, slots=True)
class ModelSize:
    """A GPT-NeoX shape; `name` is the nominal parameter count, as in Pythia."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int

    def model_config(self, vocab_size: int) -> GPTNeoXConfig:
        return GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=4 * self.hidden_size,
            max_position_embeddings=CONTEXT,
            rope_parameters={
                "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
            },
            use_parallel_residual=True,
            tie_word_embeddings=False,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=1,
        )


SIZES: dict[str, ModelSize] = {
    s.name: s
    for s in (
        ModelSize("200k", hidden_size=64, num_layers=4, num_heads=4),
        ModelSize("1m", hidden_size=128, num_layers=5, num_heads=4),
        ModelSize("3m", hidden_size=192, num_layers=6, num_heads=6),
    )
}


def model_size(name: str) -> ModelSize:
    try:
        return SIZES[name]
    except KeyError:
        raise ValueError(
            f"unknown model size {name!r}; known sizes: {', '.join(SIZES)}"
        ) from None


def pythia_style_steps(total_steps: int, n_linear: int) -> list[int]:
    """0, 1, 2, 4, ... (powers of two below the first linear step), then `n_linear`
    evenly spaced steps ending at `total_steps`."""
    if not 1 <= n_linear <= total_steps:
        raise ValueError(
            f"need 1 <= n_linear <= total_steps, got n_linear={n_linear}, "
            f"total_steps={total_steps}"
        )
    linear = [round(total_steps * i / n_linear) for i in range(1, n_linear + 1)]
    steps = [0]
    power = 1
    while power < linear[0]:
        steps.append(power)
        power *= 2
    return steps + linear


@dataclass(slots=True)
class TrainConfig:
    suite_name: str = "micro"
    sizes: list[str] = field(default_factory=lambda: ["200k", "1m"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    total_steps: int = 256
    batch_size: int = 16
    seq_len: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 16
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    n_linear: int = 8  # evenly spaced checkpoints after the powers of two
    corpus_docs: int = 8000
    eval_docs: int = 200
    data_seed: int = 1234  # the training corpus, shared by all runs
    eval_seed: int = 4321  # the held-out eval documents
    threads: int | None = None  # torch threads; None: all cores

    def __post_init__(self) -> None:
        for name in self.sizes:
            model_size(name)
        if not self.sizes or len(set(self.sizes)) != len(self.sizes):
            raise ValueError(f"sizes must be non-empty and unique, got {self.sizes}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be non-empty, unique and >= 0, got {self.seeds}")
        pythia_style_steps(self.total_steps, self.n_linear)
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError("need 0 <= warmup_steps < total_steps")
        if not 2 <= self.seq_len <= CONTEXT:
            raise ValueError(f"seq_len must be in [2, {CONTEXT}], got {self.seq_len}")
        if self.batch_size < 1 or self.corpus_docs < 1 or self.eval_docs < 1:
            raise ValueError("batch_size, corpus_docs and eval_docs must be >= 1")
        if self.data_seed == self.eval_seed:
            raise ValueError("eval_seed must differ from data_seed (held-out documents)")

    @property
    def checkpoint_steps(self) -> list[int]:
        return pythia_style_steps(self.total_steps, self.n_linear)

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step `step` (1-based): linear warmup, then
        cosine decay to `min_lr_ratio` of the peak at `total_steps`."""
        if step <= self.warmup_steps:
            return self.learning_rate * step / self.warmup_steps
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.learning_rate * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)


LOG_SCHEMA = pa.schema([
    pa.field("step", pa.int64()),
    pa.field("loss", pa.float64()),
    pa.field("lr", pa.float64()),
    pa.field("grad_norm", pa.float64()),
    pa.field("tokens_seen", pa.int64()),
])

RunDone = Callable[[str, int, pa.Table], None]


def train_suite(
    config: TrainConfig,
    out_dir: Path,
    on_run_done: RunDone | None = None,
    progress: bool = True,
) -> None:
    """Train every size x seed of `config` into `out_dir` (see the module docstring)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grammar = Grammar()
    tokenizer = build_tokenizer(grammar.vocabulary(), model_max_length=CONTEXT)
    tokenizer_dir = out_dir / "tokenizer"
    with _atomic_dir(tokenizer_dir) as tmp:
        tokenizer.save_pretrained(tmp)
    _write_eval_documents(config, out_dir / "eval" / "documents.jsonl")
    corpus = _training_chunks(config, tokenizer, grammar)

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), disable=not progress,
    )
    with bar, _training_mode(config.threads):
        runs = bar.add_task("micro suite runs", total=len(config.sizes) * len(config.seeds))
        steps = bar.add_task("", total=config.total_steps)
        for size in config.sizes:
            for seed in config.seeds:
                bar.reset(steps, description=f"{size} seed {seed}")
                log = _train_run(
                    config, size, seed, corpus, tokenizer_dir, len(tokenizer),
                    out_dir / size / f"seed{seed}",
                    on_step=lambda: bar.advance(steps),
                )
                bar.advance(runs)
                if on_run_done is not None:
                    on_run_done(size, seed, log)
    _atomic_write_text(out_dir / "suite.yaml", yaml.safe_dump(
        suite_document(config), sort_keys=False, default_flow_style=None, width=1000,
    ))


def suite_document(config: TrainConfig) -> dict:
    """The suite file's content; paths are relative to the file's folder."""
    return {
        "name": config.suite_name,
        "sizes": list(config.sizes),
        "seeds": list(config.seeds),
        "steps": {"all": config.checkpoint_steps},
        "checkpoints": {"local": "{size}/seed{seed}/step{step}"},
        "extractors": {
            "token_stats": {
                "steps": "all",
                "documents": "eval/documents.jsonl",
                "top_k": TOKEN_STATS_TOP_K,
            },
            "weight_stats": {"steps": "all"},
        },
    }


def _train_run(
    config: TrainConfig,
    size: str,
    seed: int,
    corpus: torch.Tensor,
    tokenizer_dir: Path,
    vocab_size: int,
    run_dir: Path,
    on_step: Callable[[], None] | None = None,
) -> pa.Table:
    """Train one run, writing its checkpoints and run.json; returns its log.

    `corpus` holds the training sequences, shape (n, seq_len). Call inside
    `_training_mode` for deterministic results.
    """
    shape = model_size(size)
    # The seed sets the initial weights; fork so the caller's RNG is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(shape.model_config(vocab_size))
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]  # not biases or norms
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr_at(1), betas=ADAM_BETAS,
    )
    order = _batch_order(len(corpus), config.total_steps, config.batch_size, seed)
    checkpoints = set(config.checkpoint_steps)
    rows: dict[str, list] = {name: [] for name in LOG_SCHEMA.names}

    run_dir.mkdir(parents=True, exist_ok=True)
    if 0 in checkpoints:
        _save_checkpoint(model, tokenizer_dir, run_dir / "step0")
    for step in range(1, config.total_steps + 1):
        lr = config.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = corpus[order[step - 1]]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        for name, value in zip(LOG_SCHEMA.names, (
            step, loss.item(), lr, grad_norm.item(), step * batch.numel(),
        )):
            rows[name].append(value)
        if step in checkpoints:
            _save_checkpoint(model, tokenizer_dir, run_dir / f"step{step}")
        if on_step is not None:
            on_step()

    run_info = {
        "suite": config.suite_name,
        "size": size,
        "seed": seed,
        "n_params": sum(p.numel() for p in model.parameters()),
        "model": asdict(shape),
        "checkpoint_steps": config.checkpoint_steps,
        "final_loss": rows["loss"][-1],
        "train": {k: v for k, v in asdict(config).items() if k not in ("sizes", "seeds")},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    _atomic_write_text(run_dir / "run.json", json.dumps(run_info, indent=2) + "\n")
    return pa.Table.from_pydict(rows, schema=LOG_SCHEMA)


def _batch_order(n_sequences: int, total_steps: int, batch_size: int, seed: int) -> np.ndarray:
    """Sequence indices of each step's batch, shape (total_steps, batch_size): a
    fresh permutation of the corpus per epoch, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    needed = total_steps * batch_size
    epochs = [rng.permutation(n_sequences) for _ in range(-(-needed // n_sequences))]
    return np.concatenate(epochs)[:needed].reshape(total_steps, batch_size)


def _save_checkpoint(model: GPTNeoXForCausalLM, tokenizer_dir: Path, folder: Path) -> None:
    """Weights (safetensors) plus the tokenizer files, renamed into place when complete."""
    with _atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        for file in tokenizer_dir.iterdir():
            shutil.copyfile(file, tmp / file.name)


def _training_chunks(
    config: TrainConfig, tokenizer: PreTrainedTokenizerFast, grammar: Grammar
) -> torch.Tensor:
    """The training corpus as (n, seq_len) token ids: documents joined by
    <|endoftext|> (as in Pythia), cut into sequences, the remainder dropped."""
    documents = generate_documents(config.corpus_docs, config.data_seed, grammar=grammar)
    encoded = tokenizer([d.text for d in documents])["input_ids"]
    ids = [i for doc in encoded for i in (*doc, tokenizer.eos_token_id)]
    n = len(ids) // config.seq_len
    if n < 1:
        raise ValueError("corpus_docs too small for one training sequence")
    return torch.tensor(ids[: n * config.seq_len], dtype=torch.long).view(n, config.seq_len)


def _write_eval_documents(config: TrainConfig, path: Path) -> None:
    documents = generate_documents(config.eval_docs, config.eval_seed)
    lines = (json.dumps({"doc_id": i, "text": d.text}) for i, d in enumerate(documents))
    _atomic_write_text(path, "".join(line + "\n" for line in lines))



@contextmanager
def _training_mode(threads: int | None) -> Iterator[None]:
    """Deterministic kernels and a fixed thread count, restored afterwards."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


@contextmanager
def _atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a hidden sibling folder to fill; it replaces `final` on success."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # left over from a crash
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
