"""Who a results file written by GPT-NeoX's ``evaluate.py`` says it evaluated.

The first Pythia evaluations, the bias evaluations and the prompt-source WinoBias files
name no ``pretrained=`` model: their ``model_args`` is the run's training configuration
(a dict), or, in some prompt-source files, a small dict with ``iteration`` and the
run's config file name. Their identity is read from what that configuration states:

- the step is ``iteration``;
- the size is the architecture's (``num_layers``, ``hidden_size``,
  ``num_attention_heads`` against the Pythia size table); without an architecture,
  the size the run's names give (``eval_results_prefix``, ``load``, ``save``,
  ``wandb_group``, else the config file names), read through the old size names of
  the first Pythia runs (19M = 70m, 125M = 160m, 350M = 410m, 800M = 1b, 1.3B = 1.4b,
  2.7B = 2.8b, 6.7B = 6.9b, 13B = 12b); without those either, the size the file's
  folders give, recorded as a finding;
- deduplicated or not is what ``train_data_paths`` says (a path with ``dedup`` in it),
  else what the run's names say;
- the run kind (``intervention``, ``long-intervention``) is what the first of the
  run's names (in the order above) says;
- a run named by old size names, or by no name at all, is a v0 model (the original
  Pythia runs, which v1 retrained with other hyperparameters): variant ``v0``, so it
  is never merged with the v1 checkpoint of the same size and step;
- the seed is 0 (these are the original runs).

Every name that says something else than the identity chosen is a finding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Pythia sizes by (num_layers, hidden_size, num_attention_heads).
PYTHIA_ARCHITECTURES = {
    (6, 128, 4): "14m",
    (6, 256, 8): "31m",
    (6, 512, 8): "70m",
    (12, 768, 12): "160m",
    (24, 1024, 16): "410m",
    (16, 2048, 8): "1b",
    (24, 2048, 16): "1.4b",
    (32, 2560, 32): "2.8b",
    (32, 4096, 32): "6.9b",
    (36, 5120, 40): "12b",
}
#: The first Pythia runs' size names and today's.
OLD_SIZE_NAMES = {
    "19m": "70m",
    "125m": "160m",
    "350m": "410m",
    "800m": "1b",
    "1.3b": "1.4b",
    "2.7b": "2.8b",
    "6.7b": "6.9b",
    "13b": "12b",
}
_SIZE = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?[mb])(?![A-Za-z0-9])", re.IGNORECASE)
_LONG_INTERVENTION = re.compile(r"long(?:er)?[-_ ]?(?:gender)?[-_ ]?interven", re.IGNORECASE)
_INTERVENTION = re.compile(r"interven", re.IGNORECASE)
#: wandb appends an 8-character run id to the group's name.
_WANDB_RUN_ID = re.compile(r"_[a-z0-9]{8}$")


class NeoxIdentityError(ValueError):
    """The file does not state enough to say which checkpoint it evaluated; ``reason``
    is the kind of problem."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def size_in(name: str, old_names: bool = True) -> str | None:
    """Today's name of the first size a name gives (old names translated), or None."""
    match = _SIZE.search(name)
    if match is None:
        return None
    size = match.group(1).lower()
    return OLD_SIZE_NAMES.get(size, size) if old_names else size


def uses_old_size_name(name: str) -> bool:
    match = _SIZE.search(name)
    return match is not None and match.group(1).lower() in OLD_SIZE_NAMES


def kind_in(name: str) -> str | None:
    """The run kind a name gives: 'long-intervention', 'intervention' or None."""
    if _LONG_INTERVENTION.search(name):
        return "long-intervention"
    return "intervention" if _INTERVENTION.search(name) else None


@dataclass(slots=True)
class NeoxRun:
    """The checkpoint a NeoX-era file evaluated, and what disagreed."""

    name: str
    model_size: str
    step: int
    variant: str
    findings: list[str] = field(default_factory=list)


def neox_run(args: Mapping, folder_names: list[str], step_option: int | None = None) -> NeoxRun:
    """Identity of a NeoX-era file from its ``model_args`` dict; ``folder_names`` (the
    file's name and its folders) give the size only when the file gives none;
    ``step_option`` (``--step``) the step only when the file states no iteration."""
    step = args.get("iteration", step_option)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise NeoxIdentityError(
            f"model_args states no checkpoint (iteration {step!r}): import it with --step N", "states no checkpoint"
        )
    names = _run_names(args)
    findings: list[str] = []

    architecture = tuple(args.get(k) for k in ("num_layers", "hidden_size", "num_attention_heads"))
    named_sizes = [(source, name, size_in(name)) for source, name in names if size_in(name)]
    if all(isinstance(v, int) for v in architecture) and architecture in PYTHIA_ARCHITECTURES:
        size, size_source = PYTHIA_ARCHITECTURES[architecture], "the architecture"
    elif named_sizes:
        source, name, size = named_sizes[0]
        size_source = f"{source} {name!r}"
        if any(v is not None for v in architecture):
            findings.append(
                f"architecture {_architecture(architecture)} is no Pythia size; size {size} from {size_source}"
            )
    else:
        folder = next((n for n in folder_names if size_in(n)), None)
        if folder is None:
            raise NeoxIdentityError("model_args states no Pythia architecture or size name", "no model size")
        size, size_source = size_in(folder), "the path"
        findings.append(f"size {size} from the path ({folder!r}): the file does not state it")
    for source, name, named in named_sizes:
        if named != size:
            findings.append(f"{source} {name!r} says size {named} but {size_source} is {size}")

    deduped = _deduplicated(args, names, findings)
    kinds = [(source, name, kind_in(name)) for source, name in names]
    kind = kinds[0][2] if kinds else None
    for source, name, other in kinds[1:]:
        if not _compatible(kind, other):
            findings.append(f"{source} {name!r} says {other or 'no intervention'} but the run is {kind or 'standard'}")
    is_v0 = not names or any(uses_old_size_name(name) for _, name in names)
    parts = [kind, "deduped" if deduped else None, "v0" if is_v0 else None]
    run_name = names[0][1] if names else f"pythia-{size}"
    return NeoxRun(run_name, size, step, "-".join(p for p in parts if p) or "standard", findings)


def _run_names(args: Mapping) -> list[tuple[str, str]]:
    """(source, name) of each name the configuration gives its run, most telling first."""
    names = []
    for key in ("eval_results_prefix", "load", "save"):
        value = args.get(key)
        if isinstance(value, str) and value.strip("/"):
            names.append((key, value.rstrip("/").rpartition("/")[2]))
    group = args.get("wandb_group")
    if isinstance(group, str) and group:
        names.append(("wandb_group", _WANDB_RUN_ID.sub("", group)))
    if not names and isinstance(args.get("config_files"), Mapping):
        names += [("config file", re.sub(r"\.ya?ml$", "", str(k))) for k in args["config_files"]]
    return names


def _deduplicated(args: Mapping, names: list[tuple[str, str]], findings: list[str]) -> bool:
    paths = args.get("train_data_paths")
    said = [(source, name) for source, name in names if "dedup" in name.lower()]
    if isinstance(paths, list) and paths and all(isinstance(p, str) for p in paths):
        deduped = any("dedup" in p.lower() for p in paths)
        if said and not deduped:
            source, name = said[0]
            findings.append(f"{source} {name!r} says deduped but train_data_paths is the standard Pile")
        elif deduped and names and not said:
            findings.append("train_data_paths is the deduplicated Pile but no run name says dedup")
        return deduped
    return bool(said)


def _compatible(kind: str | None, other: str | None) -> bool:
    """A long intervention is an intervention: names that say either agree."""
    return kind == other or {kind, other} == {"intervention", "long-intervention"}


def _architecture(architecture: tuple) -> str:
    layers, hidden, heads = architecture
    return f"({layers} layers, hidden {hidden}, {heads} heads)"
