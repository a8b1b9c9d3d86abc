"""Train the micro suite: tiny GPT-NeoX models, several sizes x seeds, on CPU.

As in PolyPythias, every run sees the same training corpus, and the seed sets both
the weight initialisation and the order in which the corpus is read. Checkpoints
follow Pythia's schedule (0, 1, 2, 4, ... then evenly spaced) and are laid out like
hub revisions, one self-contained folder per step:

    out_dir/
      suite.yaml                       the suite file for `polypythias extract`
      tokenizer/
      eval/documents.jsonl             held-out documents (another generator seed)
      eval/tasks/                      lm-eval task YAMLs + JSONL items (eval_tasks.py)
      probe/                           probing tasks: CoNLL-U and JSONL (probe_tasks.py)
      {size}/seed{seed}/run.json       the run's configuration, written last
      {size}/seed{seed}/step{step}/    config.json, model.safetensors, tokenizer

Instability can be injected into chosen runs (`Instability`, `TrainConfig.instabilities`):
a learning-rate multiplier or a burst of batches whose tokens are shuffled, for a
few steps. It touches nothing else: every other run stays bit-identical to a suite
trained without it. The injected run's run.json lists it under
"injected_instability"; the demo suite injects `DEMO_INSTABILITY`.

A folder appears under its final name only once complete (it is written under a
hidden temporary name, then renamed), so a crash never leaves a checkpoint that
looks whole.

Models this small keep a CPU core busy but gain little from a second thread, so
runs train in parallel worker processes with `threads_per_run` threads each.
Results are bit-identical for a given seed and `threads_per_run`, whatever the
number of workers.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import transformers
import yaml
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from . import eval_tasks, probe_tasks
from .language import Grammar, generate_documents
from .tokenizer import build_tokenizer

# Longest sequence the models accept; training uses `seq_len` <= this, and eval
# documents (at most about 100 words) fit in it whole.
CONTEXT = 128
TOKEN_STATS_TOP_K = 10
TOKEN_STATS_BATCH_SIZE = 64
EVALS_BATCH_SIZE = 64
PROBES_BATCH_SIZE = 128
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
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.25,
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
        ModelSize("1m", hidden_size=128, num_layers=4, num_heads=4),
        ModelSize("3m", hidden_size=192, num_layers=6, num_heads=6),
    )
}


def model_size(name: str) -> ModelSize:
    try:
        return SIZES[name]
    except KeyError:
        raise ValueError(f"unknown model size {name!r}; known sizes: {', '.join(SIZES)}") from None


def pythia_style_steps(total_steps: int, n_linear: int) -> list[int]:
    """0, 1, 2, 4, ... (powers of two below the first linear step), then `n_linear`
    evenly spaced steps ending at `total_steps`."""
    if not 1 <= n_linear <= total_steps:
        raise ValueError(f"need 1 <= n_linear <= total_steps, got n_linear={n_linear}, total_steps={total_steps}")
    linear = [round(total_steps * i / n_linear) for i in range(1, n_linear + 1)]
    steps = [0]
    power = 1
    while power < linear[0]:
        steps.append(power)
        power *= 2
    return steps + linear


INSTABILITY_KINDS = ("lr_spike", "shuffled_tokens")
INSTABILITY_SPEC_SYNTAX = "SIZE:SEED:KIND@START+STEPS[xFACTOR]"
# Mixed into the seed of the token shuffles, so they draw differently from the batch order.
SHUFFLE_SEED_SALT = 0x5EED_5A17
_SPEC = re.compile(
    r"(?P<size>[^:\s]+):(?P<seed>\d+):(?P<kind>[a-z_]+)@(?P<start>\d+)\+(?P<steps>\d+)"
    r"(?:x(?P<factor>[0-9]*\.?[0-9]+(?:e[+-]?\d+)?))?"
)


@dataclass(frozen=True, slots=True)
class Instability:
    """Instability injected into one run (`size` x `seed`) for `n_steps` optimiser
    steps from `start_step` (1-based, as in the training log).

    - ``lr_spike``: the learning rate is multiplied by `factor` (> 1).
    - ``shuffled_tokens``: the token positions within each sequence of the batch are
      shuffled (a fixed permutation per sequence, drawn from the run's seed and the
      step), so the model trains on word salad; `factor` must stay 1.

    As a spec (`parse` / `spec`): SIZE:SEED:KIND@START+STEPS[xFACTOR], e.g.
    ``1m:4:lr_spike@96+16x30`` or ``200k:1:shuffled_tokens@64+32``.
    """

    size: str
    seed: int
    kind: str
    start_step: int
    n_steps: int
    factor: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)):
            raise TypeError(f"instability factor must be a number, got {self.factor!r}")
        if self.size not in SIZES:
            raise ValueError(
                f"instability {self.spec()}: unknown model size {self.size!r}; known sizes: {', '.join(SIZES)}"
            )
        if self.kind not in INSTABILITY_KINDS:
            raise ValueError(
                f"unknown instability kind {self.kind!r} in {self.spec()}; known kinds: {', '.join(INSTABILITY_KINDS)}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"instability {self.spec()}: seed must be an integer >= 0")
        for name in ("start_step", "n_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"instability {self.spec()}: {name} must be an integer >= 1, got {value!r}")
        if not math.isfinite(self.factor):
            raise ValueError(f"instability {self.spec()}: factor must be finite, got {self.factor}")
        if self.kind == "lr_spike" and not self.factor > 1:
            raise ValueError(
                f"instability {self.spec()}: an lr_spike needs a learning-rate factor > 1 "
                f"(write it as xFACTOR, e.g. {self.size}:{self.seed}:lr_spike@"
                f"{self.start_step}+{self.n_steps}x30), got {self.factor:g}"
            )
        if self.kind == "shuffled_tokens" and self.factor != 1:
            raise ValueError(
                f"instability {self.spec()}: shuffled_tokens takes no factor (it has no strength), got {self.factor:g}"
            )

    @property
    def end_step(self) -> int:
        """The last step injected."""
        return self.start_step + self.n_steps - 1

    def active(self, step: int) -> bool:
        return self.start_step <= step <= self.end_step

    def spec(self) -> str:
        factor = f"x{self.factor:g}" if self.factor != 1 else ""
        return f"{self.size}:{self.seed}:{self.kind}@{self.start_step}+{self.n_steps}{factor}"

    def to_dict(self) -> dict:
        return {**asdict(self), "end_step": self.end_step, "spec": self.spec()}

    @classmethod
    def parse(cls, spec: str) -> Instability:
        """An Instability from its spec; ValueError naming the spec and the syntax."""
        match = _SPEC.fullmatch(spec.strip())
        if match is None:
            raise ValueError(
                f"bad instability spec {spec!r}: expected {INSTABILITY_SPEC_SYNTAX}, "
                "e.g. 1m:4:lr_spike@96+16x30 or 200k:1:shuffled_tokens@64+32"
            )
        factor = match["factor"]
        return cls(
            size=match["size"],
            seed=int(match["seed"]),
            kind=match["kind"],
            start_step=int(match["start"]),
            n_steps=int(match["steps"]),
            factor=float(factor) if factor is not None else 1.0,
        )


class SettingError(ValueError):
    """A bad TrainConfig setting; ``setting`` names the field."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(slots=True)
class TrainConfig:
    suite_name: str = "micro"
    sizes: list[str] = field(default_factory=lambda: ["200k", "1m"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    total_steps: int = 256
    batch_size: int = 16
    seq_len: int = 64
    learning_rate: float = 6e-3
    warmup_fraction: float = 1 / 16  # of total_steps
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    n_linear: int = 8  # evenly spaced checkpoints after the powers of two
    corpus_docs: int = 8000
    eval_docs: int = 200
    data_seed: int = 1234  # the training corpus, shared by all runs
    eval_seed: int = 4321  # the held-out eval documents
    eval_task_items: int = eval_tasks.DEFAULT_ITEMS  # per micro lm-eval task
    eval_task_seed: int = eval_tasks.DEFAULT_SEED  # the micro lm-eval tasks' items
    probe_seed: int = probe_tasks.DEFAULT_SEED  # the probing tasks' sentences and word split
    threads_per_run: int = 1  # part of the result: other counts give other bits
    workers: int | None = None  # parallel runs; None: one per threads_per_run cores
    # Injected into the named runs only; the demo suite uses [DEMO_INSTABILITY].
    instabilities: list[Instability] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on a bad setting (also after fields were reassigned);
        SettingError, naming the field, for the settings a user picks."""
        for name in self.sizes:
            try:
                model_size(name)
            except ValueError as error:
                raise SettingError("sizes", str(error)) from None
        if not self.sizes or len(set(self.sizes)) != len(self.sizes):
            raise SettingError("sizes", f"give one or more different sizes, got {self.sizes}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise SettingError("seeds", f"seeds must be non-empty, unique and >= 0, got {self.seeds}")
        if self.total_steps < self.n_linear:
            raise SettingError(
                "total_steps",
                f"the micro suite saves {self.n_linear} evenly spaced checkpoints, "
                f"so it needs at least {self.n_linear} steps, got {self.total_steps}",
            )
        pythia_style_steps(self.total_steps, self.n_linear)
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 2 <= self.seq_len <= CONTEXT:
            raise ValueError(f"seq_len must be in [2, {CONTEXT}], got {self.seq_len}")
        if min(self.batch_size, self.corpus_docs, self.eval_docs, self.eval_task_items, self.threads_per_run) < 1:
            raise ValueError("batch_size, corpus_docs, eval_docs, eval_task_items, threads_per_run must be >= 1")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.data_seed == self.eval_seed:
            raise ValueError("eval_seed must differ from data_seed (held-out documents)")
        # Each task draws from eval_task_seed + its index (see eval_tasks.write_tasks).
        task_seeds = {self.eval_task_seed + i for i in range(len(eval_tasks.TASK_NAMES))}
        if task_seeds & {self.data_seed, self.eval_seed}:
            raise ValueError(
                f"eval_task_seed {self.eval_task_seed} to {max(task_seeds)} must not include "
                "data_seed or eval_seed (the task items must be fresh sentences)"
            )
        # The probing tasks draw from probe_seed + each of probe_tasks.SEED_OFFSETS.
        probe_seeds = {self.probe_seed + o for o in probe_tasks.SEED_OFFSETS.values()}
        if probe_seeds & (task_seeds | {self.data_seed, self.eval_seed}):
            raise ValueError(
                f"probe_seed {self.probe_seed} to {max(probe_seeds)} must not include data_seed, "
                "eval_seed or the eval task seeds (each data set draws its own sentences)"
            )
        self._validate_instabilities()

    def _validate_instabilities(self) -> None:
        seen: list[Instability] = []
        for item in self.instabilities:
            if not isinstance(item, Instability):
                raise TypeError(f"instabilities must be Instability objects, got {item!r}")
            if item.size not in self.sizes:
                raise ValueError(
                    f"instability {item.spec()}: size {item.size!r} is not in the suite "
                    f"(sizes: {', '.join(self.sizes)})"
                )
            if item.seed not in self.seeds:
                raise ValueError(
                    f"instability {item.spec()}: seed {item.seed} is not in the suite "
                    f"(seeds: {', '.join(map(str, self.seeds))})"
                )
            if item.start_step > self.total_steps or item.end_step > self.total_steps:
                raise ValueError(
                    f"instability {item.spec()}: steps {item.start_step} to {item.end_step} must lie "
                    f"within 1..{self.total_steps} (total_steps)"
                )
            for other in seen:
                if (
                    (other.size, other.seed, other.kind) == (item.size, item.seed, item.kind)
                    and other.start_step <= item.end_step
                    and item.start_step <= other.end_step
                ):
                    raise ValueError(f"instabilities {other.spec()} and {item.spec()} overlap in the same run")
            seen.append(item)

    def instabilities_of(self, size: str, seed: int) -> list[Instability]:
        """The injections into run `size` x `seed`, in the order given."""
        return [i for i in self.instabilities if (i.size, i.seed) == (size, seed)]

    def lr_factor_at(self, size: str, seed: int, step: int) -> float:
        """The learning-rate multiplier of run `size` x `seed` at `step` (1 if none)."""
        factor = 1.0
        for item in self.instabilities_of(size, seed):
            if item.kind == "lr_spike" and item.active(step):
                factor *= item.factor
        return factor

    @property
    def warmup_steps(self) -> int:
        return round(self.total_steps * self.warmup_fraction)

    @property
    def checkpoint_steps(self) -> list[int]:
        return pythia_style_steps(self.total_steps, self.n_linear)

    @property
    def eval_grid_steps(self) -> list[int]:
        """The checkpoints evals and probes run on: step 0 and every other checkpoint
        counted back from the last (0, 1, 4, 16, 64, 128, 192, 256 by default). As
        PolyPythias evaluates a grid of its checkpoints, the costly extractors skip
        half of them; token and weight statistics cover every checkpoint."""
        return sorted({0, *self.checkpoint_steps[::-2]})

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step `step` (1-based): linear warmup, then
        cosine decay to `min_lr_ratio` of the peak at `total_steps`."""
        if step <= self.warmup_steps:
            return self.learning_rate * step / self.warmup_steps
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.learning_rate * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)


# The demo suite's injected run (TrainConfig defaults: sizes 200k and 1m, seeds 0-4,
# 256 steps): 16 steps at 50x the learning rate from step 96. Measured: the loss
# jumps from 2.5 to 11 and ends at 3.6 against 2.33-2.49 for seeds 0-3 (held-out
# loss 3.60 vs 2.35-2.44), and the weight matrices' norms jump about 12x and stay
# there; the other runs are untouched.
DEMO_INSTABILITY = Instability("1m", 4, "lr_spike", start_step=96, n_steps=16, factor=50.0)


LOG_SCHEMA = pa.schema(
    [
        pa.field("step", pa.int64()),
        pa.field("loss", pa.float64()),
        pa.field("lr", pa.float64()),
        pa.field("grad_norm", pa.float64()),
        pa.field("tokens_seen", pa.int64()),
    ]
)

RunDone = Callable[[str, int, pa.Table], None]


@dataclass(frozen=True, slots=True)
class _Job:
    """Everything one run needs; pickled to a worker process."""

    config: TrainConfig
    size: str
    seed: int
    corpus: np.ndarray  # (n, seq_len) token ids
    vocab_size: int
    tokenizer_dir: Path
    run_dir: Path


def train_suite(
    config: TrainConfig,
    out_dir: Path,
    on_run_done: RunDone | None = None,
    progress: bool = True,
) -> None:
    """Train every size x seed of `config` into `out_dir` (see the module docstring).

    `on_run_done(size, seed, log)` is called in this process as each run finishes
    (in completion order), with one row per optimiser step in `LOG_SCHEMA`.
    With more than one worker, runs train in spawned processes, so a script that
    calls this needs the usual `if __name__ == "__main__":` guard.
    """
    config.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grammar = Grammar()
    tokenizer = build_tokenizer(grammar.vocabulary(), model_max_length=CONTEXT)
    tokenizer_dir = out_dir / "tokenizer"
    with _atomic_dir(tokenizer_dir) as tmp:
        tokenizer.save_pretrained(tmp)
    _write_eval_documents(config, grammar, out_dir / "eval" / "documents.jsonl")
    eval_tasks.write_tasks(out_dir / "eval" / "tasks", config.eval_task_items, config.eval_task_seed, grammar)
    probe_tasks.write_probe_tasks(out_dir / "probe", config.probe_seed, grammar=grammar)
    corpus = _training_sequences(config, tokenizer, grammar)

    # Largest models first, so that parallel workers finish at about the same time.
    order = sorted(config.sizes, key=lambda s: -_n_params(s, len(tokenizer)))
    jobs = [
        _Job(config, size, seed, corpus, len(tokenizer), tokenizer_dir, out_dir / size / f"seed{seed}")
        for size in order
        for seed in config.seeds
    ]
    workers = config.workers or max(1, (os.cpu_count() or 1) // config.threads_per_run)
    workers = min(workers, len(jobs))

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not progress,
    )
    with bar:
        runs = bar.add_task("micro suite: runs", total=len(jobs))
        steps = bar.add_task("micro suite: steps", total=len(jobs) * config.total_steps)

        def finished(size: str, seed: int, log: pa.Table) -> None:
            bar.advance(runs)
            if on_run_done is not None:
                on_run_done(size, seed, log)

        if workers == 1:
            with _training_mode(config.threads_per_run):
                for job in jobs:
                    finished(job.size, job.seed, _train_run(job, lambda: bar.advance(steps)))
        else:
            _train_in_workers(jobs, workers, finished, lambda n: bar.advance(steps, n))

    _atomic_write_text(
        out_dir / "suite.yaml",
        yaml.dump(
            suite_document(config),
            Dumper=_SuiteDumper,
            sort_keys=False,
            width=1000,
        ),
    )


def train_suite_into_lake(config: TrainConfig, out_dir: Path, lake, progress: bool = True) -> Path:
    """`train_suite`, writing each run's training log to the lake's ``training_log``
    dataset (one partition per run) as the run finishes. Returns the suite file."""
    from polypythias.warehouse.lake import new_extraction_id
    from polypythias.warehouse.schemas import TRAINING_LOG

    def record(size: str, seed: int, log: pa.Table) -> None:
        extraction_id = new_extraction_id()
        log = log.add_column(0, "extraction_id", pa.array([extraction_id] * log.num_rows, pa.string()))
        partition = {"suite": config.suite_name, "model_size": size, "seed": seed}
        lake.write(TRAINING_LOG, partition, extraction_id, log)

    train_suite(config, out_dir, on_run_done=record, progress=progress)
    return Path(out_dir) / "suite.yaml"


def suite_document(config: TrainConfig) -> dict:
    """The suite file's content; paths are relative to the file's folder."""
    return {
        "name": config.suite_name,
        "sizes": list(config.sizes),
        "seeds": list(config.seeds),
        "steps": {"all": config.checkpoint_steps, "eval_grid": config.eval_grid_steps},
        "checkpoints": {"local": "{size}/seed{seed}/step{step}", "tokenizer": "tokenizer"},
        "extractors": {
            "token_stats": {
                "steps": "all",
                "documents": "eval/documents.jsonl",
                "top_k": TOKEN_STATS_TOP_K,
                # Micro documents are ~50 tokens: 64 of them make a small batch.
                "batch_size": TOKEN_STATS_BATCH_SIZE,
            },
            "weight_stats": {"steps": "all"},
            "evals": {
                "steps": "eval_grid",
                "tasks": list(eval_tasks.TASK_NAMES),
                "include_path": "eval/tasks",
                # Only the micro tasks: skip indexing lm-eval's ~14k built-in ones.
                "include_defaults": False,
                "batch_size": EVALS_BATCH_SIZE,
            },
            "probes": {
                "steps": "eval_grid",
                "tasks": {
                    "pos": {
                        "format": "conllu",
                        "field": "upos",
                        "train": "probe/pos_train.conllu",
                        "test": "probe/pos_test.conllu",
                    },
                    "antecedent": {
                        "format": "jsonl-text",
                        "pool": "last",
                        "train": "probe/antecedent_train.jsonl",
                        "test": "probe/antecedent_test.jsonl",
                    },
                },
                # Micro texts are ~8 tokens: a large batch is still a small one.
                "batch_size": PROBES_BATCH_SIZE,
            },
        },
    }


class _SuiteDumper(yaml.SafeDumper):
    """safe_dump's dumper, writing lists inline as in hand-written suite files."""


_SuiteDumper.add_representer(
    list,
    lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True),
)


def _train_in_workers(
    jobs: list[_Job],
    workers: int,
    finished: RunDone,
    advance_steps: Callable[[int], None],
) -> None:
    # Spawn, not fork: forking a process that has already used torch's thread
    # pools can deadlock.
    context = multiprocessing.get_context("spawn")
    ticks = context.Queue()  # one item per optimiser step, for the progress bar
    forwarder = threading.Thread(target=_forward_ticks, args=(ticks, advance_steps))
    forwarder.start()
    try:
        with ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(jobs[0].config.threads_per_run, ticks),
        ) as pool:
            futures = {pool.submit(_worker_run, job): job for job in jobs}
            try:
                for future in as_completed(futures):
                    job = futures[future]
                    finished(job.size, job.seed, future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    finally:
        ticks.put(None)
        forwarder.join()


def _forward_ticks(ticks: multiprocessing.Queue, advance_steps: Callable[[int], None]) -> None:
    while (tick := ticks.get()) is not None:
        advance_steps(tick)


_worker_ticks: multiprocessing.Queue | None = None


def _init_worker(threads: int, ticks: multiprocessing.Queue) -> None:
    global _worker_ticks
    _worker_ticks = ticks
    _use_training_settings(threads)


def _worker_run(job: _Job) -> pa.Table:
    assert _worker_ticks is not None
    return _train_run(job, lambda: _worker_ticks.put(1))


def _train_run(job: _Job, on_step: Callable[[], None]) -> pa.Table:
    """Train one run, writing its checkpoints and run.json; returns its log.
    Runs inside `_training_mode`."""
    config, shape = job.config, model_size(job.size)
    # The seed sets the initial weights; fork so the caller's RNG is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.seed)
        model = GPTNeoXForCausalLM(shape.model_config(job.vocab_size))
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]  # not biases or norms
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr_at(1),
        betas=ADAM_BETAS,
    )
    corpus = torch.from_numpy(job.corpus)
    order = _batch_order(len(corpus), config.total_steps, config.batch_size, job.seed)
    checkpoints = set(config.checkpoint_steps)
    rows: dict[str, list] = {name: [] for name in LOG_SCHEMA.names}
    injected = config.instabilities_of(job.size, job.seed)
    shuffled_steps = {s for i in injected if i.kind == "shuffled_tokens" for s in range(i.start_step, i.end_step + 1)}

    job.run_dir.mkdir(parents=True, exist_ok=True)
    if 0 in checkpoints:
        _save_checkpoint(model, job.tokenizer_dir, job.run_dir / "step0")
    for step in range(1, config.total_steps + 1):
        lr = config.lr_at(step)
        if injected:
            lr *= config.lr_factor_at(job.size, job.seed, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = corpus[order[step - 1]]
        if step in shuffled_steps:
            batch = _shuffle_tokens(batch, job.seed, step)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        for name, value in zip(
            LOG_SCHEMA.names,
            (
                step,
                loss.item(),
                lr,
                grad_norm.item(),
                step * batch.numel(),
            ),
        ):
            rows[name].append(value)
        if step in checkpoints:
            _save_checkpoint(model, job.tokenizer_dir, job.run_dir / f"step{step}")
        on_step()

    run_info = {
        "suite": config.suite_name,
        "size": job.size,
        "seed": job.seed,
        "n_params": sum(p.numel() for p in model.parameters()),
        "model": asdict(shape),
        "checkpoint_steps": config.checkpoint_steps,
        "final_loss": rows["loss"][-1],
        "train": {k: v for k, v in asdict(config).items() if k not in ("sizes", "seeds", "workers", "instabilities")},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    if injected:  # only the injected run says so; the others' run.json is unchanged
        run_info["injected_instability"] = [i.to_dict() for i in injected]
    _atomic_write_text(job.run_dir / "run.json", json.dumps(run_info, indent=2) + "\n")
    return pa.Table.from_pydict(rows, schema=LOG_SCHEMA)


def _n_params(size: str, vocab_size: int) -> int:
    shape = model_size(size)
    h, layers, v = shape.hidden_size, shape.num_layers, vocab_size
    # Per layer: attention 4h^2 + MLP 8h^2 and their biases, two layer norms.
    return layers * (12 * h * h + 13 * h) + 2 * v * h + 2 * h


def _batch_order(n_sequences: int, total_steps: int, batch_size: int, seed: int) -> np.ndarray:
    """Sequence indices of each step's batch, shape (total_steps, batch_size): a
    fresh permutation of the corpus per epoch, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    needed = total_steps * batch_size
    epochs = [rng.permutation(n_sequences) for _ in range(-(-needed // n_sequences))]
    return np.concatenate(epochs)[:needed].reshape(total_steps, batch_size)


def _shuffle_tokens(batch: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """`batch` with the tokens of each sequence in a random order, drawn from the run's
    seed and the step alone (numpy's generator: torch's RNG is left untouched)."""
    rng = np.random.default_rng([SHUFFLE_SEED_SALT, seed, step])
    return torch.from_numpy(rng.permuted(batch.numpy(), axis=1))


def _save_checkpoint(model: GPTNeoXForCausalLM, tokenizer_dir: Path, folder: Path) -> None:
    """Weights (safetensors) plus the tokenizer files, renamed into place when complete."""
    with _atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        for file in tokenizer_dir.iterdir():
            shutil.copyfile(file, tmp / file.name)


def _training_sequences(config: TrainConfig, tokenizer: PreTrainedTokenizerFast, grammar: Grammar) -> np.ndarray:
    """The training corpus as (n, seq_len) token ids: documents joined by
    <|endoftext|> (as in Pythia), cut into sequences, the remainder dropped."""
    documents = generate_documents(config.corpus_docs, config.data_seed, grammar=grammar)
    encoded = tokenizer([d.text for d in documents])["input_ids"]
    ids = [i for doc in encoded for i in (*doc, tokenizer.eos_token_id)]
    n = len(ids) // config.seq_len
    if n < 1:
        raise ValueError("corpus_docs too small for one training sequence")
    return np.array(ids[: n * config.seq_len], dtype=np.int64).reshape(n, config.seq_len)


def _write_eval_documents(config: TrainConfig, grammar: Grammar, path: Path) -> None:
    documents = generate_documents(config.eval_docs, config.eval_seed, grammar=grammar)
    lines = (json.dumps({"doc_id": i, "text": d.text}) for i, d in enumerate(documents))
    _atomic_write_text(path, "".join(line + "\n" for line in lines))


def _use_training_settings(threads: int) -> None:
    """Deterministic kernels, a fixed thread count, denormals flushed to zero and
    no per-save progress bars from transformers."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    # Softmax probabilities of never-seen tokens underflow into denormals, which
    # make CPU kernels several times slower.
    torch.set_flush_denormal(True)
    hf_logging.disable_progress_bar()


@contextmanager
def _training_mode(threads: int) -> Iterator[None]:
    """`_use_training_settings`, restoring the previous settings afterwards."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_bars = hf_logging.is_progress_bar_enabled()
    _use_training_settings(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_flush_denormal(False)
        if previous_bars:
            hf_logging.enable_progress_bar()


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
