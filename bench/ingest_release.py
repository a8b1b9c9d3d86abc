"""Throughput of `polypythias ingest lm-eval` on a synthetic Pythia evaluation release.

Writes a release of the public one's shape (the `evals/` folder of EleutherAI/pythia,
about 1,800 JSON files and 110,000 result rows) from the real samples in
`../shared/fixtures/` (each file a copy of a real one of its format with its step,
size names and values changed): lm-eval 0.3 files of the v1 runs (standard, deduped,
intervention and suffixed variants such as bf16 and 0.25MtokBS), GPT-NeoX
`evaluate.py` files of the v0 runs and of the bias evaluations, prompt-source
WinoBias files, plus a PDF and a plot that must be skipped. Then times, through
the command line:

- the first ingest into an empty lake: files/s and result rows/s;
- a second ingest of the same release, which must ingest nothing.

Wall and CPU seconds are both printed: on a shared machine the wall time says
more about the neighbours than about the ingest.

Both must exit 0 with no file failed.

    python bench/ingest_release.py [--files 1800] [--work DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
V1 = SHARED / "pythia-evals" / "pythia-v1" / "pythia-160m" / "zero-shot" / "160m_step1000.json"
FORMATS = SHARED / "pythia-evals-formats"
V0 = (
    FORMATS
    / "pythia-v0"
    / "pythia-70m"
    / "zero-shot"
    / "pythia-70m-0shot-global_step103000_eval_results_11-25-2022-07-44-49.json"
)
BIAS = FORMATS / "bias-evals" / "intervention-19m-deduped-step137000_eval_results_01-21-2023-21-02-18.json"
WINOBIAS = FORMATS / "bias-evals" / "winobias" / "410M" / "eval_results_02-16-2023-00-59-19.json"

#: today's size → (old name, architecture)
SIZES = {
    "70m": ("19M", (6, 512, 8)),
    "160m": ("125M", (12, 768, 12)),
    "410m": ("350M", (24, 1024, 16)),
    "1b": ("800M", (16, 2048, 8)),
    "1.4b": ("1.3B", (24, 2048, 16)),
    "2.8b": ("2.7B", (32, 2560, 32)),
    "6.9b": ("6.7B", (32, 4096, 32)),
    "12b": ("13B", (36, 5120, 40)),
}
V1_VARIANTS = ["", "-deduped", "-bf16", "-0.25MtokBS", "-deduped-long"]
#: The zero-shot grid (27 checkpoints) and the five-shot one (15).
ZERO_SHOT = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, *range(3000, 143001, 10000)]
FIVE_SHOT = [3000, *range(13000, 143001, 10000)]
#: Tasks kept in a v1 file: the public v1 files range from a few tasks to about 90.
V1_TASKS = 25


def jitter(results: dict, rng: random.Random) -> dict:
    """The same tasks and metrics, other finite values."""
    return {
        task: {k: (v * rng.uniform(0.9, 1.1) if isinstance(v, float) else v) for k, v in entry.items()}
        for task, entry in results.items()
    }


def write_release(root: Path, n_files: int, seed: int = 0) -> int:
    """Write the release; returns the number of JSON files."""
    rng = random.Random(seed)
    v1, v0, bias, winobias = (json.loads(p.read_text()) for p in (V1, V0, BIAS, WINOBIAS))
    written = 0
    plan = []
    for size in SIZES:  # the shares of the public release: mostly v1, then v0, bias, WinoBias
        for variant in V1_VARIANTS:
            plan += [
                ("v1", size, variant, (shots, step))
                for shots, grid in ((0, ZERO_SHOT), (5, FIVE_SHOT))
                for step in grid
            ]
        plan += [("v0", size, "", step) for step in ZERO_SHOT[11:]]
        plan += [("bias", size, kind, step) for kind in ("", "intervention-") for step in (133000, 143000)]
        plan += [("winobias", size, "", step) for step in (135000, 143000)]
    rng.shuffle(plan)
    for kind, size, variant, step in plan[:n_files]:
        old, (layers, hidden, heads) = SIZES[size]
        if kind == "v1":
            shots, step = step
            document = copy.deepcopy(v1)
            document["results"] = dict(list(document["results"].items())[:V1_TASKS])
            document["config"].update(
                num_fewshot=shots, model_args=f"pretrained=EleutherAI/pythia-v1.1-{size}{variant},revision=step{step}"
            )
            folder = root / "pythia-v1" / f"pythia-{size}{variant}" / ("five-shot" if shots else "zero-shot")
            path = folder / f"{size}{variant}{'-5shot' if shots else ''}_step{step}.json"
        elif kind in ("v0", "bias"):
            document = copy.deepcopy(v0 if kind == "v0" else bias)
            name = f"{variant}{old.lower()}-deduped-step{step}" if kind == "bias" else f"{old}-0shot-global_step{step}"
            data = (
                "pile_deduped/pile_0.87_deduped_text_document"
                if kind == "bias"
                else "pile/pile_20B_tokenizer_text_document"
            )
            document["config"]["model_args"].update(
                iteration=step,
                num_layers=layers,
                hidden_size=hidden,
                num_attention_heads=heads,
                eval_results_prefix=f"../evals/{name}",
                wandb_group=f"{old}{'-intervention' if variant else ''}_abcd1234",
                save=f"/ckpts/{old}{'_dedup' if kind == 'bias' else ''}{'_intervention' if variant else ''}",
                load=f"/ckpts/{old}{'_dedup' if kind == 'bias' else ''}{'_intervention' if variant else ''}",
                train_data_paths=[f"/fsx/{data}"],
            )
            folder = root / ("bias-evals" if kind == "bias" else f"pythia-v0/pythia-{size}/zero-shot")
            path = folder / f"{name}_eval_results_01-01-2023-00-00-00.json"
        else:
            document = copy.deepcopy(winobias)
            document["config"]["model_args"].update(
                iteration=step,
                num_layers=layers,
                hidden_size=hidden,
                num_attention_heads=heads,
                wandb_group=f"v2-{size}-deduped_abcd1234",
                save=f"/ckpts/{size}_deduped",
                load=f"/ckpts/{size}_deduped",
            )
            path = root / "bias-evals" / "winobias" / size.upper() / f"eval_results_{step}.json"
            document["table_results"] = jitter(document["table_results"], rng)
        if "results" in document and isinstance(document["results"], dict):
            document["results"] = jitter(document["results"], rng)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))
        written += 1
    (root / "pythia-paper.pdf").write_bytes(b"%PDF-1.4\n")
    (root / "pythia-v1" / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return written


def ingest(release: Path, lake: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds of one ingest through the command line, and what it said."""
    started, cpu = time.perf_counter(), _children_cpu()
    result = subprocess.run(
        [sys.executable, "-m", "polypythias", "ingest", "lm-eval", str(release), "--lake", str(lake), "--no-progress"],
        capture_output=True,
        text=True,
    )
    elapsed, cpu = time.perf_counter() - started, _children_cpu() - cpu
    said = result.stdout.strip().splitlines()[-1]  # the closing summary
    if result.returncode != 0:
        sys.exit(f"ingest failed (exit {result.returncode}):\n{said}\n{result.stderr[-2000:]}")
    return elapsed, cpu, said


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1800, help="JSON files in the release")
    parser.add_argument("--work", type=Path, help="folder for the release and the lake (default: a temporary one)")
    options = parser.parse_args()
    work = options.work or Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    release, lake = work / "evals", work / "lake"
    shutil.rmtree(release, ignore_errors=True)
    shutil.rmtree(lake, ignore_errors=True)
    n_files = write_release(release, options.files)

    first, first_cpu, said = ingest(release, lake)
    rows = int(re.search(r"eval_results (\d+)", said).group(1))
    if f"{n_files} ingested" not in said or " 0 failed" not in said:
        sys.exit(f"not every file was ingested: {said}")
    again, again_cpu, said_again = ingest(release, lake)
    if " 0 ingested" not in said_again:
        sys.exit(f"the rerun ingested something: {said_again}")
    print(f"release: {n_files} JSON files (+2 non-results files), {rows} result rows, in {release}")
    print(
        f"first ingest: {first:.1f} s = {n_files / first:.0f} files/s, {rows / first:.0f} rows/s "
        f"(CPU {first_cpu:.1f} s: on a machine shared with other work, wall time exceeds CPU time)"
    )
    print(f"rerun (nothing to ingest): {again:.1f} s (CPU {again_cpu:.1f} s)")
    print(f"summary: {said}")
    if not options.work:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
