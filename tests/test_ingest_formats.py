"""`polypythias ingest lm-eval` on every format of the Pythia evaluation release: GPT-NeoX
`evaluate.py` files (v0 runs, identity from the training configuration), the
prompt-source WinoBias files, model names with suffixes, other families through
--pattern, files that state no checkpoint; and bad files that fail alone, in one line."""

from __future__ import annotations

import copy
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polypythias.cli import app
from polypythias.extract import ingest as ingest_module
from polypythias.extract.ingest import ModelNamePattern, ingest
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import EVAL_FILES, EVAL_RESULTS, MANIFEST
from shared_inputs import PYTHIA_EVALS, SHARED

FORMATS = SHARED / "fixtures" / "pythia-evals-formats"
V0_70M = FORMATS / "pythia-v0" / "pythia-70m" / "zero-shot"
V0_FILE = V0_70M / "pythia-70m-0shot-global_step103000_eval_results_11-25-2022-07-44-49.json"
WINOBIAS = FORMATS / "bias-evals" / "winobias"

# What each file of the formats fixture is, written out by hand from the README and the
# files: (suite, model_size, step, format).
EXPECTED = {
    "pythia-v0/pythia-1.4b-deduped/five-shot/pythia-1.4b-deduped-5shot-global_step11500_eval_results_12-30-2022-03-48-08.json": (
        "polypythias-deduped-v0",
        "1.4b",
        11500,
        "gpt-neox",
    ),
    "pythia-v0/pythia-70m/zero-shot/pythia-70m-0shot-global_step123000_eval_results_11-25-2022-05-54-21.json": (
        "polypythias-v0",
        "70m",
        123000,
        "gpt-neox",
    ),
    "pythia-v0/pythia-70m/zero-shot/pythia-70m-0shot-global_step103000_eval_results_11-25-2022-07-44-49.json": (
        "polypythias-v0",
        "70m",
        103000,
        "gpt-neox",
    ),
    "pythia-v0/pythia-70m/zero-shot/pythia-70m-0shot-global_step113000_eval_results_11-25-2022-07-58-32.json": (
        "polypythias-v0",
        "70m",
        113000,
        "gpt-neox",
    ),
    "pythia-v0/pythia-70m/zero-shot/pythia-70m-0shot-global_step123000_eval_results_11-25-2022-08-12-38.json": (
        "polypythias-v0",
        "70m",
        123000,
        "gpt-neox",
    ),
    "pythia-v1/pythia-1b-bf16/zero-shot/1b-bf16-5shot_step128.json": ("polypythias-bf16", "1b", 128, "lm-eval-0.3"),
    "pythia-v1/pythia-1b-bf16/zero-shot/1b-bf16-5shot_step1000.json": ("polypythias-bf16", "1b", 1000, "lm-eval-0.3"),
    "pythia-v1/pythia-70m-0.25MtokBS/five-shot/70m-0.25MtokBS_step1144000.json": (
        "polypythias-0.25MtokBS",
        "70m",
        1144000,
        "lm-eval-0.3",
    ),
    "pythia-v1/pythia-70m-0.25MtokBS/five-shot/70m-0.25MtokBS_step104000.json": (
        "polypythias-0.25MtokBS",
        "70m",
        104000,
        "lm-eval-0.3",
    ),
    "bias-evals/pythia-19m-deduped-step43000_eval_results_01-20-2023-15-59-07.json": (
        "polypythias-deduped-v0",
        "70m",
        43000,
        "gpt-neox",
    ),
    "bias-evals/long-intervention-1.3b-deduped-step61500_eval_results_01-23-2023-14-09-15.json": (
        "polypythias-long-intervention-deduped-v0",
        "1.4b",
        61500,
        "gpt-neox",
    ),
    "bias-evals/intervention-19m-deduped-step137000_eval_results_01-21-2023-21-02-18.json": (
        "polypythias-intervention-deduped-v0",
        "70m",
        137000,
        "gpt-neox",
    ),
    # The retrained (v1) 410m, named by today's size names.
    "bias-evals/winobias/intervene_7/410M/eval_results_410m-deduped_134000.json": (
        "polypythias-deduped",
        "410m",
        134000,
        "prompt-source",
    ),
    "bias-evals/winobias/410M/eval_results_02-16-2023-00-59-19.json": (
        "polypythias-deduped",
        "410m",
        135000,
        "prompt-source",
    ),
}


def expected_values(document: dict) -> dict[tuple[str, str], tuple[float, float | None]]:
    """(task, metric) → (value, stderr), read from the JSON without the package."""
    if "table_results" in document:
        entries = {f"{e['task_name']}+{e['prompt_name']}": e for e in document["table_results"].values()}
    else:
        entries = document["results"]
    return {
        (task, metric): (value, entry.get(f"{metric}_stderr"))
        for task, entry in entries.items()
        for metric, value in entry.items()
        if not metric.endswith("_stderr") and type(value) in (int, float)
    }


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    lake = Lake(tmp_path_factory.mktemp("release") / "lake")
    return lake, ingest([FORMATS, PYTHIA_EVALS], lake)


def test_every_file_of_both_fixture_folders_is_ingested(release):
    lake, summary = release
    files = sorted(str(f) for f in [*FORMATS.rglob("*.json"), *PYTHIA_EVALS.rglob("*.json")])
    assert len(files) == 202
    assert summary.ok, [o.error for o in summary.of("failed")]
    assert sorted(str(o.path) for o in summary.of("ingested")) == files
    # The READMEs are no results: skipped, not failed.
    assert {o.path.name: o.reason for o in summary.of("skipped")} == {"README.md": "not a results file"}
    assert lake.read(MANIFEST).num_rows == 202


def test_each_format_lands_under_its_identity_with_every_value(release):
    lake, _ = release
    files = {r["path"]: r for r in lake.read(EVAL_FILES).to_pylist()}
    results = lake.read(EVAL_RESULTS).to_pylist()
    for relative, (suite, size, step, format_) in EXPECTED.items():
        path = FORMATS / relative
        record = files[str(path)]
        assert (record["suite"], record["model_size"], record["seed"], record["step"], record["format"]) == (
            suite,
            size,
            0,
            step,
            format_,
        ), relative
        document = json.loads(path.read_text())
        expected = expected_values(document)
        rows = {(r["task"], r["metric"]): r for r in results if r["extraction_id"] == record["extraction_id"]}
        assert set(rows) == set(expected), relative
        for key, (value, stderr) in expected.items():
            assert rows[key]["value"] == value and rows[key]["stderr"] == stderr, (relative, key)
            assert (rows[key]["suite"], rows[key]["step"]) == (suite, step)
        config = document.get("config") or {}
        assert {r["num_fewshot"] for r in rows.values()} == {config.get("num_fewshot", 0)}


def test_prompt_source_rows_and_table_agree_and_prompts_stay_apart(release):
    lake, _ = release
    document = json.loads((WINOBIAS / "410M" / "eval_results_02-16-2023-00-59-19.json").read_text())
    from_rows = {(f"{r['task_name']}+{r['prompt_name']}", "em"): (r["em"], r["em_stderr"]) for r in document["results"]}
    assert from_rows == expected_values(document)
    tasks = {r["task"] for r in lake.read(EVAL_RESULTS).to_pylist() if r["task"].startswith("wino_bias_type1_pro")}
    assert tasks == {"wino_bias_type1_pro+What does p stand for", "wino_bias_type1_pro+refers_to"}


def test_v0_and_v1_of_one_size_and_step_never_merge(release):
    lake, _ = release
    at_123000 = {
        (r["suite"], r["variant"])
        for r in lake.read(EVAL_FILES).to_pylist()
        if r["model_size"] == "70m" and r["step"] == 123000
    }
    assert at_123000 == {("polypythias-v0", "v0"), ("polypythias", "standard"), ("polypythias-deduped", "deduped")}


def test_reruns_of_a_neox_checkpoint_are_ordered_by_the_time_in_their_names(release):
    lake, _ = release
    times = {
        Path(r["path"]).name: r["evaluated_at"]
        for r in lake.read(EVAL_FILES).to_pylist()
        if r["suite"] == "polypythias-v0" and r["step"] == 123000
    }
    assert {name[-24:-5]: time.strftime("%m-%d-%Y-%H-%M-%S") for name, time in times.items()} == {
        "11-25-2022-05-54-21": "11-25-2022-05-54-21",
        "11-25-2022-08-12-38": "11-25-2022-08-12-38",
    }


def test_findings_of_the_release(release):
    lake, _ = release
    findings = {Path(r["path"]).name: r["finding"] for r in lake.read(EVAL_FILES).to_pylist()}
    # The baseline's wandb group is named after the intervention experiment.
    assert findings["pythia-19m-deduped-step43000_eval_results_01-20-2023-15-59-07.json"] == (
        "wandb_group '19M-intervention' says intervention but the run is standard"
    )
    # Old size names in file and folder names agree with the architecture: no finding.
    assert findings[V0_FILE.name] is None
    # The names say five shots, the files' configurations zero.
    assert findings["pythia-1.4b-deduped-5shot-global_step11500_eval_results_12-30-2022-03-48-08.json"] == (
        "file name says 5-shot but the file's num_fewshot is 0; folder 'five-shot' says five-shot but the file's "
        "num_fewshot is 0"
    )
    assert findings["1b-bf16-5shot_step128.json"] == "file name says 5-shot but the file's num_fewshot is 0"
    assert findings["70m-0.25MtokBS_step104000.json"] is None  # five-shot folder, num_fewshot 5
    # A WinoBias file in an intervention folder whose run's name says no intervention.
    assert findings["eval_results_410m-deduped_134000.json"] == (
        "folder 'intervene_7' says intervention but the file's run is no intervention"
    )


# -- each identity rule, broken by a hand-made file ------------------------------------------


def neox_file(folder: Path, name: str = "neox.json", **changes) -> Path:
    """A copy of a real v0 file (70m, standard Pile, step 103000) with model_args changed;
    a change to None removes the key."""
    document = json.loads(V0_FILE.read_text())
    args = document["config"]["model_args"]
    for key, value in changes.items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(document))
    return path


def ingested(tmp_path: Path, *paths: Path, **options) -> dict:
    lake = Lake(tmp_path / "lake")
    summary = ingest(list(paths), lake, **options)
    assert summary.ok, [o.error for o in summary.of("failed")]
    (record,) = lake.read(EVAL_FILES).to_pylist()
    return record


def test_the_size_comes_from_the_architecture(tmp_path):
    # 160m's architecture under 70m's old names: the architecture wins, the names are findings.
    file = neox_file(tmp_path / "in", num_layers=12, hidden_size=768, num_attention_heads=12)
    record = ingested(tmp_path, file)
    assert (record["suite"], record["model_size"], record["step"]) == ("polypythias-v0", "160m", 103000)
    assert (
        "eval_results_prefix '19M-0shot-global_step103000' says size 70m but the architecture is 160m"
        in (record["finding"])
    )


def test_without_an_architecture_old_size_names_give_the_size(tmp_path):
    file = neox_file(
        tmp_path / "in",
        num_layers=None,
        hidden_size=None,
        num_attention_heads=None,
        eval_results_prefix="../x/125M-0shot",
        load="/ckpts/125M",
        save="/ckpts/125M",
        wandb_group="Pythia 125M new_abcd1234",
    )
    record = ingested(tmp_path, file)
    assert (record["suite"], record["model_size"], record["finding"]) == ("polypythias-v0", "160m", None)


def test_without_architecture_or_names_the_size_comes_from_the_path(tmp_path):
    neox_file(
        tmp_path / "in" / "1.3B",
        num_layers=None,
        hidden_size=None,
        num_attention_heads=None,
        eval_results_prefix=None,
        load=None,
        save=None,
        wandb_group=None,
        config_files=None,
    )
    record = ingested(tmp_path, tmp_path / "in")
    assert (record["suite"], record["model_size"]) == ("polypythias-v0", "1.4b")
    assert record["finding"] == "size 1.4b from the path ('1.3B'): the file does not state it"


def test_deduplication_comes_from_the_training_data(tmp_path):
    deduped = ingested(
        tmp_path / "a",
        neox_file(tmp_path / "a", train_data_paths=["/fsx/pile_deduped/pile_0.87_deduped_text_document"]),
    )
    assert deduped["suite"] == "polypythias-deduped-v0"
    assert deduped["finding"] == "train_data_paths is the deduplicated Pile but no run name says dedup"
    # names that say dedup over the standard Pile: not deduplicated, and a finding
    named = ingested(tmp_path / "b", neox_file(tmp_path / "b", save="/ckpts/19M_dedup", load="/ckpts/19M_dedup"))
    assert named["suite"] == "polypythias-v0"
    assert named["finding"] == "load '19M_dedup' says deduped but train_data_paths is the standard Pile"


@pytest.mark.parametrize(
    ("prefix", "suite"),
    [
        ("../bias-evals/intervention-19m-step1", "polypythias-intervention-v0"),
        ("../bias-evals/long-intervention-19m-step1", "polypythias-long-intervention-v0"),
    ],
)
def test_run_kinds_come_from_the_run_name(tmp_path, prefix, suite):
    record = ingested(tmp_path, neox_file(tmp_path / "in", eval_results_prefix=prefix))
    assert record["suite"] == suite
    # the other names (load, save, wandb_group) say no intervention: findings
    assert "load '19M' says no intervention" in record["finding"]


def test_today_s_size_names_are_no_v0_run(tmp_path):
    file = neox_file(
        tmp_path / "in", eval_results_prefix="", load="/ckpts/70m", save="/ckpts/70m", wandb_group="v2-70m_abcd1234"
    )
    assert ingested(tmp_path, file)["suite"] == "polypythias"


def test_a_neox_file_without_iteration_needs_step(tmp_path):
    file = neox_file(tmp_path / "in", iteration=None)
    summary = ingest([file], Lake(tmp_path / "lake"))
    (failed,) = summary.of("failed")
    assert failed.reason == "states no checkpoint" and "--step" in failed.error and len(failed.error) <= 200
    assert ingested(tmp_path / "b", file, step=7)["step"] == 7


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("EleutherAI/pythia-v1.1-1b-bf16", ("1b", 0, "bf16")),
        ("EleutherAI/pythia-v1.1-160m-0.5MtokBS", ("160m", 0, "0.5MtokBS")),
        ("EleutherAI/intervention-pythia-v1.1-1.4b-deduped-long", ("1.4b", 0, "intervention-deduped-long")),
        ("EleutherAI/pythia-14m-seed3", ("14m", 3, "standard")),
        ("EleutherAI/pythia-70m-v0", ("70m", 0, "v0")),
    ],
)
def test_a_suffix_is_part_of_the_variant(name, expected):
    assert ModelNamePattern().parse(name) == expected


def lm_eval_file(folder: Path, model_args: str, results: dict | None = None) -> Path:
    """A minimal 0.3-format results file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{len(list(folder.iterdir()))}.json"
    document = {
        "results": results or {"arc_easy": {"acc": 0.5, "acc_stderr": 0.01}},
        "versions": {"arc_easy": 0},
        "config": {"model": "hf-causal", "model_args": model_args, "num_fewshot": 0},
    }
    path.write_text(json.dumps(document))
    return path


def test_another_family_through_the_pattern_with_a_step_group(tmp_path):
    file = lm_eval_file(tmp_path / "in", "pretrained=allenai/OLMo-7B,revision=step20000-tokens84B")
    pattern = ModelNamePattern(r"OLMo-(?P<size>\d+B)@step(?P<step>\d+)-tokens\d+B")
    record = ingested(tmp_path, file, pattern=pattern, suite="olmo")
    assert (record["suite"], record["model_size"], record["step"]) == ("olmo", "7B", 20000)


def test_a_final_model_without_a_checkpoint_is_refused_unless_step_names_it(tmp_path):
    file = lm_eval_file(tmp_path / "in", "pretrained=facebook/opt-1.3b")
    pattern = ModelNamePattern(r"opt-(?P<size>[\d.]+b)$")
    summary = ingest([file], Lake(tmp_path / "lake"), pattern=pattern, suite="opt")
    (failed,) = summary.of("failed")
    assert failed.error.startswith(f"{file}: ") and "\n" not in failed.error and len(failed.error) <= 200
    assert "states no checkpoint" in failed.error and "--step N" in failed.error
    assert not Lake(tmp_path / "lake").read(EVAL_FILES).num_rows
    record = ingested(tmp_path / "b", file, pattern=pattern, suite="opt", step=300000)
    assert (record["model_size"], record["step"], record["revision"]) == ("1.3b", 300000, "--step 300000")


# -- bad files fail alone, in one line (issue 18) ------------------------------------------


BAD_FILES = {
    # name: (content, reason, what the line says)
    "nan.json": (
        '{"results": {"arc_easy": {"acc": NaN, "acc_stderr": 0.1}}, "versions": {}, "config": {}}',
        "non-finite value",
        "arc_easy acc is nan",
    ),
    "infinity.json": (
        '{"results": {"arc_easy": {"acc": Infinity}}, "versions": {}, "config": {}}',
        "non-finite value",
        "arc_easy acc is inf",
    ),
    "minus_infinity.json": (
        '{"results": {"arc_easy": {"acc": 0.5, "acc_stderr": -Infinity}}, "versions": {}, "config": {}}',
        "non-finite value",
        "arc_easy acc_stderr is -inf",
    ),
    "overflow.json": (
        '{"results": {"arc_easy": {"acc": 1e999}}, "versions": {}, "config": {}}',
        "non-finite value",
        "arc_easy acc is inf",
    ),
    "nested.json": ("[" * 100_000 + "]" * 100_000, "nested too deeply", "nested too deeply"),
    "latin1.json": (None, "not UTF-8 text", "not UTF-8"),
    "huge_step.json": (None, "step out of range", "out of range"),
}


@pytest.fixture(scope="module")
def bad_batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    good = [
        shutil.copy(PYTHIA_EVALS / "pythia-v1" / "pythia-160m" / "zero-shot" / name, folder / name)
        for name in ("160m_step0.json", "160m_step4.json")
    ]
    template = json.loads((folder / "160m_step0.json").read_text())
    for name, (content, _, _) in BAD_FILES.items():
        if name == "latin1.json":
            document = copy.deepcopy(template)
            document["config"]["description_dict"] = {"arc_easy": "Réponse"}
            (folder / name).write_bytes(json.dumps(document, ensure_ascii=False).encode("latin-1"))
        elif name == "huge_step.json":
            document = copy.deepcopy(template)
            document["config"]["model_args"] = "pretrained=EleutherAI/pythia-160m,revision=step" + "9" * 23
            (folder / name).write_text(json.dumps(document))
        else:
            document = copy.deepcopy(template)
            (folder / name).write_text(content.replace('"config": {}', '"config": ' + json.dumps(document["config"])))
    (folder / "figure.pdf").write_bytes(b"%PDF-1.4 not results")
    (folder / "plot.png").write_bytes(b"\x89PNG\r\n")
    lake = folder / "lake"
    result = CliRunner().invoke(app, ["ingest", "lm-eval", str(folder), "--lake", str(lake), "--no-progress"])
    return result, folder, good, Lake(lake)


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_file_fails_alone_in_one_line(bad_batch, name):
    result, folder, good, lake = bad_batch
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if str(folder / name) in line]
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith(f"failed {folder / name}: ") and len(line) <= 200, line
    assert BAD_FILES[name][2] in line, line
    # The good neighbours are in the lake; nothing of any bad file is.
    assert sorted(lake.read(EVAL_FILES)["path"].to_pylist()) == sorted(str(g) for g in good)
    assert lake.read(MANIFEST).num_rows == 2


def test_the_summary_counts_failures_by_reason_and_skips_what_is_no_results(bad_batch):
    result, *_ = bad_batch
    said = " ".join(result.stdout.split())
    reasons = Counter(reason for _, reason, _ in BAD_FILES.values())
    counted = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items(), key=lambda r: (-r[1], r[0])))
    assert f"11 files: 2 ingested, 2 skipped (2 not a results file), 7 failed ({counted});" in said


def test_a_file_larger_than_results_files_are_fails_alone(tmp_path, monkeypatch):
    good = shutil.copy(
        PYTHIA_EVALS / "pythia-v1" / "pythia-160m" / "zero-shot" / "160m_step0.json", tmp_path / "a.json"
    )
    big = tmp_path / "b.json"
    big.write_text(Path(good).read_text() + " " * 4096)
    monkeypatch.setattr(ingest_module, "MAX_RESULTS_FILE_BYTES", Path(good).stat().st_size + 1024)
    summary = ingest([tmp_path], Lake(tmp_path / "lake"))
    assert [o.path.name for o in summary.of("ingested")] == ["a.json"]
    (failed,) = summary.of("failed")
    assert failed.reason == "too large" and str(big) in failed.error


def test_every_error_line_is_short_even_for_a_kilobyte_model_args(tmp_path):
    # A NeoX-shaped file whose model_args is large and states nothing usable.
    file = neox_file(
        tmp_path / "in",
        num_layers=None,
        hidden_size=None,
        num_attention_heads=None,
        eval_results_prefix=None,
        load=None,
        save=None,
        wandb_group=None,
        config_files=None,
    )
    summary = ingest([file], Lake(tmp_path / "lake"))
    (failed,) = summary.of("failed")
    assert len(json.dumps(json.loads(file.read_text())["config"]["model_args"])) > 4000
    assert failed.reason == "no model size" and len(failed.error) <= 200 and "\n" not in failed.error
    assert "states no Pythia architecture or size name" in failed.error


def test_a_deeply_nested_samples_line_fails_its_file_alone(tmp_path):
    stamp = "2024-01-01T00-00-00.000001"
    document = {
        "results": {"t": {"alias": "t", "acc,none": 0.5}},
        "n-shot": {"t": 0},
        "date": 1.7e9,
        "config": {"model_args": "pretrained=EleutherAI/pythia-14m,revision=step8"},
        "lm_eval_version": "0.4.9",
    }
    nested, good = tmp_path / "nested", tmp_path / "good"
    for folder in (nested, good):
        folder.mkdir()
        (folder / f"results_{stamp}.json").write_text(json.dumps(document))
    (nested / f"samples_t_{stamp}.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    lake = Lake(tmp_path / "lake")
    summary = ingest([tmp_path], lake)
    assert [o.path.parent.name for o in summary.of("ingested")] == ["good"]
    (failed,) = summary.of("failed")
    assert failed.reason == "unreadable samples file" and "line 1: JSON nested too deeply" in failed.error
    assert lake.read(MANIFEST).num_rows == 1
