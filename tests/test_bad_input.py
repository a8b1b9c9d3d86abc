"""Bad input on every entry point, through the real command line: the error names
the input and the problem, on stderr, without a traceback; the exit status is 2
(usage or input error; 1 where a batch command ingested what it could, as the
ingest commands do); and nothing is written to the lake when the input is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from polypythias.cli import app
from polypythias.extract.ingest import ingest
from polypythias.warehouse.lake import Lake, LakeError
from polypythias.warehouse.schemas import EVAL_FILES, MANIFEST, SCHEMA_VERSION_KEY

MICRO_TASKS = Path(__file__).resolve().parents[1] / "extract" / "micro" / "tasks"

SUITE = """\
name: tiny
sizes: [tiny]
seeds: [0, 1]
steps: {all: [0, 1, 2]}
checkpoints: {local: "ck/{size}/seed{seed}/step{step}"}
extractors:
  weight_stats: {}
"""


def invoke(*args: str):
    """Run the CLI; a refusal must be a clean exit, never an exception's traceback."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def one_line(text: str) -> str:
    """Rich may still wrap long lines at the terminal width; compare without breaks."""
    return " ".join(text.split())


# -- the suite file: extract and status -------------------------------------------------


def _replace(old: str, new: str):
    return lambda text: text.replace(old, new)


SUITE_CASES = {
    # label: (how the good suite is broken, what the message must say)
    "yaml syntax": (
        _replace("sizes: [tiny]", "sizes: [tiny"),
        ["line 3, column 6: not valid YAML", "flow sequence that starts on line 2"],
    ),
    "yaml tab": (_replace("seeds:", "\tseeds:"), ["line 3, column 1: not valid YAML", "'\\t'"]),
    "key twice": (lambda t: t + "seeds: [3]\n", ["line 8, column 1", "key 'seeds' is given twice (first on line 3)"]),
    "empty file": (lambda t: "", ["must be a YAML mapping", "got an empty file"]),
    "a list": (lambda t: "- tiny\n", ["must be a YAML mapping", "got a list"]),
    "missing field": (_replace("seeds: [0, 1]\n", ""), ["seeds: Field required"]),
    "mistyped field": (_replace("seeds:", "sedes:"), ["line 3: sedes: unknown field (did you mean 'seeds'?"]),
    "wrong type": (
        _replace("[0, 1]", "[zero]"),
        ["line 3: seeds.0: Input should be a valid integer", "got 'zero'"],
    ),
    "unknown extractor": (
        lambda t: t + "  frobnicate: {}\n",
        ["line 8: extractors.frobnicate: unknown extractor 'frobnicate'; known: evals"],
    ),
    "unknown option": (
        _replace("weight_stats: {}", "weight_stats: {stpes: all}"),
        ["line 7: extractors.weight_stats: stpes: unknown field (did you mean 'steps'?"],
    ),
    "unknown step set": (
        _replace("weight_stats: {}", "weight_stats: {steps: last}"),
        ["line 7: extractors.weight_stats.steps: unknown step set 'last'; defined: all"],
    ),
    "size with /": (_replace("[tiny]", "[a/b]"), ["line 2: sizes: model_size 'a/b' is not a safe partition value"]),
    "size with ..": (_replace("[tiny]", "['a..b']"), ["model_size 'a..b' is not a safe partition value"]),
    "size with =": (_replace("[tiny]", "['a=b']"), ["model_size 'a=b' is not a safe partition value"]),
    "empty size": (_replace("[tiny]", "['']"), ["model_size '' is not a safe partition value"]),
    "name with ..": (
        _replace("name: tiny", "name: ../up"),
        ["line 1: name: suite '../up' is not a safe partition value"],
    ),
    "negative seed": (_replace("[0, 1]", "[0, -1]"), ["line 3: seeds: seed must be a non-negative integer, got -1"]),
    "negative step": (_replace("[0, 1, 2]", "[0, -2]"), ["line 4: steps: step -2 is negative"]),
}


@pytest.mark.parametrize("verb", ["extract", "status"])
@pytest.mark.parametrize("case", list(SUITE_CASES))
def test_a_bad_suite_file_is_named_with_its_line(tmp_path, verb, case):
    breaks, expected = SUITE_CASES[case]
    suite = tmp_path / "suite.yaml"
    suite.write_text(breaks(SUITE))
    result = invoke(verb, "--suite", suite, "--lake", tmp_path / "lake")
    assert result.exit_code == 2
    message = one_line(result.stderr)
    assert message.startswith(f"error: {suite}: ")
    for fragment in expected:
        assert fragment in message
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"\x89PNG\r\n\x00\xff", "not a UTF-8 text file"), (None, "a folder, not a suite file")],
    ids=["binary", "folder"],
)
def test_a_suite_that_is_no_text_file(tmp_path, content, expected):
    suite = tmp_path / "suite.yaml"
    suite.write_bytes(content) if content else suite.mkdir()
    result = invoke("status", "--suite", suite, "--lake", tmp_path / "lake")
    assert result.exit_code == 2 and f"{suite}: {expected}" in one_line(result.stderr)


def test_an_unknown_preset_lists_the_presets(tmp_path):
    result = invoke("extract", "--suite", "polypythia", "--lake", tmp_path / "lake")
    assert result.exit_code == 2
    assert "polypythia: no such suite file (presets: micro, polypythias)" in one_line(result.stderr)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ("frob", "unknown extractor 'frob'; known: evals, probes, token_stats, weight_stats"),
        ("weight_stats,evals", "extractor 'evals' is not configured in suite 'tiny' (configured: weight_stats)"),
    ],
    ids=["unknown", "not configured"],
)
def test_extract_refuses_an_unknown_extractor_option(tmp_path, names, expected):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    result = invoke("extract", "--suite", suite, "--extractors", names, "--lake", tmp_path / "lake", "--no-progress")
    assert result.exit_code == 2 and expected in one_line(result.stderr)
    assert not (tmp_path / "lake").exists()


def test_an_unknown_lm_eval_task_is_named_with_the_tasks_available(tmp_path):
    shutil.copytree(MICRO_TASKS, tmp_path / "tasks")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        SUITE.replace(
            "  weight_stats: {}\n",
            "  evals: {tasks: [micro_lambda, micro_gender_agreement], include_path: tasks, include_defaults: false}\n",
        )
    )
    result = invoke("extract", "--suite", suite, "--lake", tmp_path / "lake", "--no-progress")
    assert result.exit_code == 2
    message = one_line(result.stderr)
    assert f"{suite}: extractors.evals.tasks: unknown lm-eval task(s) 'micro_lambda' " in message
    assert "available: micro_gender_agreement, micro_lambada, micro_verb_agreement" in message
    assert not files_under(tmp_path / "lake")  # refused before anything is written


# -- ingest lm-eval -----------------------------------------------------------------------

TIMESTAMP = "2024-01-01T00-00-00.000001"
SAMPLE = {
    "doc_id": 0,
    "doc_hash": "h",
    "target": 1,
    "filter": "none",
    "metrics": ["acc"],
    "acc": 1.0,
    "filtered_resps": [["-1.5", "False"], ["-0.5", "True"]],
}


def results_file(
    folder: Path, model_args: object = "pretrained=EleutherAI/pythia-14m,revision=step8", samples: bytes | None = None
) -> Path:
    """A minimal lm-eval 0.4 results file (one task, 't'), with a samples file if given."""
    folder.mkdir(parents=True)
    document = {
        "results": {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.1}},
        "n-shot": {"t": 0},
        "config": {"model_args": model_args},
        "date": 1.7e9,
        "lm_eval_version": "0.4.9",
    }
    path = folder / f"results_{TIMESTAMP}.json"
    path.write_text(json.dumps(document))
    if samples is not None:
        (folder / f"samples_t_{TIMESTAMP}.jsonl").write_bytes(samples)
    return path


GOOD_SAMPLES = (json.dumps(SAMPLE) + "\n").encode()

LM_EVAL_CASES = {
    # file (relative to the folder ingested): (how it is made, what its error says)
    "binary.json": (lambda p: p.write_bytes(b"\x89PNG\r\n\x00\xff"), "not a text file"),
    "truncated.json": (lambda p: p.write_text('{"results": {"t": {"acc,n'), "not valid JSON: Unterminated string"),
    "empty.json": (lambda p: p.write_text(""), "not valid JSON"),
    "foreign.json": (lambda p: p.write_text("[1, 2]"), "not lm-eval output: no 'results' object"),
    "samples_truncated": (
        lambda p: results_file(p, samples=GOOD_SAMPLES + json.dumps(SAMPLE).encode()[:30]),
        f"samples_t_{TIMESTAMP}.jsonl line 2: not valid JSON",
    ),
    "samples_binary": (
        lambda p: results_file(p, samples=GOOD_SAMPLES + b"\x00\xff\xfe\n"),
        f"samples_t_{TIMESTAMP}.jsonl line 2: not UTF-8 text",
    ),
    "samples_not_an_object": (
        lambda p: results_file(p, samples=b"[1, 2]\n"),
        f"samples_t_{TIMESTAMP}.jsonl line 1: not a JSON object",
    ),
    "samples_misshapen": (
        lambda p: results_file(p, samples=(json.dumps({**SAMPLE, "doc_id": "x"}) + "\n").encode()),
        f"samples_t_{TIMESTAMP}.jsonl: task 't' sample 1: ValueError",
    ),
    "model_args_a_number": (lambda p: results_file(p, model_args=5), "config.model_args 5 names no pretrained model"),
    "revision_with_dotdot": (
        lambda p: results_file(p, model_args="pretrained=EleutherAI/pythia-14m,revision=step8/../x"),
        "has no step revision (revision=stepN), got revision 'step8/../x'",
    ),
    "negative_step": (
        lambda p: results_file(p, model_args="pretrained=EleutherAI/pythia-14m,revision=step-1"),
        "got revision 'step-1'",
    ),
}


@pytest.fixture(scope="module")
def lm_eval_run(tmp_path_factory):
    """One ingest of a folder holding a good results file (with samples) and every bad one."""
    folder = tmp_path_factory.mktemp("lm-eval")
    good = results_file(folder / "good", samples=GOOD_SAMPLES)
    paths = {}
    for name, (make, _) in LM_EVAL_CASES.items():
        target = folder / name
        made = make(target)
        paths[name] = made if isinstance(made, Path) else target
    lake = folder / "lake"
    result = invoke("ingest", "lm-eval", folder, folder / "missing.json", "--lake", lake, "--no-progress")
    return result, good, paths, lake


@pytest.mark.parametrize("case", list(LM_EVAL_CASES))
def test_a_bad_lm_eval_file_is_named_and_the_others_are_ingested(lm_eval_run, case):
    result, good, paths, lake = lm_eval_run
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("failed ")]
    (error,) = [e for e in errors if f"failed {paths[case]}: " in e]
    assert LM_EVAL_CASES[case][1] in error
    # The good file is in the lake with its samples; nothing of the bad ones is.
    assert Lake(lake).read(EVAL_FILES)["path"].to_pylist() == [str(good)]
    assert Lake(lake).read(MANIFEST).num_rows == 1


def test_a_missing_lm_eval_path_is_named(lm_eval_run):
    result, *_ = lm_eval_run
    assert "missing.json: no such file or folder" in result.stderr
    assert f"{len(LM_EVAL_CASES) + 2} files: 1 ingested" in one_line(result.stdout)


def test_an_unreadable_lm_eval_file_is_named_and_the_others_ingested():
    """Run as an unprivileged user (a user namespace maps us to nobody), since root
    reads files whatever their mode; the folders must be open to that user."""
    root = Path(tempfile.mkdtemp())
    try:
        root.chmod(0o755)
        good = results_file(root / "in" / "good")
        bad = results_file(root / "in" / "bad")
        bad.chmod(0)
        lake = root / "lake"
        lake.mkdir(mode=0o777)
        lake.chmod(0o777)
        result = subprocess.run(
            ["unshare", "--user", sys.executable, "-m", "polypythias", "ingest", "lm-eval",
             str(root / "in"), "--lake", str(lake), "--no-progress"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"failed {bad}: " in result.stderr and "Permission denied" in result.stderr
        assert "2 files: 1 ingested" in one_line(result.stdout)
        assert Lake(lake).read(EVAL_FILES)["path"].to_pylist() == [str(good)]
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize("suite", ["a/b", "..", "a=b", "", "../etc"])
def test_ingest_lm_eval_refuses_an_unsafe_suite(tmp_path, suite):
    file = results_file(tmp_path / "in")
    result = invoke("ingest", "lm-eval", file, "--suite", suite, "--lake", tmp_path / "lake", "--no-progress")
    assert result.exit_code == 2
    assert f"--suite: suite {suite!r} is not a safe partition value" in one_line(result.stderr)
    assert not (tmp_path / "lake").exists()


def test_a_model_name_that_gives_an_unsafe_partition_is_named(tmp_path):
    file = results_file(tmp_path / "in")
    result = invoke(
        "ingest", "lm-eval", file, "--pattern", "(?P<size>.+)", "--lake", tmp_path / "lake", "--no-progress"
    )
    assert result.exit_code == 1
    assert f"failed {file}: model_size 'EleutherAI/pythia-14m' is not a safe partition value" in one_line(result.stderr)
    assert not files_under(tmp_path / "lake")


# -- ingest training-map ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suite", "size", "expected"),
    [
        ("a/b", "70m", "--suite: suite 'a/b'"),
        ("pythia", "..", "--model-size: model_size '..'"),
        ("pythia", "a=b", "--model-size: model_size 'a=b'"),
        ("", "70m", "--suite: suite ''"),
    ],
)
def test_training_map_refuses_an_unsafe_suite_or_size(tmp_path, suite, size, expected):
    file = tmp_path / "map.tsv"
    file.write_text("step\tseed\tstate\n0\t0\t1\n")
    result = invoke("ingest", "training-map", file, "--suite", suite, "--model-size", size, "--lake", tmp_path / "lake")
    assert result.exit_code == 1
    assert f"{expected} is not a safe partition value" in one_line(result.stderr)
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("step\tseed\tstate\n0\t0\t1\n-1\t0\t1\n", "line 3: step '-1' is not a non-negative integer"),
        ("step\tseed\tstate\n0\t0\n", "line 2: 2 fields, but the header has 3"),
        ("stp\tseed\tstate\n0\t0\t1\n", "line 1: unknown column(s) 'stp'"),
        ("step\tseed\tstate\tscore\n0\t0\t1\tnan\n", "line 2: score 'nan' is not a finite number"),
        (b"\xff\xfe\x00\x01", ": not a UTF-8 text file"),
        (None, ": cannot read the file: No such file or directory"),
    ],
    ids=["negative step", "ragged row", "unknown column", "nan score", "binary", "missing"],
)
def test_a_bad_training_map_is_named_with_its_line(tmp_path, content, expected):
    file = tmp_path / "map.tsv"
    if content is not None:
        file.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = invoke(
        "ingest", "training-map", file, "--suite", "pythia", "--model-size", "70m", "--lake", tmp_path / "lake"
    )
    assert result.exit_code == 1
    assert f"failed {file}{'' if expected.startswith(':') else ' '}{expected}" in one_line(result.stderr)
    assert not (tmp_path / "lake").exists()


# -- micro train ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--sizes", "huge"], "--sizes: unknown model size 'huge'; known sizes: 200k, 1m, 3m"),
        (["--sizes", "a/b"], "--sizes: unknown model size 'a/b'"),
        (["--sizes", ","], "--sizes: give one or more different sizes, got []"),
        (["--sizes", "200k,200k"], "--sizes: give one or more different sizes, got ['200k', '200k']"),
        (["--seeds", "0"], "Invalid value for '--seeds'"),
        (
            ["--steps", "3"],
            "--steps: the micro suite saves 8 evenly spaced checkpoints, so it needs at least 8 steps, got 3",
        ),
        (["--inject", "garbage"], "bad instability spec 'garbage': expected SIZE:SEED:KIND@START+STEPS[xFACTOR]"),
        (["--inject", "200k:0:boom@1+2"], "unknown instability kind 'boom'"),
        (["--inject", "200k:9:lr_spike@1+2x30"], "seed 9 is not in the suite"),
        (["--inject", "200k:0:lr_spike@1+2"], "an lr_spike needs a learning-rate factor > 1"),
        (["--inject", "200k:0:lr_spike@1000+2x30", "--steps", "16"], "must lie within 1..16"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_micro_train_refuses_bad_arguments_before_training(tmp_path, args, expected):
    out, lake = tmp_path / "micro", tmp_path / "lake"
    result = invoke("micro", "train", "--out", out, "--lake", lake, "--no-progress", *args)
    assert result.exit_code == 2 and expected in one_line(result.stderr)
    assert not out.exists() and not lake.exists()


def test_micro_train_refuses_a_file_as_its_folder(tmp_path):
    out = tmp_path / "micro"
    out.write_text("in the way")
    result = invoke("micro", "train", "--out", out, "--lake", tmp_path / "lake", "--no-progress")
    assert result.exit_code == 2 and f"{out} is a file; the micro suite needs a folder there" in one_line(result.stderr)


# -- sql, report, build, demo -------------------------------------------------------------------


@pytest.fixture
def warehouse(tmp_path) -> Path:
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table t as select 1 as a")
    return path


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("selec 1", 'Parser Error: syntax error at or near "selec"'),
        ("select * from nope", "Catalog Error: Table with name nope does not exist"),
        ("create table x (a int)", "a CREATE statement is refused"),
    ],
    ids=["syntax", "unknown table", "write"],
)
def test_sql_errors_are_duckdbs_message(warehouse, query, expected):
    result = invoke("sql", query, "--db", warehouse)
    assert result.exit_code == 2
    message = one_line(result.stderr)
    assert message.startswith(f"error: {warehouse}: ") and expected in message


def test_sql_refuses_an_empty_query(warehouse):
    result = invoke("sql", "  ", "--db", warehouse)
    assert result.exit_code == 2 and "the query is empty" in result.stderr


@pytest.mark.parametrize("verb", [["sql", "select 1"], ["report"]])
def test_a_missing_warehouse_is_named(tmp_path, verb):
    db = tmp_path / "none.duckdb"
    result = invoke(*verb, "--db", db, *(["--out", tmp_path / "r"] if verb == ["report"] else []))
    assert result.exit_code == 2 and str(db) in one_line(result.stderr)
    assert not db.exists()


def test_report_refuses_a_file_as_its_folder(tmp_path, warehouse):
    with duckdb.connect(str(warehouse)) as con:  # a warehouse: it has dim_checkpoints
        con.execute("create table dim_checkpoints (step bigint)")
    out = tmp_path / "report"
    out.write_text("in the way")
    result = invoke("report", "--db", warehouse, "--out", out)
    assert result.exit_code == 2 and f"cannot write the report into {out}" in one_line(result.stderr)


def test_build_refuses_a_missing_lake(tmp_path):
    lake = tmp_path / "lake"
    result = invoke("build", "--lake", lake, "--db", tmp_path / "w.duckdb")
    assert result.exit_code == 2 and f"the lake {lake} does not exist" in one_line(result.stderr)
    assert not (tmp_path / "w.duckdb").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["build", "--db", "{db}"],
        ["micro", "train", "--out", "{out}", "--no-progress"],
        ["ingest", "lm-eval", "{results}", "--no-progress"],
        ["ingest", "training-map", "{map}", "--suite", "pythia", "--model-size", "70m"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_a_file_given_as_the_lake_is_refused_before_any_work(tmp_path, command):
    lake = tmp_path / "lake"
    lake.write_text("not a lake")
    (tmp_path / "map.tsv").write_text("step\tseed\tstate\n0\t0\t1\n")
    paths = {
        "{db}": tmp_path / "w.duckdb",
        "{out}": tmp_path / "micro",
        "{results}": results_file(tmp_path / "in"),
        "{map}": tmp_path / "map.tsv",
    }
    result = invoke(*(paths.get(a, a) for a in command), "--lake", lake)
    assert result.exit_code == 2 and f"the lake {lake} is not a folder" in one_line(result.stderr)
    assert not (tmp_path / "w.duckdb").exists() and not (tmp_path / "micro").exists()


def test_demo_names_a_bad_suite_file_before_extracting(tmp_path):
    micro = tmp_path / "micro"
    micro.mkdir()
    (micro / "suite.yaml").write_text(SUITE.replace("sizes: [tiny]", "sizes: [tiny"))
    lake = tmp_path / "lake"
    result = invoke(
        "demo", "--micro-dir", micro, "--lake", lake, "--db", tmp_path / "w.duckdb", "--out", tmp_path / "r"
    )
    assert result.exit_code == 2 and f"{micro / 'suite.yaml'}: line 3, column 6: not valid YAML" in one_line(
        result.stderr
    )
    assert not lake.exists() and not (tmp_path / "w.duckdb").exists()


# -- a lake of another schema version -------------------------------------------------------


def _restamp(path: Path, version: bytes | None) -> None:
    """Rewrite a lake file as another schema version would have written it."""
    table = pq.read_table(path)
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != SCHEMA_VERSION_KEY}
    if version is not None:
        metadata[SCHEMA_VERSION_KEY] = version
    pq.write_table(table.replace_schema_metadata(metadata), path)


@pytest.fixture
def old_lake(tmp_path):
    """A lake with one ingested results file; returns (lake root, its files by dataset)."""
    root = tmp_path / "lake"
    assert ingest([results_file(tmp_path / "in", samples=GOOD_SAMPLES)], Lake(root)).ok
    files = {p.relative_to(root).parts[0]: p for p in files_under(root)}
    assert set(files) == {"manifest", "eval_results", "eval_samples", "eval_files"}
    return root, files


@pytest.mark.parametrize("dataset", ["manifest", "eval_samples"])
@pytest.mark.parametrize("version", [b"2", None], ids=["version 2", "no version"])
def test_build_refuses_a_file_of_another_schema_version(tmp_path, old_lake, dataset, version):
    root, files = old_lake
    _restamp(files[dataset], version)
    result = invoke("build", "--lake", root, "--db", tmp_path / "w.duckdb")
    assert result.exit_code == 2
    expected = f"{files[dataset]} has schema version {'2' if version else 'none'}, this polypythias reads version 1"
    assert expected in one_line(result.stderr)
    assert not (tmp_path / "w.duckdb").exists()  # refused before dbt opened the warehouse


def test_build_refuses_a_truncated_parquet_file(tmp_path, old_lake):
    root, files = old_lake
    content = files["eval_results"].read_bytes()
    files["eval_results"].write_bytes(content[: len(content) // 2])
    result = invoke("build", "--lake", root, "--db", tmp_path / "w.duckdb")
    assert result.exit_code == 2
    assert f"{files['eval_results']} is not a readable Parquet file" in one_line(result.stderr)


@pytest.mark.parametrize(
    "command",
    [
        ["status", "--suite", "{suite}"],
        ["extract", "--suite", "{suite}", "--no-progress"],
        ["ingest", "lm-eval", "{results}", "--no-progress"],
        ["ingest", "training-map", "{map}", "--suite", "pythia", "--model-size", "70m"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_readers_and_writers_refuse_a_lake_of_another_schema_version(tmp_path, old_lake, command):
    root, files = old_lake
    _restamp(files["manifest"], b"2")
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    (tmp_path / "map.tsv").write_text("step\tseed\tstate\n0\t0\t1\n")
    results = results_file(tmp_path / "more", "pretrained=EleutherAI/pythia-70m,revision=step16")
    paths = {"{suite}": suite, "{results}": results, "{map}": tmp_path / "map.tsv"}
    before = {p: p.stat().st_mtime_ns for p in files_under(root)}
    result = invoke(*(paths.get(a, a) for a in command), "--lake", root)
    assert result.exit_code == 2
    assert f"{files['manifest']} has schema version 2" in one_line(result.stderr)
    assert {p: p.stat().st_mtime_ns for p in files_under(root)} == before  # nothing written


def test_check_schema_versions_counts_every_parquet_file(tmp_path, old_lake):
    root, files = old_lake
    lake = Lake(root)
    assert lake.check_schema_versions() == 4
    assert Lake(tmp_path / "nowhere").check_schema_versions() == 0
    # dbt's glob reads hidden *.parquet files too, so they are checked; temporaries are not.
    hidden = files["manifest"].with_name(".stray.parquet")
    shutil.copy(files["manifest"], hidden)
    files["manifest"].with_name(".x.parquet.tmp").write_text("a write in progress")
    assert lake.check_schema_versions() == 5
    _restamp(hidden, b"0")
    with pytest.raises(LakeError, match=r"\.stray\.parquet has schema version 0"):
        lake.check_schema_versions()
