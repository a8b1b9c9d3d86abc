"""The `polypythias` command line: parses arguments and calls the pipeline.

Defaults: lake ./lake, warehouse ./warehouse/polypythias.duckdb, reports ./reports;
POLYPYTHIAS_LAKE and POLYPYTHIAS_DB override them, and so do --lake / --db.
Heavy libraries (torch, transformers, dbt) are imported inside the commands so
that --help answers at once.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

# No command ever reaches a model hub or phones home unless the user asks.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")

app = typer.Typer(
    help=("A data lake and SQL marts for studying the stability of language-model pre-training across random seeds."),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
micro_app = typer.Typer(help="The micro suite: tiny GPT-NeoX runs on a synthetic language.", no_args_is_help=True)
app.add_typer(micro_app, name="micro")
ingest_app = typer.Typer(help="Import results computed elsewhere into the lake.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")

console = Console()
err = Console(stderr=True)

DEFAULT_LAKE = "lake"
DEFAULT_DB = Path("warehouse/polypythias.duckdb")
DEFAULT_REPORTS = Path("reports")
DEMO_DIR = Path("micro")
DEMO_MAX_WORKERS = 4

LakeOption = Annotated[
    str | None,
    typer.Option(
        "--lake",
        envvar="POLYPYTHIAS_LAKE",
        help="Lake root: a folder or an s3:// / gs:// URI. \\[default: the suite's lake, else ./lake]",
        show_default=False,
    ),
]
DbOption = Annotated[
    Path,
    typer.Option("--db", envvar="POLYPYTHIAS_DB", help="The DuckDB warehouse file."),
]
SuiteOption = Annotated[
    str,
    typer.Option("--suite", help="A suite YAML file or a preset name (polypythias, micro)."),
]
ReportsOption = Annotated[Path, typer.Option("--out", help="Folder the report is written to.")]
SizesOption = Annotated[
    str | None,
    typer.Option(help="Only these of the suite's model sizes, comma-separated (e.g. 14m,70m).", show_default=False),
]
SeedsOption = Annotated[
    str | None,
    typer.Option(help="Only these of the suite's seeds, comma-separated (e.g. 0,1,2).", show_default=False),
]
StepsOption = Annotated[
    str | None,
    typer.Option(
        help="Only these of the suite's steps, comma-separated; 'a:b:c' is a range (e.g. 0,1000:3000:1000). "
        "Each extractor still keeps to its own step set.",
        show_default=False,
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Change a setting of the suite file (repeatable), VALUE in YAML, KEY a dotted path: "
        "e.g. --set extractors.token_stats.documents=/data/pile.jsonl --set 'extractors.evals.tasks=[sciq]'. "
        "Give `status` the same --set as `extract`: the settings decide what counts as done.",
        show_default=False,
    ),
]


def _fail(message: str) -> None:
    """One line on stderr (the terminal wraps it, so a path stays whole), exit status 2."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)  # messages quote [brackets]
    raise typer.Exit(2)


def _load_suite(
    name: str,
    overrides: list[str] | None = None,
    sizes: str | None = None,
    seeds: str | None = None,
    steps: str | None = None,
):
    """The suite file with its --set overrides, narrowed to the selected sizes, seeds, steps."""
    from polypythias.extract.suite import SuiteError, load_suite, parse_selection

    try:
        suite = load_suite(name, overrides or ())
        if sizes is None and seeds is None and steps is None:
            return suite
        return suite.narrowed(*parse_selection(sizes, seeds, steps))
    except SuiteError as error:
        _fail(str(error))


def _check_selection(suite, extractors: list[str]) -> None:
    """Refuse a selection in which none of the (configured) extractors has a checkpoint."""
    extractors = [name for name in extractors if name in suite.extractors]  # others: refused later
    if suite.whole is not suite and extractors and not any(suite.checkpoints_for(name) for name in extractors):
        _fail(
            f"the selection (sizes {', '.join(suite.sizes)}; seeds {', '.join(map(str, suite.seeds))}; "
            f"steps {', '.join(map(str, suite.steps['all']))}) matches no checkpoint of "
            f"{', '.join(extractors)} in suite {suite.name!r}: their step sets hold none of those steps"
        )


def _lake(option: str | None, suite=None):
    from polypythias.warehouse.lake import Lake, LakeError

    try:
        if option:
            lake = Lake(option)
        elif suite is not None and suite.lake:
            lake = Lake(suite.lake if "://" in suite.lake else suite.resolve_path(suite.lake))
        else:
            lake = Lake(DEFAULT_LAKE)
    except LakeError as error:
        _fail(str(error))
    if lake.is_local and Path(lake.root).exists() and not Path(lake.root).is_dir():
        _fail(f"the lake {lake.uri} is not a folder")
    return lake


def _check_lake(lake) -> None:
    """Refuse, naming the file, a lake that is a file or holds a Parquet file that is
    unreadable or of another schema version: before work that would mix versions, and
    for readers such as dbt that read the files directly."""
    from polypythias.warehouse.lake import LakeError

    try:
        lake.check_schema_versions()
    except LakeError as error:
        _fail(str(error))


def _quiet_libraries() -> None:
    from polypythias.extract.checkpoints import quiet_transformers

    quiet_transformers()


# -- extraction ---------------------------------------------------------------


@app.command()
def extract(
    suite: SuiteOption,
    lake: LakeOption = None,
    extractors: Annotated[
        str | None,
        typer.Option(help="Comma-separated extractors to run. [default: all the suite configures]"),
    ] = None,
    shard: Annotated[
        str,
        typer.Option(help="Do shard i of n (0-based), e.g. 0/4 for the first of four jobs."),
    ] = "0/1",
    sizes: SizesOption = None,
    seeds: SeedsOption = None,
    steps: StepsOption = None,
    settings: SetOption = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    lease: Annotated[
        float | None,
        typer.Option(
            min=1,
            show_default=False,
            help="Seconds a claim on a checkpoint outlives its job's last heartbeat: after "
            "that, another job takes over the claim of a job that was killed on another "
            "node (one killed on this host is taken over at once). \\[default: 600]",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Extract with this many processes on this machine's CPUs, each with its "
            "share of the threads: small models run faster side by side than one at a time "
            "on every thread. CPU only; on GPUs, `accelerate launch --num_processes N` starts "
            "the processes.",
        ),
    ] = 1,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            envvar="POLYPYTHIAS_EXTRACT_THREADS",
            show_default=False,
            help="CPU threads for torch (shared by the --workers). \\[default: the CPUs this process may "
            "use: its CPU affinity, capped by its cgroup's CPU quota]",
        ),
    ] = None,
) -> None:
    """Extract the suite's missing work into the lake (resumable, idempotent).

    Each checkpoint is loaded once and every pending extractor runs on it. Work that
    already succeeded under the same configuration is skipped; failed work is retried;
    a diverged checkpoint (NaN or inf weights or outputs) is recorded with what could
    still be computed and not retried. Jobs may overlap (cron, SLURM arrays, several
    `accelerate launch` processes): each checkpoint is claimed by one of them. Exits 1
    when anything failed, after extracting everything else.
    """
    from polypythias.extract.claims import DEFAULT_LEASE_S
    from polypythias.extract.extractors import ExtractorError
    from polypythias.extract.runner import parse_shard, run_extraction
    from polypythias.extract.threads import configure_threads
    from polypythias.warehouse.lake import LakeError

    # First: OpenMP reads its settings when torch loads, and reading the suite loads it.
    configure_threads(threads)
    the_suite = _load_suite(suite, settings, sizes, seeds, steps)
    try:
        shard_range = parse_shard(shard)
    except ValueError as error:
        _fail(str(error))
    _quiet_libraries()
    names = None
    if extractors is not None:
        names = [n.strip() for n in extractors.split(",") if n.strip()]
        if not names:
            _fail(f"--extractors {extractors!r} names no extractor; leave it out to run all the suite configures")
    _check_selection(the_suite, names or list(the_suite.extractors))
    the_lake = _lake(lake, the_suite)
    try:
        summary = run_extraction(
            the_suite,
            the_lake,
            names,
            shard_range,
            progress,
            lease or DEFAULT_LEASE_S,
            workers,
        )
    except (ExtractorError, LakeError) as error:
        _fail(str(error))
    except OSError as error:  # a remote lake that cannot be reached
        _fail(f"the lake {the_lake.uri}: {' '.join(str(error).split())}")
    console.print(
        f"[bold]{summary.checkpoints}[/bold] checkpoints extracted, "
        f"[green]{summary.succeeded}[/green] extractions succeeded, "
        f"[yellow]{len(summary.diverged)}[/yellow] diverged, "
        f"[red]{len(summary.failures)}[/red] failed"
        + (f", {summary.held_elsewhere} left to other jobs" if summary.held_elsewhere else "")
        + f"; lake: {the_lake.uri}"
    )
    diverged = sorted({str(d.checkpoint) for d in summary.diverged})
    if diverged:
        console.print(f"[yellow]diverged (NaN or inf), recorded:[/yellow] {', '.join(diverged)}")
    if summary.failures:
        table = Table("checkpoint", "extractor", "error", title="Failures (recorded in the manifest)")
        for failure in summary.failures:
            table.add_row(str(failure.checkpoint), failure.extractor, failure.error)
        err.print(table)
        raise typer.Exit(1)


@app.command()
def status(
    suite: SuiteOption,
    lake: LakeOption = None,
    sizes: SizesOption = None,
    seeds: SeedsOption = None,
    steps: StepsOption = None,
    settings: SetOption = None,
) -> None:
    """Expected grid against the lake: done, stale, failed and missing work per run
    (of the selected sizes, seeds and steps, when --sizes, --seeds or --steps narrow it)."""
    from polypythias.extract.runner import build_extractors
    from polypythias.extract.status import STATES, suite_status

    the_suite = _load_suite(suite, settings, sizes, seeds, steps)
    _check_selection(the_suite, list(the_suite.extractors))
    the_lake = _lake(lake, the_suite)
    try:
        rows = suite_status(the_suite, the_lake, build_extractors(the_suite, None))
    except Exception as error:  # noqa: BLE001 - any problem reading the lake is reported plainly
        _fail(str(error))
    title = f"{the_suite.name} in {the_lake.uri}"
    if the_suite.whole is not the_suite:
        title += f" (selected: {len(the_suite.steps['all'])} of {len(the_suite.whole.steps['all'])} steps)"
    table = Table("model_size", "seed", *STATES, title=title)
    for row in rows:
        table.add_row(row.model_size, str(row.seed), *(str(row.counts[s]) for s in STATES))
    console.print(table)
    for row in rows:
        for error in row.errors[:3]:
            err.print(f"[red]{row.model_size}/seed{row.seed}[/red] {error}")


@app.command()
def verify(lake: LakeOption = None) -> None:
    """Read every file of the lake and check it; exits 1 when anything is wrong.

    Checks each file's folder (partition values), that it is readable Parquet (page
    checksums too), its schema version, that its rows are those of the extraction it
    is named after, and that every settled manifest row's files hold the rows it
    records. Prints a summary per dataset and one line per problem. Cheap enough for
    cron before a build; `polypythias extract` redoes damaged extractions.
    """
    from rich.markup import escape

    from polypythias.warehouse.lake import LakeError
    from polypythias.warehouse.verify import verify as verify_lake

    the_lake = _lake(lake)
    try:
        result = verify_lake(the_lake)
    except LakeError as error:
        _fail(str(error))
    table = Table("dataset", "files", "rows", "MB", title=f"{the_lake.uri}")
    for name in sorted(result.files):
        table.add_row(name, str(result.files[name]), str(result.rows[name]), f"{result.bytes[name] / 2**20:.1f}")
    console.print(table)
    unrecorded = (
        f"; {result.unrecorded} data files of attempts without a manifest row (never read)" if result.unrecorded else ""
    )
    console.print(
        f"verified {sum(result.files.values())} files ({sum(result.rows.values())} rows, "
        f"{sum(result.bytes.values()) / 2**20:.1f} MB) in {result.seconds:.1f} s: "
        + (f"[red]{len(result.problems)} problem(s)[/red]" if result.problems else "[green]no problem found[/green]")
        + unrecorded
        + (f"; {result.redone} damaged extraction(s) already redone" if result.redone else ""),
        soft_wrap=True,
    )
    for problem in result.problems:
        err.print(f"[red]problem[/red] {escape(problem)}", soft_wrap=True)
    if result.problems:
        raise typer.Exit(1)


# -- the micro suite -----------------------------------------------------------


@micro_app.command("train")
def micro_train(
    out: Annotated[Path, typer.Option(help="Folder for checkpoints, tokenizer, eval set and suite.yaml.")] = DEMO_DIR,
    sizes: Annotated[str, typer.Option(help="Comma-separated model sizes.")] = "",
    seeds: Annotated[int | None, typer.Option(help="Number of seeds (0 … n-1); default 5.", min=1)] = None,
    steps: Annotated[int | None, typer.Option(help="Optimiser steps per run; default from TrainConfig.", min=1)] = None,
    lake: LakeOption = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    inject: Annotated[
        list[str] | None,
        typer.Option(
            "--inject",
            metavar="SPEC",
            help=(
                "Inject instability into one run (repeatable): SIZE:SEED:KIND@START+STEPS\\[xFACTOR], "
                "KIND lr_spike (learning rate times FACTOR > 1) or shuffled_tokens (each sequence's "
                "tokens shuffled; no FACTOR), for STEPS optimiser steps from step START. "
                "E.g. --inject 1m:4:lr_spike@96+16x30 --inject 200k:1:shuffled_tokens@64+32. "
                "Recorded in that run's run.json (injected_instability); other runs are unchanged."
            ),
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train a micro suite; its training logs go to the lake's training_log dataset."""
    _quiet_libraries()
    the_lake = _lake(lake)
    _check_lake(the_lake)  # before training, which takes minutes
    suite_file = _train_micro(out, sizes, seeds, steps, the_lake, progress, inject or [])
    console.print(f"micro suite written; suite file: [bold]{suite_file}[/bold]")


def _train_micro(
    out: Path,
    sizes: str,
    seeds: int | None,
    steps: int | None,
    lake,
    progress: bool,
    instabilities=(),
) -> Path:
    """`instabilities`: Instability objects or their specs (SIZE:SEED:KIND@START+STEPS[xFACTOR])."""
    from polypythias.extract.micro.train import Instability, SettingError, TrainConfig, train_suite_into_lake

    config = TrainConfig()
    if sizes:
        config.sizes = [s.strip() for s in sizes.split(",") if s.strip()]
    if seeds:
        config.seeds = list(range(seeds))
    if steps:
        config.total_steps = steps
    if out.exists() and not out.is_dir():
        _fail(f"{out} is a file; the micro suite needs a folder there")
    try:
        config.instabilities = [i if isinstance(i, Instability) else Instability.parse(i) for i in instabilities]
        config.validate()
    except SettingError as error:
        option = {"sizes": "--sizes", "seeds": "--seeds", "total_steps": "--steps"}[error.setting]
        _fail(f"{option}: {error}")
    except ValueError as error:
        _fail(str(error))
    for item in config.instabilities:
        console.print(f"injecting instability into {item.size}/seed{item.seed}: {item.spec()}")
    try:
        return train_suite_into_lake(config, out, lake, progress=progress)
    except ValueError as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"cannot write the micro suite into {out}: {error}")


# -- importing results computed elsewhere ---------------------------------------


@ingest_app.command("lm-eval")
def ingest_lm_eval(
    paths: Annotated[
        list[Path],
        typer.Argument(help="lm-eval results files or folders (searched recursively for *.json).", show_default=False),
    ],
    lake: LakeOption = None,
    suite: Annotated[
        str,
        typer.Option("--suite", help="Suite name; a non-standard variant is appended (polypythias-deduped)."),
    ] = "polypythias",
    pattern: Annotated[
        str | None,
        typer.Option(
            help="Regex with named groups size (required), seed (optional), step (optional: then it is "
            "searched in NAME@REVISION, e.g. OLMo-(?P<size>\\d+B)@step(?P<step>\\d+)-tokens) and others (the "
            "variant), searched in the model name. [default: reads EleutherAI/pythia-{size}[-deduped][-seed{k}]"
            "[-suffix] and similar names]",
            show_default=False,
        ),
    ] = None,
    step: Annotated[
        int | None,
        typer.Option(
            "--step",
            min=0,
            help="Step of files that state no checkpoint (a final model's results, "
            "no revision); files that state one keep theirs.",
            show_default=False,
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Import lm-eval results files: lm-eval 0.3 and 0.4 (with 0.4 samples when present),
    GPT-NeoX evaluate.py files and the prompt-source fork's files (the whole Pythia
    evaluation release).

    Each file is identified by what it says about itself: config.model_args
    (pretrained=…,revision=stepN), or for NeoX-era files the training configuration
    they record (architecture, run names, train_data_paths; these are v0 runs). A
    file or folder name that disagrees is recorded as a finding in eval_files. Files
    already ingested (same content and path) are skipped, and so are files that are
    no results (a PDF, a plot). Old-format files record no date: the time in a
    GPT-NeoX file's name, else the file's modification time, is used as evaluated_at. Each failed file gets one line; the summary counts
    failures by reason. Exits 1 when any file failed, after ingesting all the others.
    """
    from rich.markup import escape

    from polypythias.extract.ingest import ModelNamePattern, ingest
    from polypythias.warehouse.lake import LakeError

    try:
        the_pattern = ModelNamePattern(pattern) if pattern else ModelNamePattern()
    except ValueError as error:
        _fail(str(error))
    the_lake = _lake(lake)
    _check_lake(the_lake)
    with _file_progress(progress) as (on_start, on_file):
        try:
            summary = ingest(paths, the_lake, the_pattern, suite, on_start, on_file, step)
        except LakeError as error:
            _fail(str(error))
    rows = summary.rows
    for outcome in summary.outcomes:
        if outcome.finding and outcome.status == "ingested":
            console.print(
                f"[yellow]finding[/yellow] {escape(str(outcome.path))}: {escape(outcome.finding)}", soft_wrap=True
            )
    for outcome in summary.of("failed"):
        err.print(f"[red]failed[/red] {escape(outcome.error or str(outcome.path))}", soft_wrap=True)

    def counted(status: str) -> str:
        by_count = sorted(summary.reasons(status).items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{n} {reason}" for reason, n in by_count)

    skipped = f" ({escape(counted('skipped'))})" if summary.of("skipped") else ""
    failed = f" ({escape(counted('failed'))})" if summary.of("failed") else ""
    console.print(
        f"[bold]{len(summary.outcomes)}[/bold] files: [green]{len(summary.of('ingested'))}[/green] ingested, "
        f"{len(summary.of('skipped'))} skipped{skipped}, [red]{len(summary.of('failed'))}[/red] failed{failed}; "
        f"rows: {sum(rows.values())} ({', '.join(f'{k} {v}' for k, v in sorted(rows.items())) or 'none'}); "
        f"findings: {sum(1 for o in summary.outcomes if o.finding and o.status == 'ingested')}; "
        f"lake: {escape(the_lake.uri)}",
        soft_wrap=True,
    )
    if not summary.ok:
        raise typer.Exit(1)


@ingest_app.command("training-map")
def ingest_training_map(
    file: Annotated[
        Path,
        typer.Argument(help="TSV or CSV with a header: step, seed, state and optionally score.", show_default=False),
    ],
    suite: Annotated[str, typer.Option("--suite", help="Suite the map belongs to.", show_default=False)],
    model_size: Annotated[str, typer.Option("--model-size", help="Model size the map belongs to.", show_default=False)],
    lake: LakeOption = None,
) -> None:
    """Import a training map computed elsewhere (per run and step: a state, optionally a score).

    Tab- or comma-separated (.tsv/.csv, else judged by the header line). A file as
    pandas writes it is read as released: an unnamed first column (the row index) is
    ignored, and so are other columns (a one-line notice names them). Rows are
    checked (non-negative integer step, seed and state; a finite score or empty; no
    seed × step twice) and any error names the file and line. The map supersedes any
    earlier import of the same suite and size (kept in the lake, no longer read); `polypythias build` puts it into
    fct_training_phases with map_source 'imported'.
    """
    from rich.markup import escape

    from polypythias.extract.ingest_training_map import TrainingMapError, ingest_training_map as run_import
    from polypythias.warehouse.lake import LakeError

    the_lake = _lake(lake)
    _check_lake(the_lake)
    try:
        imported = run_import(file, the_lake, suite, model_size)
    except (TrainingMapError, LakeError) as error:
        err.print(f"[red]failed[/red] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    the_map = imported.map
    if the_map.ignored_columns:
        err.print(
            f"[yellow]notice[/yellow] {escape(str(file))}: column(s) "
            f"{escape(', '.join(map(repr, the_map.ignored_columns)))} ignored (a map uses step, seed, state, score)",
            soft_wrap=True,
        )
    replaced = f"; supersedes {imported.superseded} earlier import(s)" if imported.superseded else ""
    console.print(
        f"training map of [bold]{escape(suite)}/{escape(model_size)}[/bold]: {the_map.n_rows} checkpoints of "
        f"{the_map.n_runs} run(s), {the_map.n_states} state(s){replaced}; lake: {escape(the_lake.uri)}",
        soft_wrap=True,
    )


@contextmanager
def _file_progress(enabled: bool):
    """A progress bar over files (on a terminal, for more than ten); yields its callbacks."""
    if not enabled:
        yield None, None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task("ingest", total=0)

    def on_start(total: int) -> None:
        bar.update(task, total=total)
        if total > 10 and err.is_terminal:
            bar.start()

    try:
        yield on_start, lambda outcome: bar.advance(task)
    finally:
        bar.stop()


# -- warehouse -----------------------------------------------------------------


@app.command()
def build(
    lake: LakeOption = None,
    db: DbOption = DEFAULT_DB,
    docs: Annotated[bool, typer.Option(help="Also run `dbt docs generate`.")] = False,
    verbose: Annotated[bool, typer.Option(help="Show dbt's log, not only its errors.")] = False,
    full_refresh: Annotated[
        bool,
        typer.Option(
            "--full-refresh",
            help="Rebuild the incremental models from the whole lake instead of only the "
            "checkpoints added or re-extracted since the last build.",
        ),
    ] = False,
    unit_tests: Annotated[
        bool,
        typer.Option(
            "--unit-tests",
            help="Also run dbt's unit tests: they check the SQL on fixed rows, not the lake (`make test` runs them).",
        ),
    ] = False,
) -> None:
    """Run `dbt build` over the lake into the DuckDB warehouse (models and data tests).

    Incremental: the item-level eval models process only new or re-extracted
    checkpoints; the marts equal a `--full-refresh` rebuild's."""
    _build(_lake(lake), db, docs, verbose, full_refresh, unit_tests)


def _build(
    lake,
    db: Path,
    docs: bool = False,
    verbose: bool = False,
    full_refresh: bool = False,
    unit_tests: bool = False,
) -> None:
    from polypythias.warehouse.dbt import DbtBuildError, build as dbt_build

    _check_lake(lake)
    try:
        ran = dbt_build(lake.uri, db, docs=docs, verbose=verbose, full_refresh=full_refresh, unit_tests=unit_tests)
    except DbtBuildError as error:
        _fail(str(error))
    tests = (
        f"{ran['test']} data tests and {ran['unit_test']} unit tests passed"
        if unit_tests
        else f"{ran['test']} data tests passed; `--unit-tests` also runs dbt's unit tests"
    )
    console.print(f"warehouse built: [bold]{db}[/bold] ({ran['model']} models, {tests})")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One query to run on the warehouse (read-only).")],
    db: DbOption = DEFAULT_DB,
    format: Annotated[str, typer.Option(help="table, csv or json.")] = "table",
) -> None:
    """Run one query on the warehouse and print the result.

    A reader: one statement, a query (select, from, with, show, describe, summarize);
    COPY, EXPORT, ATTACH, INSTALL, LOAD, SET, PRAGMA and several statements are
    refused, and no file outside the lake the warehouse's views read can be opened."""
    from polypythias.warehouse.sql import WarehouseError, query as run_query, to_csv, to_json

    if format not in {"table", "csv", "json"}:
        _fail(f"--format must be table, csv or json, not {format!r}")
    if not query.strip():
        _fail('the query is empty; e.g. polypythias sql "show tables"')
    try:
        columns, rows = run_query(db, query)
    except WarehouseError as error:
        _fail(str(error))
    if format == "csv":
        typer.echo(to_csv(columns, rows), nl=False)
    elif format == "json":
        typer.echo(to_json(columns, rows))
    else:
        table = Table(*columns)
        for row in rows:
            table.add_row(*("" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v) for v in row))
        console.print(table)


@app.command()
def report(db: DbOption = DEFAULT_DB, out: ReportsOption = DEFAULT_REPORTS) -> None:
    """Chart the marts with Altair into one self-contained HTML page (plus PNGs)."""
    from polypythias.analyses.marts import ReportError
    from polypythias.analyses.report import build_report
    from polypythias.warehouse.sql import WarehouseError

    try:
        index = build_report(db, out)
    except (ReportError, WarehouseError) as error:
        _fail(str(error))
    except OSError as error:  # --out is a file, or not writable
        _fail(f"cannot write the report into {out}: {error}")
    console.print(f"report: [bold]{index}[/bold]")


# -- the embedded default -------------------------------------------------------


@app.command()
def demo(
    lake: LakeOption = None,
    db: DbOption = DEFAULT_DB,
    out: ReportsOption = DEFAULT_REPORTS,
    micro_dir: Annotated[Path, typer.Option(help="Where the micro suite is trained.")] = DEMO_DIR,
) -> None:
    """Train the micro suite, extract everything, build the marts, write the report."""
    from polypythias.analyses.report import build_report
    from polypythias.extract.runner import run_extraction

    _quiet_libraries()
    # Everything the demo touches is local: never wait on a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    the_lake = _lake(lake)
    suite_file = micro_dir / "suite.yaml"
    if suite_file.is_file():
        console.print(f"[bold]1/4[/bold] reusing the micro suite in {micro_dir} (delete it to retrain)")
    else:
        console.print(f"[bold]1/4[/bold] training the micro suite into {micro_dir}")
        from polypythias.extract.micro.train import DEMO_INSTABILITY

        _train_micro(micro_dir, "", None, None, the_lake, progress=True, instabilities=[DEMO_INSTABILITY])
    # The micro models are too small to use every thread: one worker per core (up
    # to DEMO_MAX_WORKERS) extracts about 1.5× faster on 2 cores.
    workers = min(len(os.sched_getaffinity(0)), DEMO_MAX_WORKERS)
    console.print(f"[bold]2/4[/bold] extracting ({workers} worker process{'es' if workers > 1 else ''})")
    summary = run_extraction(_load_suite(str(suite_file)), the_lake, workers=workers)
    if summary.failures:
        _fail(f"{len(summary.failures)} extractions failed; see `polypythias status --suite {suite_file}`")
    console.print("[bold]3/4[/bold] building the marts (dbt)")
    _build(the_lake, db)
    console.print("[bold]4/4[/bold] writing the report")
    index = build_report(db, out)
    _print_flagged_runs(db)
    shell = Path(sys.executable).parent / "duckdb"
    console.print(
        f"\nlake:      {the_lake.uri}\nwarehouse: {db}\nreport:    {index}\n\n"
        'Try:\n  polypythias sql "select model_size, seed, signal, score, threshold, reason '
        'from fct_run_outliers where fires order by all"\n'
        f"  {shell} -readonly {db}"
    )


def _print_flagged_runs(db: Path) -> None:
    """The runs some outlier signal flags, each signal with its reason."""
    from polypythias.analyses.outliers import flagged_runs

    runs = flagged_runs(db)
    if not runs:
        console.print("\nNo run is flagged as an outlier by any signal.")
        return
    console.print(f"\n[bold]{len(runs)} run{'s' if len(runs) != 1 else ''} flagged as outliers[/bold]")
    for (size, seed), signals in runs.items():
        console.print(f"{size} seed {seed}: {len(signals)} signal{'s' if len(signals) != 1 else ''}")
        for signal, first_step, reason in signals:
            since = "" if first_step is None else f" (from step {first_step})"
            console.print(f"  - {signal}{since}: {reason}", markup=False, highlight=False)


def main() -> None:
    app()
