"""Pickle checkpoints load only through torch's weights-only unpickler: a .bin that
would call a function when unpickled is refused and nothing it names runs; a damaged
.bin fails its own checkpoint only."""

from __future__ import annotations

import pathlib
import pickle

import pyarrow.compute as pc
import torch

from polypythias.extract.runner import run_extraction
from polypythias.extract.suite import load_suite
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import MANIFEST, WEIGHT_STATS


class _WritesAMarker:
    """Unpickled by a full unpickler, this calls Path.write_text(marker, "ran")."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (self.marker, "ran")


def _as_pickle_only(folder: pathlib.Path, state: dict) -> pathlib.Path:
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    return folder / "pytorch_model.bin"


def test_a_malicious_bin_is_refused_and_runs_nothing_and_a_truncated_one_fails_alone(tiny_suite, tmp_path, tokenizer):
    from conftest import tiny_model

    ck = tiny_suite.parent / "ck/tiny"
    # seed 0 step 0: a pickle whose unpickling would write a marker file
    marker = tmp_path / "marker"
    good = tiny_model(len(tokenizer), 0).state_dict()
    malicious = _as_pickle_only(ck / "seed0/step0", {**good, "extra": _WritesAMarker(marker)})
    # seed 0 step 1: a pickle cut in half
    truncated = _as_pickle_only(ck / "seed0/step1", tiny_model(len(tokenizer), 1).state_dict())
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    # seed 0 step 2: a plain weights-only pickle, which loads
    _as_pickle_only(ck / "seed0/step2", tiny_model(len(tokenizer), 2).state_dict())

    suite, lake = load_suite(tiny_suite), Lake(tmp_path / "lake")
    summary = run_extraction(suite, lake, ["weight_stats"], progress=False)

    assert not marker.exists()
    failures = {f.checkpoint.step: f.error for f in summary.failures if f.checkpoint.seed == 0}
    assert sorted(failures) == [0, 1] and summary.succeeded == 4
    assert failures[0].startswith(f"{malicious}: refused:") and "would call getattr" in failures[0]
    assert failures[1].startswith(f"{truncated}: not a readable torch checkpoint")
    assert all("\n" not in error for error in failures.values())
    manifest = lake.read(MANIFEST)
    ok = manifest.filter(pc.equal(manifest["status"], "success"))
    assert {(r["seed"], r["step"], r["weights_format"]) for r in ok.to_pylist()} == {
        (0, 2, "bin"),
        (1, 0, "safetensors"),
        (1, 1, "safetensors"),
        (1, 2, "safetensors"),
    }
    assert set(lake.read(WEIGHT_STATS)["step"].to_pylist()) == {0, 1, 2}

    # The control: a full unpickler would have run it.
    torch.load(malicious, weights_only=False)
    assert marker.read_text() == "ran"


def test_a_pickle_checkpoint_can_never_run_code_even_when_the_pickle_is_bare(tmp_path):
    """A .bin that is a bare pickle (not torch's zip format) goes through the same gate."""
    from polypythias.extract.checkpoints import CheckpointError, check_pickle

    marker = tmp_path / "marker"
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(pickle.dumps({"w": _WritesAMarker(marker)}))
    try:
        check_pickle(path)
    except CheckpointError as error:
        assert str(error).startswith(f"{path}: ")
    else:
        raise AssertionError("a bare malicious pickle was accepted")
    assert not marker.exists()
