"""Suite files: which runs, which steps, where checkpoints come from, what to extract.

A suite is a YAML file validated with pydantic. Two presets ship with the
package (``polypythias`` and ``micro``); ``load_suite`` takes a preset name or a
path. Relative paths inside a suite file resolve against the file's folder
(a preset's against the working directory).

    name: micro
    sizes: ["200k", "1m"]
    seeds: [0, 1, 2, 3, 4]
    steps:
      all: [0, 1, 2, 4, 8, "16:256:16"]      # "a:b:c" = a, a+c, … up to b inclusive
    checkpoints:
      local: "{size}/seed{seed}/step{step}"   # or repo: / revision:
    extractors:
      token_stats: {steps: all, documents: eval/documents.jsonl, top_k: 10}
      weight_stats: {steps: all}
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from polypythias.warehouse.lake import LakeError, validate_partition_value

PRESETS_DIR = Path(__file__).parent / "suites"
_RANGE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*:\s*(\d+)\s*$")
_TEMPLATE_FIELDS = {"size", "seed", "step"}


class SuiteError(Exception):
    """A suite file that cannot be used; the message names the file and the field."""


def _expand_steps(values: list[int | str]) -> list[int]:
    steps: set[int] = set()
    for value in values:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a step")
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"step {value} is negative")
            steps.add(value)
            continue
        match = _RANGE.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is neither a step nor a range 'start:stop:every'")
        start, stop, every = map(int, match.groups())
        if every <= 0 or stop < start:
            raise ValueError(f"range {value!r} is empty")
        steps.update(range(start, stop + 1, every))
    return sorted(steps)


def _check_template(template: str, allowed: set[str]) -> str:
    fields = set(re.findall(r"{(\w*)}", template))
    unknown = fields - allowed
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join('{' + f + '}' for f in sorted(unknown))}; "
            f"use {', '.join('{' + f + '}' for f in sorted(allowed))}"
        )
    return template


class CheckpointSource(BaseModel):
    """Where a checkpoint's weights come from: a hub repo revision or a local folder."""

    model_config = ConfigDict(extra="forbid")

    repo: str | None = Field(None, description="Hub repo template, e.g. 'EleutherAI/pythia-{size}-seed{seed}'.")
    repo_seed0: str | None = Field(
        None, description="Repo template for seed 0 when it differs (PolyPythias: 'EleutherAI/pythia-{size}')."
    )
    revision: str = Field("step{step}", description="Revision template for hub checkpoints.")
    local: str | None = Field(None, description="Local folder template, e.g. '{size}/seed{seed}/step{step}'.")
    tokenizer: str | None = Field(
        None, description="Tokenizer repo or folder shared by all checkpoints (default: each checkpoint's own)."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype the weights are loaded in; statistics are computed in float32."
    )

    @field_validator("repo", "repo_seed0", "local")
    @classmethod
    def _templates(cls, value: str | None) -> str | None:
        return None if value is None else _check_template(value, _TEMPLATE_FIELDS)

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str) -> str:
        return _check_template(value, {"step"})

    @model_validator(mode="after")
    def _one_source(self) -> CheckpointSource:
        if (self.repo is None) == (self.local is None):
            raise ValueError("give exactly one of 'repo' (hub) or 'local' (folders)")
        return self


class Suite(BaseModel):
    """A checkpoint suite: runs (sizes × seeds) × steps, and what to extract from them."""

    model_config = ConfigDict(extra="forbid")

    name: str
    sizes: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    steps: dict[str, list[int]] = Field(
        description="Named step sets; 'all' is required. Items are steps or 'start:stop:every' ranges."
    )
    checkpoints: CheckpointSource
    extractors: dict[str, dict[str, Any]] = Field(min_length=1)
    lake: str | None = Field(None, description="Lake root (overridden by POLYPYTHIAS_LAKE and --lake).")

    # The folder relative paths resolve against, and the file read; set by load_suite.
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _file: Path | None = PrivateAttr(default=None)
    # The suite a `narrowed` copy was selected from.
    _whole: Suite | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _partition_value("suite", value)

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, values: list[str]) -> list[str]:
        return [_partition_value("model_size", v) for v in _unique(values)]

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, values: list[int]) -> list[int]:
        return [_partition_value_int("seed", v) for v in _unique(values)]

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("steps must map step-set names to lists of steps")
        if "all" not in value:
            raise ValueError("steps needs an 'all' step set")
        expanded = {}
        for name, items in value.items():
            if not isinstance(items, list) or not items:
                raise ValueError(f"step set {name!r} must be a non-empty list")
            expanded[name] = _expand_steps(items)
        return expanded

    @model_validator(mode="after")
    def _extractors(self) -> Suite:
        from polypythias.extract.extractors import ExtractorError, get_extractor

        for name, options in self.extractors.items():
            try:
                extractor = get_extractor(name)
            except ExtractorError as error:  # names the known extractors
                raise _Located(f"extractors.{name}: {error}", ("extractors", name)) from None
            try:
                parsed = extractor.Options.model_validate(options or {})
            except ValidationError as error:
                first = error.errors()[0]["loc"]
                raise _Located(
                    f"extractors.{name}: {_describe(error, extractor.Options)}", ("extractors", name, *first)
                ) from None
            if parsed.steps not in self.steps:
                raise _Located(
                    f"extractors.{name}.steps: unknown step set {parsed.steps!r}; defined: {', '.join(self.steps)}",
                    ("extractors", name, "steps"),
                )
        return self

    # -- derived ---------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def file(self) -> Path | None:
        """The suite file (a preset's included); None for a suite built in code."""
        return self._file

    def resolve_path(self, path: str | Path) -> Path:
        """A path from the suite file, resolved against the file's folder."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else (self._base_dir / path).resolve()

    def extractor_options(self, name: str):
        from polypythias.extract.extractors import get_extractor

        return get_extractor(name).Options.model_validate(self.extractors[name] or {})

    def checkpoints_for(self, extractor: str) -> list[CheckpointId]:
        steps = self.steps[self.extractor_options(extractor).steps]
        return [
            CheckpointId(self.name, size, seed, step) for size in self.sizes for seed in self.seeds for step in steps
        ]

    def narrowed(
        self, sizes: list[str] | None = None, seeds: list[int] | None = None, steps: list[int] | None = None
    ) -> Suite:
        """This suite restricted to some of its sizes, seeds and steps (None: all).

        A selection narrows, never widens: a size, seed or step the suite does not
        have is a SuiteError. Each named step set keeps the selected steps it has
        (it may be left empty: that extractor then has nothing to do). The narrowed
        suite remembers the whole one (``whole``), whose grid is what the suite expects.
        """
        for option, given, known in (
            ("--sizes", sizes, self.sizes),
            ("--seeds", seeds, self.seeds),
            ("--steps", steps, self.steps["all"]),
        ):
            if given is None:
                continue
            if not given:
                raise SuiteError(f"{option}: selects nothing")
            unknown = [value for value in given if value not in known]
            if unknown:
                raise SuiteError(
                    f"{option}: {', '.join(map(str, unknown))} not in suite {self.name!r} "
                    f"({_summarise(known)}); a selection can only narrow the suite"
                )
        narrowed = self.model_copy(
            update={
                "sizes": [s for s in self.sizes if sizes is None or s in sizes],
                "seeds": [s for s in self.seeds if seeds is None or s in seeds],
                "steps": {
                    name: [s for s in values if steps is None or s in steps] for name, values in self.steps.items()
                },
            }
        )
        narrowed._whole = self.whole
        return narrowed

    @property
    def whole(self) -> Suite:
        """The suite before any ``narrowed`` selection (itself if none)."""
        return self._whole or self

    def source_of(self, checkpoint: CheckpointId) -> str:
        """Where a checkpoint lives: 'repo@revision' or a local folder path."""
        source = self.checkpoints
        fields = {"size": checkpoint.model_size, "seed": checkpoint.seed, "step": checkpoint.step}
        if source.local is not None:
            return str(self.resolve_path(source.local.format(**fields)))
        template = source.repo_seed0 if checkpoint.seed == 0 and source.repo_seed0 else source.repo
        return f"{template.format(**fields)}@{source.revision.format(**fields)}"


@dataclass(frozen=True, slots=True, order=True)
class CheckpointId:
    """Identity of a checkpoint: run (suite, size, seed) + training step."""

    suite: str
    model_size: str
    seed: int
    step: int

    def partition(self) -> dict[str, object]:
        return {
            "suite": self.suite,
            "model_size": self.model_size,
            "seed": self.seed,
            "step": self.step,
        }

    def __str__(self) -> str:
        return f"{self.suite}/{self.model_size}/seed{self.seed}/step{self.step}"


def parse_selection(
    sizes: str | None, seeds: str | None, steps: str | None
) -> tuple[list[str] | None, list[int] | None, list[int] | None]:
    """The comma-separated ``--sizes``, ``--seeds`` and ``--steps`` of the command
    line as lists (None where not given); steps may be ``start:stop:every`` ranges."""

    def items(option: str, text: str | None) -> list[str] | None:
        if text is None:
            return None
        values = [item.strip() for item in text.split(",") if item.strip()]
        if not values:
            raise SuiteError(f"{option} {text!r}: selects nothing")
        return values

    def integers(option: str, values: list[str] | None) -> list[int] | None:
        if values is None:
            return None
        try:
            return [int(value) for value in values]
        except ValueError:
            raise SuiteError(f"{option}: {', '.join(values)}: give non-negative integers, comma-separated") from None

    step_items = items("--steps", steps)
    try:
        step_list = None if step_items is None else _expand_steps([int(v) if v.isdigit() else v for v in step_items])
    except ValueError as error:
        raise SuiteError(f"--steps: {error}") from None
    return items("--sizes", sizes), integers("--seeds", items("--seeds", seeds)), step_list


def _summarise(values: list) -> str:
    """'a, b, c' for a short list, 'a, b … z (n in all)' for a long one."""
    if len(values) <= 12:
        return ", ".join(map(str, values))
    return f"{values[0]}, {values[1]} … {values[-1]} ({len(values)} in all)"


def _unique(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate values in {values}")
    return values


def _partition_value(column: str, value: str) -> str:
    try:
        return validate_partition_value(column, value)
    except LakeError as error:
        raise ValueError(str(error)) from None


def _partition_value_int(column: str, value: int) -> int:
    _partition_value(column, value)
    return value


def load_suite(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Load a preset by name (``polypythias``, ``micro``) or a suite YAML file.

    ``overrides`` are ``dotted.key=VALUE`` settings (VALUE is YAML) applied to the
    file's content before it is validated, as if the file said so: the way to point
    a preset at your own inputs without copying it (``extractors.token_stats.documents=
    /data/pile.jsonl``). Paths they give resolve like the file's own.

    SuiteError names the file and, where the YAML locates it, the line: a syntax
    error, a key given twice, a missing, unknown or mistyped field.
    """
    path = Path(name_or_path)
    preset = PRESETS_DIR / f"{name_or_path}.yaml"
    is_preset = path.suffix == "" and preset.is_file() and not path.is_file()
    file = preset if is_preset else path
    if not file.is_file():
        presets = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        what = "a folder, not a suite file" if file.is_dir() else "no such suite file"
        raise SuiteError(f"{file}: {what} (presets: {presets})")
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise SuiteError(f"{file}: cannot read the file: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise SuiteError(f"{file}: not a UTF-8 text file ({error.reason} at byte {error.start})") from None
    data, lines = _parse(file, text)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise SuiteError(f"{file}: a suite file must be a YAML mapping (name: …, sizes: …), got {got}")
    for override in overrides:
        _apply_override(data, override)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as error:
        problems = _problems(error, Suite, lines)
        raise SuiteError(
            f"{file}: " + "; ".join(f"line {line}: {text}" if line else text for line, text in problems)
        ) from None
    suite._base_dir = Path.cwd() if is_preset else file.resolve().parent
    suite._file = file
    return suite


def _apply_override(data: dict, override: str) -> None:
    """Set ``dotted.key=VALUE`` (VALUE parsed as YAML) in the suite's data; missing
    mappings on the way are created."""
    key, equals, value = override.partition("=")
    parts = key.strip().split(".")
    if not equals or not all(parts):
        raise SuiteError(f"--set {override!r}: give KEY=VALUE, KEY a dotted path such as extractors.evals.limit")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SuiteError(f"--set {key}: the value {value!r} is not valid YAML: {problem}") from None
    target = data
    for depth, part in enumerate(parts[:-1]):
        target = target.setdefault(part, {})
        if target is None:  # an empty mapping in the file (`evals:`)
            target = _parent(data, parts[:depth])[part] = {}
        if not isinstance(target, dict):
            raise SuiteError(f"--set {key}: {'.'.join(parts[: depth + 1])} is not a mapping")
    target[parts[-1]] = parsed


def _parent(data: dict, parts: list[str]) -> dict:
    for part in parts:
        data = data[part]
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, str | int | float | bool) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (first on line {seen[key]})", key_node.start_mark
                    )
                seen.setdefault(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def _parse(file: Path, text: str) -> tuple[Any, dict[tuple, int]]:
    """The YAML document and the line of every key and list item in it."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        context = ""
        if error.context and error.context_mark and error.context_mark is not mark:
            context = f" ({error.context} that starts on line {error.context_mark.line + 1})"
        raise SuiteError(f"{file}:{where} not valid YAML: {error.problem or error}{context}") from None
    except yaml.YAMLError as error:
        raise SuiteError(f"{file}: not valid YAML: {error}") from None
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {}
    if node is not None:
        _node_lines(node, (), lines)
    return data, lines


def _node_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _node_lines(value, (*path, key.value), lines)
            lines[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _node_lines(item, (*path, index), lines)


class _Located(ValueError):
    """A validation problem whose message names its field and that knows where the
    field is (``path``), beyond the field pydantic reports it under."""

    def __init__(self, message: str, path: tuple) -> None:
        super().__init__(message)
        self.path = path


def _problems(error: ValidationError, model: type[BaseModel], lines: dict[tuple, int]) -> list[tuple[int | None, str]]:
    """(line or None, "field: problem") for each error; the line of the field, else of
    the nearest enclosing key that the file has (none for the top level)."""
    problems = []
    for item in error.errors():
        located = (item.get("ctx") or {}).get("error")
        path = located.path if isinstance(located, _Located) else tuple(item["loc"])
        line = next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), None)
        text = _message(item, model) if isinstance(located, _Located) else _describe_one(item, model)
        problems.append((line, text))
    return problems


def _describe(error: ValidationError, model: type[BaseModel]) -> str:
    return "; ".join(_describe_one(item, model) for item in error.errors())


def _describe_one(item: dict, model: type[BaseModel]) -> str:
    where = ".".join(str(p) for p in item["loc"])
    message = _message(item, model)
    return f"{where}: {message}" if where else message


def _message(item: dict, model: type[BaseModel]) -> str:
    message = item["msg"].removeprefix("Value error, ")
    if item["type"] == "extra_forbidden":
        known = _fields_at(model, tuple(item["loc"][:-1]))
        if known:
            close = difflib.get_close_matches(str(item["loc"][-1]), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return f"unknown field ({hint}known: {', '.join(known)})"
        return "unknown field"
    if item["type"] not in {"missing", "value_error", "assertion_error"}:
        value = item.get("input")
        if isinstance(value, str | int | float | bool) or value is None:
            message += f", got {value!r}"  # pydantic's own type errors do not say what they got
    return message


def _fields_at(model: type[BaseModel], path: tuple) -> list[str]:
    """The fields of the (sub)model that ``path`` leads to, where it is one."""
    for part in path:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
