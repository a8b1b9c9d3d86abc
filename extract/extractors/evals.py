"""Downstream evaluation with the lm-evaluation-harness, per checkpoint and per item.

The harness runs on the model the runner already loaded (``HFLM(pretrained=model,
tokenizer=tokenizer)``), with ``log_samples`` on, and its output becomes two tables
(see ``polypythias.extract.lm_eval_tables``): ``eval_results`` (task x metric x
filter, with the harness's stderr) and ``eval_samples`` (one row per item, with the
per-choice log-likelihoods and the item's metrics).

What makes it fast on many small checkpoints: the task index, the task objects and
their datasets are built once per job (``prepare``), and each checkpoint only wraps
the model and calls ``lm_eval.evaluator.evaluate`` on them. The requests' token ids
are kept while the tokenizer stays the same object (a suite with a shared
``checkpoints.tokenizer``): every checkpoint asks for the same texts, and tokenizing
them took a sixth of a micro checkpoint's evaluation. Before every call the
harness's seeds are reset to those ``simple_evaluate`` uses, so every checkpoint
sees the same few-shot examples a fresh ``simple_evaluate`` would give.

Traps handled here:

- lm-eval resolves a task's relative ``dataset_kwargs.data_files`` against the
  working directory, not the YAML's folder. The YAML files of ``include_path`` are
  therefore copied to a temporary folder (other files are linked) with every
  relative ``data_files`` path made absolute against the folder of the YAML that
  names it. Only ``dataset_kwargs.data_files`` is rewritten.
- Bootstrapped stderrs (e.g. perplexity's) start a process pool per metric unless
  ``DISABLE_MULTIPROC`` is set; it is set during evaluation, which also makes them
  deterministic. ``bootstrap_iters`` defaults to 1000, not the harness's 100000:
  mean-type metrics (acc, acc_norm) use the closed-form stderr anyway, and for the
  others 1000 resamples estimate the stderr to a few per cent at a hundredth of
  the time. 0 skips stderrs (they are stored as null).
- Hub access is the caller's: task datasets on the hub need the network or, with
  ``HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1``, the local cache; local JSONL tasks
  (the micro suite's) need neither. Remote code is never trusted (``datasets`` >= 4
  cannot run dataset scripts at all, and the model is passed in already loaded).
- The harness's per-call progress bars and info logs are silenced; its errors are
  raised as usual and what it printed is kept in the debug log.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import io
import logging
import math
import os
import random
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from pydantic import Field

from polypythias.extract.extractors import Diverged, Extractor, ExtractorError, ExtractorOptions, register
from polypythias.extract.lm_eval_tables import SAMPLES_SCHEMA, results_table, samples_table
from polypythias.warehouse.schemas import EVAL_RESULTS, EVAL_SAMPLES

log = logging.getLogger(__name__)

#: lm-eval's default seeds (``lm_eval.defaults``, as ``simple_evaluate`` sets them):
#: python's random module; numpy, torch and the few-shot sampler.
_RANDOM_SEED, _OTHER_SEED = 0, 1234


class EvalsOptions(ExtractorOptions):
    tasks: list[str] = Field(min_length=1, description="lm-eval task (or group) names.")
    include_path: str | None = Field(
        None,
        description=(
            "Folder of extra task YAMLs (searched recursively). Relative data_files in them "
            "resolve against each YAML's own folder."
        ),
    )
    include_defaults: bool = Field(
        True,
        description=(
            "Load lm-eval's built-in task registry (needed for hub tasks such as arc_easy; "
            "False saves ~6 s per job when only include_path tasks are used)."
        ),
    )
    num_fewshot: int = Field(0, ge=0, description="Few-shot examples per item (a task whose YAML fixes 0 keeps 0).")
    batch_size: int = Field(32, ge=1, description="Requests per forward pass.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N items per task (quick runs).")
    bootstrap_iters: int = Field(
        1000,
        ge=0,
        description="Bootstrap resamples for stderrs that have no closed form (0: no stderrs).",
    )
    fewshot_seed: int = Field(_OTHER_SEED, description="Seed of the few-shot example sampler.")


@register
class Evals(Extractor):
    name = "evals"
    Options = EvalsOptions
    outputs = (EVAL_RESULTS, EVAL_SAMPLES)
    file_options = ("include_path",)

    def __init__(self, options: EvalsOptions, suite) -> None:
        super().__init__(options, suite)
        self.include_path = None
        if options.include_path is not None:
            self.include_path = suite.resolve_path(options.include_path)
            if not self.include_path.is_dir():
                raise ExtractorError(f"evals.include_path: {self.include_path} is not a folder")
        self._tasks: dict | None = None
        self._error: ExtractorError | None = None
        #: The last tokenizer seen and the token ids of the texts it encoded.
        self._encodings: tuple[object, dict] = (None, {})

    def prepare(self) -> None:
        """Index and load the tasks and their datasets (once; run() calls it too)."""
        if self._tasks is not None:
            return
        if self._error is not None:
            raise self._error
        try:
            with _single_process(), _quiet():
                self._tasks = self._load_tasks()
        except ExtractorError as error:
            self._error = error
            raise

    def _load_tasks(self) -> dict:
        from lm_eval.tasks import TaskManager

        with tempfile.TemporaryDirectory(prefix="polypythias-tasks-") as tmp:
            include = _copy_tasks(self.include_path, Path(tmp)) if self.include_path else None
            manager = TaskManager(include_path=include, include_defaults=self.options.include_defaults)
            unknown = [t for t in self.options.tasks if t not in manager.all_tasks]
            if unknown:
                raise ExtractorError(self._unknown_tasks(unknown, manager.all_tasks))
            try:
                loaded = manager.load(list(self.options.tasks))
            except Exception as error:
                raise ExtractorError(
                    f"evals: cannot load tasks {self.options.tasks}: {type(error).__name__}: {error}"
                ) from error
        for task in loaded["tasks"].values():
            # As `simple_evaluate(num_fewshot=...)`: a YAML that fixes 0 shots keeps 0.
            if task.get_config("num_fewshot") != 0:
                task.set_config(key="num_fewshot", value=self.options.num_fewshot)
        return loaded

    def _unknown_tasks(self, unknown: list[str], available: list[str]) -> str:
        """What is wrong and what could have been meant: every task available when
        there are few (include_path only), else the closest names."""
        where = [f"include_path {self.include_path}"] if self.include_path else []
        if self.options.include_defaults:
            where.append("lm-eval's built-in tasks")
        file = getattr(self.suite, "file", None)
        message = (
            f"{f'{file}: ' if file else ''}extractors.evals.tasks: unknown lm-eval task(s) "
            f"{', '.join(map(repr, unknown))} "
            f"(searched: {' and '.join(where) or 'nothing: set include_path or include_defaults'})"
        )
        if not available:
            return message + "; no task is available there"
        if len(available) <= 20:
            return message + f"; available: {', '.join(sorted(available))}"
        hints = [
            f"{task!r}: did you mean {', '.join(map(repr, close))}?"
            for task in unknown
            if (close := difflib.get_close_matches(task, available, n=3, cutoff=0.6))
        ]
        return (
            message
            + f"; {len(available)} available (`lm-eval ls tasks` lists them)"
            + ("; " + "; ".join(hints) if hints else "")
        )

    def run(self, model, tokenizer, checkpoint, device) -> dict[str, pa.Table]:
        import numpy as np
        import torch
        from lm_eval.evaluator import evaluate

        self.prepare()
        assert self._tasks is not None
        for task in self._tasks["tasks"].values():
            task.set_fewshot_seed(seed=self.options.fewshot_seed)
        random.seed(_RANDOM_SEED)
        np.random.seed(_OTHER_SEED)
        torch.manual_seed(_OTHER_SEED)

        if self._encodings[0] is not tokenizer:
            self._encodings = (tokenizer, {})
        evaluated_at = datetime.now(UTC)
        with _single_process(), _quiet():
            lm = _quiet_hflm()(
                pretrained=model,
                tokenizer=tokenizer,
                encodings=self._encodings[1],
                batch_size=self.options.batch_size,
                device=str(device),
            )
            document = evaluate(
                lm=lm,
                task_dict=self._tasks,
                limit=self.options.limit,
                bootstrap_iters=self.options.bootstrap_iters,
                log_samples=True,
            )
        document["lm_eval_version"] = metadata.version("lm_eval")
        return {
            EVAL_RESULTS.name: results_table(document, evaluated_at, self.options.num_fewshot),
            EVAL_SAMPLES.name: _samples(document),
        }


def _samples(document: dict) -> pa.Table:
    n_shot = document.get("n-shot", {})
    tables = [
        samples_table(task, samples, int(n_shot.get(task, 0)))
        for task, samples in sorted(document.get("samples", {}).items())
    ]
    return pa.concat_tables(tables) if tables else SAMPLES_SCHEMA.empty_table()


def _check_finite(loglikelihoods: list[float], kind: str) -> None:
    """A NaN or inf log-likelihood (a diverged model) would make every metric built
    on it meaningless: the checkpoint is recorded as diverged instead."""
    bad = sum(1 for ll in loglikelihoods if not math.isfinite(ll))
    if bad:
        raise Diverged(
            f"evals: {bad} of {len(loglikelihoods)} {kind} request(s) gave a log-likelihood "
            "that is not finite (NaN or inf)"
        )


@functools.cache
def _quiet_hflm():
    """HFLM without its per-call progress bars (defined lazily: lm_eval imports slowly)."""
    from lm_eval.models.huggingface import HFLM

    class QuietHFLM(HFLM):
        def __init__(self, *args, encodings: dict, **kwargs) -> None:
            #: Token ids by (text, options), to fill or reuse: Evals.run passes one
            #: dict to every checkpoint that uses the same tokenizer.
            self.encodings = encodings
            super().__init__(*args, **kwargs)

        def tok_encode(self, string, add_special_tokens=None, left_truncate_len=None, **kwargs):
            if kwargs:
                return super().tok_encode(string, add_special_tokens, left_truncate_len, **kwargs)
            key = (string, add_special_tokens, left_truncate_len, self.add_bos_token)
            if key not in self.encodings:
                self.encodings[key] = super().tok_encode(string, add_special_tokens, left_truncate_len)
            return list(self.encodings[key])  # a copy: callers may change theirs

        def loglikelihood(self, requests, disable_tqdm=True):
            results = super().loglikelihood(requests, disable_tqdm=True)
            _check_finite([ll for ll, _ in results], "loglikelihood")
            return results

        def loglikelihood_rolling(self, requests, disable_tqdm=True):
            results = super().loglikelihood_rolling(requests, disable_tqdm=True)
            _check_finite(results, "loglikelihood_rolling")
            return results

        def generate_until(self, requests, disable_tqdm=True):
            return super().generate_until(requests, disable_tqdm=True)

    return QuietHFLM


# -- include_path: YAMLs with absolute data paths ---------------------------------


class _Tagged:
    """A tagged YAML scalar (lm-eval's ``!function module.name``), kept as written."""

    def __init__(self, tag: str, value: str) -> None:
        self.tag, self.value = tag, value


class _TaskLoader(yaml.SafeLoader):
    """Safe YAML that keeps lm-eval's tags (``!function …``) as written."""


class _TaskDumper(yaml.SafeDumper):
    """Writes the tags ``_TaskLoader`` kept back as they were."""


_TaskLoader.add_multi_constructor(
    "!", lambda loader, suffix, node: _Tagged("!" + suffix, loader.construct_scalar(node))
)
_TaskDumper.add_representer(_Tagged, lambda dumper, tagged: dumper.represent_scalar(tagged.tag, tagged.value))


def _copy_tasks(source: Path, target: Path) -> Path:
    """Mirror ``source`` in ``target``: YAML files (``*.yaml``, ``*.yml`` and
    lm-eval's ``*_yaml`` templates) rewritten with absolute ``data_files``, every
    other file (Python helpers, data) linked. Returns ``target``."""
    for file in sorted(source.rglob("*")):
        relative = file.relative_to(source)
        if not file.is_file() or any(p.startswith(".") or p == "__pycache__" for p in relative.parts):
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if file.suffix in (".yaml", ".yml") or file.name.endswith("_yaml"):
            destination.write_text(_absolute_data_files(file))
        else:
            destination.symlink_to(file.resolve())
    return target


def _absolute_data_files(file: Path) -> str:
    """The YAML text of ``file`` with relative data_files resolved against its folder."""
    try:
        config = yaml.load(file.read_text(), Loader=_TaskLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as error:
        raise ExtractorError(f"{file}: not valid YAML: {error}") from None
    kwargs = config.get("dataset_kwargs") if isinstance(config, dict) else None
    if isinstance(kwargs, dict) and "data_files" in kwargs:
        kwargs["data_files"] = _resolve(kwargs["data_files"], file.parent)
    return yaml.dump(config, Dumper=_TaskDumper, sort_keys=False, allow_unicode=True)


def _resolve(value: Any, folder: Path) -> Any:
    if isinstance(value, str):
        return value if "://" in value or Path(value).is_absolute() else str((folder / value).resolve())
    if isinstance(value, list):
        return [_resolve(v, folder) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, folder) for k, v in value.items()}
    return value


# -- quiet, single-process harness -------------------------------------------------------


@contextlib.contextmanager
def _single_process():
    """Bootstrap stderr without a process pool, for the call (lm-eval reads
    DISABLE_MULTIPROC). Hub access is the user's choice: HF_HUB_OFFLINE as set."""
    wanted = {"DISABLE_MULTIPROC": "1"}
    previous = {key: os.environ.get(key) for key in wanted}
    for key, value in wanted.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _quiet():
    """lm-eval's info logs, prints and progress bars out of the way; errors pass.

    Some of its progress bars and prints cannot be switched off, so stdout and
    stderr are captured for the call; what they got is logged (debug) only when
    the call fails. Exceptions propagate unchanged.
    """
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield
    except BaseException:
        log.debug("lm-eval printed before failing:\n%s", captured.getvalue())
        raise
    finally:
        logger.setLevel(level)
