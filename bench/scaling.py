"""How `polypythias build` grows with the lake: 1/4, 1/2 and the full synthetic lake.

For each fraction, writes a synthetic PolyPythias lake (bench/synthetic_lake.py;
the fraction is the share of the 10 seeds per size, so 3, 5 and 10 seeds) unless
it is already there, builds it into a fresh warehouse, and prints wall time, peak
memory (resident set of the build's process tree, sampled every 0.2 s) and the
costliest models (dbt's run_results.json). Then, on the largest lake, adds one
checkpoint of one run (eval_samples, eval_results, weight_stats and manifest of a
new evaluation-grid checkpoint) and times the incremental `polypythias build`
against a full rebuild (`--full-refresh`).

    python bench/scaling.py --work /tmp/scaling                 # 1/4, 1/2 and 1
    python bench/scaling.py --work /tmp/scaling --fractions 0.25 --item-fraction 0.1

The lakes keep the last checkpoint of the first size's seed 0 out (written before
the incremental build), so the full lake is the suite less that one checkpoint
until then.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic_lake  # noqa: E402

from polypythias.warehouse.lake import Lake  # noqa: E402

#: The checkpoint the incremental build adds: the final evaluation-grid step of a run.
HELD_OUT = ("14m", 0, synthetic_lake.EVAL_STEPS[-1])


@dataclass(slots=True)
class Measured:
    wall_s: float
    peak_rss_gib: float
    dbt_elapsed_s: float
    top: list[tuple[float, str]]


def measure_build(lake: Path, db: Path, full_refresh: bool = False, variables: dict | None = None) -> Measured:
    """Build in a subprocess (what `polypythias build [--full-refresh]` runs, plus
    dbt vars); wall time, peak RSS of its process tree."""
    import psutil

    call = (
        "import sys, json; from pathlib import Path; from polypythias.warehouse.dbt import build; "
        f"build({str(lake)!r}, Path({str(db)!r}), full_refresh={full_refresh!r}, "
        f"variables=json.loads({json.dumps(variables or {})!r}))"
    )
    command = [sys.executable, "-c", call]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                   "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"polypythias build --lake {lake} --db {db} failed:\n{output[-4000:]}")
    results = json.loads((db.parent / ".dbt" / "target" / "run_results.json").read_text())
    timings = sorted(
        ((r["execution_time"], r["unique_id"].split(".", 2)[-1]) for r in results["results"]), reverse=True
    )
    return Measured(wall, peak[0] / 2**30, results["elapsed_time"], timings[:8])


def ensure_lake(path: Path, fraction: float, item_fraction: float) -> int:
    """Write the lake at ``path`` unless it is there; returns its eval_samples rows."""
    n_seeds = max(2, int(-(-len(synthetic_lake.SEEDS) * fraction // 1)))
    spec = synthetic_lake.Spec(seeds=synthetic_lake.SEEDS[:n_seeds], item_fraction=item_fraction)
    marker = path / "_synthetic.json"
    if marker.exists():
        return json.loads(marker.read_text())["eval_samples"]
    if path.exists():
        shutil.rmtree(path)
    print(f"writing {path} ({n_seeds} seeds per size)…", flush=True)
    rows = synthetic_lake.write_lake(Lake(path), spec, progress=True, skip={HELD_OUT})
    marker.write_text(json.dumps({"eval_samples": rows, "seeds": n_seeds, "item_fraction": item_fraction}))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the lakes and warehouses")
    parser.add_argument("--fractions", default="0.25,0.5,1", help="comma-separated shares of the seeds")
    parser.add_argument("--item-fraction", type=float, default=1.0, help="share of each task's items")
    parser.add_argument("--no-incremental", action="store_true", help="skip the incremental measurement")
    parser.add_argument(
        "--vars",
        default="{}",
        help='dbt vars as JSON, e.g. \'{"training_map_max_horizons": 1, "training_map_restarts": 1}\'',
    )
    parser.add_argument(
        "--no-full-refresh", action="store_true", help="compare the incremental build with the first full build only"
    )
    args = parser.parse_args(argv)
    variables = json.loads(args.vars)
    fractions = [float(f) for f in args.fractions.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for fraction in fractions:
        lake = args.work / f"lake_{fraction:g}"
        n = ensure_lake(lake, fraction, args.item_fraction)
        db = args.work / f"warehouse_{fraction:g}" / "w.duckdb"
        shutil.rmtree(db.parent, ignore_errors=True)
        print(f"building {lake} ({n:,} eval_samples rows)…", flush=True)
        rows.append((fraction, n, lake, db, measure_build(lake, db, variables=variables)))

    print(f"\nuptime: {os.popen('uptime').read().strip()}")
    print(f"{'fraction':>8} {'eval_samples':>13} {'wall s':>8} {'dbt s':>8} {'peak GiB':>9}")
    for fraction, n, _, _, m in rows:
        print(f"{fraction:>8g} {n:>13,} {m.wall_s:>8.1f} {m.dbt_elapsed_s:>8.1f} {m.peak_rss_gib:>9.2f}")
    for fraction, _, _, _, m in rows:
        print(f"\ncostliest nodes at {fraction:g}:")
        for seconds, name in m.top:
            print(f"  {seconds:8.1f} s  {name}")
    if args.no_incremental:
        return

    fraction, _, lake, db, full = rows[-1]
    spec_seeds = json.loads((lake / "_synthetic.json").read_text())
    spec = synthetic_lake.Spec(seeds=synthetic_lake.SEEDS[: spec_seeds["seeds"]],
                               item_fraction=spec_seeds["item_fraction"])  # fmt: skip
    marker = lake / "_synthetic.json"
    marker.unlink()  # the lake is about to change: rewrite it next time
    # the held-out checkpoint, or a re-extraction of it when the lake already holds it
    held = (f"suite={synthetic_lake.SUITE}/model_size={HELD_OUT[0]}/seed={HELD_OUT[1]}/"
            f"step={HELD_OUT[2]}/*.parquet")  # fmt: skip
    attempt = len(list((lake / "manifest").glob(held)))  # 0: new; n: a re-extraction
    added = synthetic_lake.write_checkpoint(Lake(lake), spec, *HELD_OUT, attempt=attempt)
    incremental = measure_build(lake, db, variables=variables)
    rebuild = full if args.no_full_refresh else measure_build(lake, db, full_refresh=True, variables=variables)
    print(
        f"\nincremental build after adding {HELD_OUT} (attempt {attempt}: {added:,} eval_samples rows) "
        f"to the {fraction:g} lake:"
    )
    print(f"  first full build  {full.wall_s:8.1f} s  peak {full.peak_rss_gib:.2f} GiB")
    print(f"  incremental       {incremental.wall_s:8.1f} s  peak {incremental.peak_rss_gib:.2f} GiB")
    if not args.no_full_refresh:
        print(f"  --full-refresh    {rebuild.wall_s:8.1f} s  peak {rebuild.peak_rss_gib:.2f} GiB")
    print(f"  incremental / full = {incremental.wall_s / rebuild.wall_s:.1%}")
    print("  costliest nodes of the incremental build:")
    for seconds, name in incremental.top:
        print(f"  {seconds:8.1f} s  {name}")


if __name__ == "__main__":
    main()
