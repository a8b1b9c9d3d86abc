"""lm-eval's output as the lake's ``eval_results`` and ``eval_samples`` tables.

One conversion serves both ways results arrive: the ``evals`` extractor (the
dict ``lm_eval.simple_evaluate`` returns) and ``polypythias ingest lm-eval``
(the JSON files the harness writes). Two result formats exist:

- lm-eval 0.4 (``results_<timestamp>.json``): ``results[task]`` maps
  ``"<metric>,<filter>"`` and ``"<metric>_stderr,<filter>"`` to numbers, with
  ``n-shot``, ``n-samples``, ``versions``, ``lm_eval_version`` and ``date`` beside it;
  samples are dicts (in memory) or JSON lines (``samples_<task>_<timestamp>.jsonl``)
  in which tuples became lists and numbers may have become strings.
- the older 0.3 format: ``results[task]`` maps ``"<metric>"`` and
  ``"<metric>_stderr"``; ``versions`` and ``config.num_fewshot`` beside it; no samples.
- GPT-NeoX's own ``evaluate.py`` (the first Pythia evaluations): the 0.3 shape, with
  ``config.model`` ``neox`` and ``config.model_args`` a dict of the whole training
  configuration.
- the BigScience prompt-source fork: ``table_results`` maps ``"<task>+<prompt>"`` to
  ``task_name``, ``prompt_name`` and metrics (``results`` is the same as a list of
  rows); the task of a row is ``<task>+<prompt>``, so that two prompts of one task
  stay two tasks.

Tables come back without the ``extraction_id`` column, which the writer adds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import pyarrow as pa

from polypythias.warehouse.schemas import EVAL_RESULTS, EVAL_SAMPLES

#: Keys of a 0.4 ``results[task]`` entry that are not metrics.
_NOT_METRICS = {"alias", "name", "sample_len", " ", ""}
#: Fields of a prompt-source row that describe the prompt, not a metric.
_PROMPT_FIELDS = {"task_name", "prompt_name", "prompt_id", "prompt_original_task", "subset"}

RESULTS_SCHEMA = EVAL_RESULTS.schema.remove(EVAL_RESULTS.schema.get_field_index("extraction_id"))
SAMPLES_SCHEMA = EVAL_SAMPLES.schema.remove(EVAL_SAMPLES.schema.get_field_index("extraction_id"))


class LmEvalFormatError(ValueError):
    """lm-eval output that does not have the expected shape; says what is wrong."""


def detect_format(document: Mapping) -> str:
    """'lm-eval-0.4', 'lm-eval-0.3', 'gpt-neox' or 'prompt-source' for a results
    document, else LmEvalFormatError."""
    if not isinstance(document, Mapping):
        raise LmEvalFormatError("no 'results' object: not an lm-eval results file")
    results = document.get("results")
    if isinstance(document.get("table_results"), Mapping) or isinstance(results, list):
        return "prompt-source"
    if not isinstance(results, Mapping):
        raise LmEvalFormatError("no 'results' object: not an lm-eval results file")
    if (
        "n-shot" in document
        or "lm_eval_version" in document
        or any("," in key for entry in results.values() if isinstance(entry, Mapping) for key in entry)
    ):
        return "lm-eval-0.4"
    config = document.get("config")
    if isinstance(config, Mapping) and config.get("model") == "neox" and isinstance(config.get("model_args"), Mapping):
        return "gpt-neox"
    if isinstance(config, Mapping) and "versions" in document:
        return "lm-eval-0.3"
    raise LmEvalFormatError("'results' without 'versions' and 'config': not an lm-eval results file")


def results_table(document: Mapping, evaluated_at: datetime, num_fewshot: int = 0) -> pa.Table:
    """``eval_results`` rows of one results document (either format).

    ``num_fewshot`` is the fallback when the document does not record it per task.
    """
    fmt = detect_format(document)
    versions = document.get("versions") or {}
    rows = []
    if fmt == "lm-eval-0.4":
        n_shot = document.get("n-shot") or {}
        n_samples = document.get("n-samples") or {}
        harness = document.get("lm_eval_version")
        for task, entry in _tasks(document):
            values, errors = {}, {}
            for key, value in entry.items():
                if key in _NOT_METRICS or "," not in key:
                    continue
                metric, _, filter_ = key.partition(",")
                if metric.endswith("_stderr"):
                    errors[(metric.removesuffix("_stderr"), filter_)] = _number(value)
                else:
                    values[(metric, filter_)] = _number(value)
            shots = _int(n_shot.get(task), num_fewshot)
            count = n_samples.get(task, {})
            n = count.get("effective") if isinstance(count, Mapping) else None
            n = n if n is not None else entry.get("sample_len")
            for (metric, filter_), value in values.items():
                if value is None:
                    continue
                rows.append(
                    _result(
                        task,
                        metric,
                        filter_,
                        value,
                        errors.get((metric, filter_)),
                        n,
                        shots,
                        versions.get(task),
                        harness,
                        evaluated_at,
                    )
                )
    elif fmt == "prompt-source":
        config = document.get("config")
        shots = _int(config.get("num_fewshot"), num_fewshot) if isinstance(config, Mapping) else num_fewshot
        for task, entry in prompt_source_tasks(document):
            for metric, value in entry.items():
                if metric in _PROMPT_FIELDS or metric.endswith("_stderr") or not _is_number(value):
                    continue
                rows.append(
                    _result(
                        task,
                        metric,
                        "none",
                        float(value),
                        _number(entry.get(f"{metric}_stderr")),
                        None,
                        shots,
                        versions.get(task),
                        None,
                        evaluated_at,
                    )
                )
    else:
        shots = _int(document["config"].get("num_fewshot"), num_fewshot)
        for task, entry in _tasks(document):
            for metric, value in entry.items():
                if metric.endswith("_stderr") or _number(value) is None:
                    continue
                rows.append(
                    _result(
                        task,
                        metric,
                        "none",
                        _number(value),
                        _number(entry.get(f"{metric}_stderr")),
                        None,
                        shots,
                        versions.get(task),
                        None,
                        evaluated_at,
                    )
                )
    return pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)


def samples_table(task: str, samples: Iterable[Mapping], num_fewshot: int) -> pa.Table:
    """``eval_samples`` rows of one task's logged samples (in memory or from JSONL)."""
    rows = []
    for number, sample in enumerate(samples, start=1):
        try:
            rows.append(_sample(task, sample, num_fewshot))
        except (KeyError, TypeError, ValueError) as error:
            raise LmEvalFormatError(f"task {task!r} sample {number}: {type(error).__name__}: {error}") from None
    return pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA)


def evaluated_at_of(document: Mapping) -> datetime | None:
    """The 0.4 ``date`` field (unix seconds) as a UTC time, if present."""
    date = document.get("date")
    if isinstance(date, int | float) and not isinstance(date, bool):
        return datetime.fromtimestamp(date, UTC)
    return None


def prompt_source_tasks(document: Mapping) -> list[tuple[str, Mapping]]:
    """(``<task>+<prompt>``, metrics) of a prompt-source document: its
    ``table_results``, else its ``results`` rows."""
    table = document.get("table_results")
    if isinstance(table, Mapping):
        entries = list(table.items())
    else:
        entries = []
        for number, row in enumerate(document["results"], start=1):
            if not isinstance(row, Mapping) or not isinstance(row.get("task_name"), str):
                raise LmEvalFormatError(f"results row {number} has no task_name")
            entries.append((f"{row['task_name']}+{row.get('prompt_name') or ''}", row))
    for task, entry in entries:
        if not isinstance(entry, Mapping):
            raise LmEvalFormatError(f"table_results[{task!r}] is not an object")
    return entries


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tasks(document: Mapping) -> Iterable[tuple[str, Mapping]]:
    for task, entry in document["results"].items():
        if not isinstance(entry, Mapping):
            raise LmEvalFormatError(f"results[{task!r}] is not an object")
        yield task, entry


def _result(task, metric, filter_, value, stderr, n, shots, version, harness, evaluated_at) -> dict:
    return {
        "task": task,
        "metric": metric,
        "filter": filter_,
        "value": value,
        "stderr": stderr,
        "n_samples": None if n is None else int(n),
        "num_fewshot": shots,
        "task_version": None if version is None else str(version),
        "harness_version": harness,
        "evaluated_at": evaluated_at,
    }


def _sample(task: str, sample: Mapping, num_fewshot: int) -> dict:
    responses = sample.get("filtered_resps")
    loglikelihoods = is_greedy = predicted = target_index = None
    if isinstance(responses, list) and responses and all(_is_loglikelihood(r) for r in responses):
        loglikelihoods = [float(r[0]) for r in responses]
        is_greedy = [_bool(r[1]) for r in responses]
        if len(loglikelihoods) > 1:  # multiple choice: one response per choice
            predicted = max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__)
            target_index = _int(sample.get("target"), None)
    metrics = {}
    for name in sample.get("metrics") or ():
        value = _number(sample.get(name))
        if value is not None:
            metrics[name] = value
    target = sample.get("target")
    return {
        "task": task,
        "filter": sample.get("filter") or "none",
        "num_fewshot": num_fewshot,
        "doc_id": int(sample["doc_id"]),
        "doc_hash": sample.get("doc_hash"),
        "target": None if target is None else str(target),
        "target_index": target_index,
        "choice_loglikelihoods": loglikelihoods,
        "choice_is_greedy": is_greedy,
        "predicted": predicted,
        "metrics": list(metrics.items()),
    }


def _is_loglikelihood(response: object) -> bool:
    """A (loglikelihood, is_greedy) pair, as a tuple or as JSON's list of strings."""
    if not isinstance(response, list | tuple) or len(response) != 2:
        return False
    return _number(response[0]) is not None


def _number(value: object) -> float | None:
    """A finite or infinite float from a number, bool or numeric string; None otherwise."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return None if math.isnan(value) else float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return None if math.isnan(number) else number
    return None


def _bool(value: object) -> bool:
    if isinstance(value, str):
        if value not in ("True", "False", "true", "false", "1", "0"):
            raise ValueError(f"{value!r} is not a boolean")
        return value in ("True", "true", "1")
    return bool(value)


def _int(value: object, default: int | None) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return default
