"""Instability injection into micro runs: specs, validation, isolation, effect."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from polypythias.cli import app
from polypythias.extract.micro.train import (
    DEMO_INSTABILITY,
    Instability,
    TrainConfig,
    _shuffle_tokens,
    train_suite,
)

SEEDS = [0, 1, 2]
LR_SPIKE = Instability("200k", 1, "lr_spike", start_step=9, n_steps=4, factor=50.0)
SHUFFLE = Instability("200k", 2, "shuffled_tokens", start_step=9, n_steps=4)


def tiny_config(**overrides) -> TrainConfig:
    settings = {
        "sizes": ["200k"],
        "seeds": SEEDS,
        "total_steps": 16,
        "n_linear": 2,
        "warmup_fraction": 1 / 8,
        "batch_size": 8,
        "seq_len": 32,
        "corpus_docs": 300,
        "eval_docs": 5,
        "workers": 1,
    }
    return TrainConfig(**(settings | overrides))


def train(out: Path, config: TrainConfig) -> dict[int, pa.Table]:
    logs: dict[int, pa.Table] = {}
    train_suite(config, out, lambda size, seed, log: logs.setdefault(seed, log), progress=False)
    return logs


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> tuple[Path, dict[int, pa.Table], Path, dict[int, pa.Table]]:
    """The same tiny suite trained without and with injections (seed 1: lr spike,
    seed 2: shuffled tokens; seed 0 untouched)."""
    plain_dir, injected_dir = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("injected")
    plain = train(plain_dir, tiny_config())
    injected = train(injected_dir, tiny_config(instabilities=[LR_SPIKE, SHUFFLE]))
    return plain_dir, plain, injected_dir, injected


def run_files(root: Path, seed: int) -> dict[str, bytes]:
    run = root / "200k" / f"seed{seed}"
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


# -- specs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1m:4:lr_spike@96+16x30", Instability("1m", 4, "lr_spike", 96, 16, 30.0)),
        ("200k:1:shuffled_tokens@64+32", Instability("200k", 1, "shuffled_tokens", 64, 32, 1.0)),
        (" 3m:12:lr_spike@1+1x2.5 ", Instability("3m", 12, "lr_spike", 1, 1, 2.5)),
        ("1m:0:lr_spike@5+3x1e2", Instability("1m", 0, "lr_spike", 5, 3, 100.0)),
    ],
)
def test_spec_parses_and_round_trips(spec, expected):
    parsed = Instability.parse(spec)
    assert parsed == expected
    assert Instability.parse(parsed.spec()) == parsed
    assert parsed.end_step == expected.start_step + expected.n_steps - 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("garbage", "expected SIZE:SEED:KIND@START+STEPS[xFACTOR]"),
        ("1m:4:lr_spike@96", "expected SIZE:SEED:KIND@START+STEPS[xFACTOR]"),
        ("1m:-1:lr_spike@96+16x30", "expected SIZE:SEED:KIND@START+STEPS[xFACTOR]"),
        ("1m:4:lr_spike@96+16x", "expected SIZE:SEED:KIND@START+STEPS[xFACTOR]"),
        ("1m:4:lr_spike@96+16", "needs a learning-rate factor > 1"),
        ("1m:4:lr_spike@96+16x0.5", "needs a learning-rate factor > 1"),
        ("1m:4:shuffled_tokens@96+16x3", "shuffled_tokens takes no factor"),
        ("1m:4:nan_storm@96+16", "unknown instability kind 'nan_storm'"),
        ("9m:4:lr_spike@96+16x30", "unknown model size '9m'"),
        ("1m:4:lr_spike@0+16x30", "start_step must be an integer >= 1"),
        ("1m:4:lr_spike@5+0x30", "n_steps must be an integer >= 1"),
    ],
)
def test_bad_spec_is_a_clear_error(spec, message):
    with pytest.raises(ValueError, match="^(bad instability spec|instability|unknown)") as error:
        Instability.parse(spec)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("instabilities", "message"),
    [
        ([Instability("1m", 0, "lr_spike", 1, 1, 2.0)], "size '1m' is not in the suite"),
        ([Instability("200k", 7, "lr_spike", 1, 1, 2.0)], "seed 7 is not in the suite"),
        ([Instability("200k", 0, "lr_spike", 17, 1, 2.0)], "must lie within 1..16"),
        ([Instability("200k", 0, "lr_spike", 14, 4, 2.0)], "steps 14 to 17 must lie within 1..16"),
        (
            [Instability("200k", 0, "lr_spike", 2, 4, 2.0), Instability("200k", 0, "lr_spike", 5, 2, 3.0)],
            "overlap in the same run",
        ),
    ],
)
def test_config_validates_instabilities(instabilities, message):
    with pytest.raises(ValueError, match="instabilit") as error:
        tiny_config(instabilities=instabilities)
    assert message in str(error.value)


def test_config_rejects_what_is_not_an_instability():
    with pytest.raises(TypeError, match="must be Instability objects"):
        tiny_config(instabilities=["200k:0:lr_spike@1+1x2"])
    with pytest.raises(TypeError, match="factor must be a number"):
        Instability("200k", 0, "lr_spike", 1, 1, "2")


def test_config_accepts_one_injection_of_each_kind_in_a_run():
    both = [Instability("200k", 0, "lr_spike", 2, 4, 2.0), Instability("200k", 0, "shuffled_tokens", 3, 4)]
    config = tiny_config(instabilities=both)
    assert config.instabilities_of("200k", 0) == both and config.instabilities_of("200k", 1) == []
    assert [config.lr_factor_at("200k", 0, s) for s in range(1, 8)] == [1, 2, 2, 2, 2, 1, 1]
    assert config.lr_factor_at("200k", 1, 3) == 1


def test_demo_instability_fits_the_demo_suite():
    config = TrainConfig(instabilities=[DEMO_INSTABILITY])  # the demo suite: TrainConfig defaults
    assert config.instabilities_of(DEMO_INSTABILITY.size, DEMO_INSTABILITY.seed) == [DEMO_INSTABILITY]
    # Injected well before the end, so the run has time to stay an outlier and
    # early-warning signals have room to lead.
    assert DEMO_INSTABILITY.end_step <= config.total_steps // 2
    assert DEMO_INSTABILITY.start_step > config.warmup_steps


def test_shuffle_permutes_tokens_within_each_sequence():
    batch = torch.arange(6 * 20).reshape(6, 20)
    shuffled = _shuffle_tokens(batch, seed=3, step=7)
    assert shuffled.shape == batch.shape and shuffled.dtype == batch.dtype
    assert torch.equal(shuffled.sort(dim=1).values, batch)  # same tokens in each row
    assert (shuffled != batch).any(dim=1).all()  # every row reordered
    assert torch.equal(shuffled, _shuffle_tokens(batch, seed=3, step=7))  # deterministic
    assert not torch.equal(shuffled, _shuffle_tokens(batch, seed=3, step=8))
    assert not torch.equal(shuffled, _shuffle_tokens(batch, seed=4, step=7))
    assert torch.equal(batch, torch.arange(6 * 20).reshape(6, 20))  # input untouched


# -- training -----------------------------------------------------------------------


def test_uninjected_run_is_bit_identical(twins):
    plain_dir, plain, injected_dir, injected = twins
    plain_files, injected_files = run_files(plain_dir, 0), run_files(injected_dir, 0)
    assert sorted(plain_files) == sorted(injected_files)
    assert any(name.endswith("model.safetensors") for name in plain_files)
    for name, data in plain_files.items():
        assert hashlib.sha256(data).digest() == hashlib.sha256(injected_files[name]).digest(), name
    last = max(int(p.name[4:]) for p in (plain_dir / "200k" / "seed0").glob("step*"))
    a, b = (load_file(d / "200k" / "seed0" / f"step{last}" / "model.safetensors") for d in (plain_dir, injected_dir))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert plain[0].equals(injected[0])
    # The suite-level files do not mention the injection either.
    assert (plain_dir / "suite.yaml").read_bytes() == (injected_dir / "suite.yaml").read_bytes()


def test_injected_runs_match_their_twin_until_the_injection(twins):
    _, plain, _, injected = twins
    for item in (LR_SPIKE, SHUFFLE):
        before = item.start_step - 1
        assert injected[item.seed].slice(0, before).equals(plain[item.seed].slice(0, before))
        assert not injected[item.seed].equals(plain[item.seed])


def test_run_json_records_the_injection(twins):
    plain_dir, _, injected_dir, _ = twins
    for item in (LR_SPIKE, SHUFFLE):
        info = json.loads((injected_dir / "200k" / f"seed{item.seed}" / "run.json").read_text())
        assert info["injected_instability"] == [
            {
                "size": "200k",
                "seed": item.seed,
                "kind": item.kind,
                "start_step": item.start_step,
                "n_steps": item.n_steps,
                "factor": item.factor,
                "end_step": item.end_step,
                "spec": item.spec(),
            }
        ]
        assert "instabilities" not in info["train"]
        plain_info = json.loads((plain_dir / "200k" / f"seed{item.seed}" / "run.json").read_text())
        assert "injected_instability" not in plain_info
    assert "injected_instability" not in json.loads((injected_dir / "200k" / "seed0" / "run.json").read_text())


def column(log: pa.Table, name: str, first: int, last: int) -> list[float]:
    """Values of steps first..last (1-based, inclusive)."""
    return log.column(name).to_pylist()[first - 1 : last]


def test_lr_spike_shows_in_the_log(twins):
    _, plain, _, injected = twins
    item, seed = LR_SPIKE, LR_SPIKE.seed
    lr_plain = column(plain[seed], "lr", item.start_step, item.end_step)
    lr_injected = column(injected[seed], "lr", item.start_step, item.end_step)
    assert lr_injected == pytest.approx([lr * item.factor for lr in lr_plain])
    assert column(injected[seed], "lr", item.end_step + 1, 16) == column(plain[seed], "lr", item.end_step + 1, 16)
    # The loss of a step is measured before its update: the spike shows from the
    # step after the first injected one, and lasts past the injection.
    after = (item.start_step + 1, item.end_step + 1)
    worse = [a - b for a, b in zip(column(injected[seed], "loss", *after), column(plain[seed], "loss", *after))]
    assert min(worse) > 0.5, worse


def test_shuffled_tokens_show_in_the_log(twins):
    _, plain, _, injected = twins
    item, seed = SHUFFLE, SHUFFLE.seed
    window = (item.start_step, item.end_step)
    assert column(injected[seed], "lr", 1, 16) == column(plain[seed], "lr", 1, 16)
    worse = [a - b for a, b in zip(column(injected[seed], "loss", *window), column(plain[seed], "loss", *window))]
    assert min(worse) > 0.3, worse  # word salad is harder to predict than sentences


# -- command line ------------------------------------------------------------------------


def test_cli_rejects_bad_specs_before_training(tmp_path):
    out = tmp_path / "micro"
    runner = CliRunner()
    for spec, message in [
        ("1m:4:lr_spike", "bad instability spec '1m:4:lr_spike'"),
        ("200k:3:lr_spike@4+2x10", "seed 3 is not in the suite"),
        ("1m:0:lr_spike@4+2x10", "size '1m' is not in the suite"),
        ("200k:0:lr_spike@20+2x10", "must lie within 1..16"),
    ]:
        result = runner.invoke(
            app,
            [
                "micro",
                "train",
                "--out",
                str(out),
                "--sizes",
                "200k",
                "--seeds",
                "2",
                "--steps",
                "16",
                "--lake",
                str(tmp_path / "lake"),
                "--no-progress",
                "--inject",
                "200k:1:shuffled_tokens@2+2",
                "--inject",
                spec,
            ],
        )
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output
    assert not out.exists()


def test_cli_help_documents_the_spec():
    result = CliRunner().invoke(app, ["micro", "train", "--help"], env={"COLUMNS": "240"})
    text = " ".join(result.output.replace("│", " ").split())  # unwrapped from rich's panel
    assert result.exit_code == 0
    for needle in (
        "--inject",
        "SIZE:SEED:KIND@START+STEPS[xFACTOR]",
        "lr_spike",
        "shuffled_tokens",
        "1m:4:lr_spike@96+16x30",
    ):
        assert needle in text, needle
