"""Diverged checkpoints (NaN or inf weights or outputs): recorded as diverged with what
can still be computed, and kept out of the marts' aggregates, counted."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from conftest import CHECKPOINT, one_checkpoint_suite, tiny_model, write_documents
from polypythias.extract.extractors import Diverged, get_extractor
from polypythias.extract.micro import eval_tasks, probe_tasks
from polypythias.extract.micro.language import Grammar
from polypythias.extract.micro.tokenizer import build_tokenizer
from polypythias.extract.runner import run_extraction
from polypythias.extract.suite import load_suite
from polypythias.warehouse import dbt
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import MANIFEST, TOKEN_STATS, WEIGHT_STATS

pytestmark = pytest.mark.slow

_STATS = (
    "l1",
    "l2",
    "trace",
    "spectral",
    "code_sparsity",
    "computational_sparsity",
    "sv_mean",
    "sv_var",
    "mean",
    "median",
    "var",
)


def _run(tmp_path, name, options, model, tokenizer) -> pa.Table:
    suite = one_checkpoint_suite(tmp_path, {name: options})
    extractor = get_extractor(name)(suite.extractor_options(name), suite)
    (table,) = extractor.run(model, tokenizer, CHECKPOINT, torch.device("cpu")).values()
    return table


def _matrices_numpy(model) -> dict[str, np.ndarray]:
    """Every weight matrix the extractor describes, by its tensor_name, split here
    independently: GPT-NeoX's fused qkv rows are laid out per head as [q | k | v]."""
    heads = model.config.num_attention_heads
    out = {}
    for name, parameter in model.named_parameters():
        w = parameter.detach().numpy()
        if name.endswith("query_key_value.weight"):
            hidden = w.shape[1]
            per_head = w.reshape(heads, 3, hidden // heads, hidden)
            for i, part in enumerate("qkv"):
                out[f"{name}[{part}]"] = per_head[:, i].reshape(hidden, hidden)
        elif name.endswith(
            (
                "embed_in.weight",
                "embed_out.weight",
                "lm_head.weight",
                "dense.weight",
                "dense_h_to_4h.weight",
                "dense_4h_to_h.weight",
            )
        ):
            out[name] = w
    return out


def test_weight_stats_of_nonfinite_weights_count_them_and_null_their_statistics(tmp_path, tokenizer):
    model = tiny_model(len(tokenizer), seed=7)
    finite_table = _run(tmp_path, "weight_stats", {}, model, tokenizer)
    with torch.no_grad():
        layers = model.gpt_neox.layers
        qkv = layers[0].attention.query_key_value.weight  # rows 4..7 of head 0 are k
        qkv[5, 3] = float("nan")
        qkv[6, :2] = float("inf")
        layers[1].mlp.dense_4h_to_h.weight[0, 0] = float("-inf")
        layers[1].mlp.dense_h_to_4h.bias[3] = float("nan")
    table = _run(tmp_path, "weight_stats", {}, model, tokenizer)
    rows = {r["tensor_name"]: r for r in table.to_pylist()}
    before = {r["tensor_name"]: r for r in finite_table.to_pylist()}

    expected = {name: int((~np.isfinite(w)).sum()) for name, w in _matrices_numpy(model).items()}
    assert sum(n > 0 for n in expected.values()) == 2  # k of layer 0 and ffn_out of layer 1
    weights = [p.detach().numpy().ravel() for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p.detach().numpy().ravel() for n, p in model.named_parameters() if n.endswith("bias")]
    expected["all_weights"] = int((~np.isfinite(np.concatenate(weights))).sum())
    expected["all_biases"] = int((~np.isfinite(np.concatenate(biases))).sum())
    assert (expected["all_weights"], expected["all_biases"]) == (4, 1)
    assert {name: row["nonfinite"] for name, row in rows.items()} == expected

    for name, row in rows.items():
        if row["nonfinite"]:
            # undefined, so null (never NaN); the identity of the tensor is still recorded
            assert all(row[s] is None for s in _STATS), name
            assert row["value_sample"] is None
            assert row["n_rows"] == before[name]["n_rows"] and row["kind"] == before[name]["kind"]
            if name not in ("all_weights", "all_biases"):
                assert row["weight_hash"] is not None and row["weight_hash"] != before[name]["weight_hash"]
        else:
            # the finite tensors are described exactly as before
            assert row == before[name], name
    # no NaN anywhere in the table
    for column in table.column_names:
        if pa.types.is_floating(table[column].type):
            assert not pc.any(pc.is_nan(table[column])).as_py(), column
    assert pc.sum(finite_table["nonfinite"]).as_py() == 0


def test_token_stats_raise_diverged_when_logits_overflow(tmp_path, tokenizer):
    texts = write_documents(tmp_path / "docs.jsonl", n=6)
    model = tiny_model(len(tokenizer), seed=8)
    _overflowing_logits(model)
    # Independently: the positions whose logits are not all finite, one document at a time.
    bad_positions, bad_docs, positions = 0, 0, 0
    for text in texts:
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1]
        bad = (~torch.isfinite(logits)).any(-1)
        positions += len(ids) - 1
        bad_positions += int(bad.sum())
        bad_docs += bool(bad.any())
    assert bad_positions == positions and bad_docs == len(texts)
    options = {"documents": "docs.jsonl", "batch_size": 4}
    with pytest.raises(
        Diverged,
        match=(
            rf"logits not finite \(NaN or inf\) at {bad_positions} of {positions} predicted "
            rf"positions, in {bad_docs} of {len(texts)} documents"
        ),
    ):
        _run(tmp_path, "token_stats", options, model, tokenizer)


def _overflowing_logits(model) -> None:
    """Finite weights whose logits leave float32's range: every position's final
    hidden state is all ones and token 0's output embedding is 3e38 in each
    dimension, so its logit is 3e38 × hidden size = inf everywhere."""
    with torch.no_grad():
        model.gpt_neox.final_layer_norm.weight.zero_()
        model.gpt_neox.final_layer_norm.bias.fill_(1.0)
        model.get_output_embeddings().weight[0].fill_(3e38)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_evals_raise_diverged_when_loglikelihoods_are_not_finite(tmp_path):
    micro_tokenizer = build_tokenizer(Grammar().vocabulary(), model_max_length=64)
    eval_tasks.write_tasks(tmp_path / "tasks", n_items=4)
    options = {
        "tasks": list(eval_tasks.TASK_NAMES),
        "include_path": "tasks",
        "include_defaults": False,
        "limit": 3,
        "bootstrap_iters": 0,
    }
    model = tiny_model(len(micro_tokenizer), seed=4)
    _overflowing_logits(model)
    # every request's log-likelihood is NaN: all of them are counted
    with pytest.raises(
        Diverged,
        match=r"evals: (\d+) of \1 loglikelihood request\(s\) gave a "
        r"log-likelihood that is not finite \(NaN or inf\)",
    ):
        _run(tmp_path, "evals", options, model, micro_tokenizer)


def test_probes_raise_diverged_on_nonfinite_hidden_states(tmp_path):
    micro_tokenizer = build_tokenizer(Grammar().vocabulary(), model_max_length=64)
    probe_tasks.write_probe_tasks(tmp_path / "probe", pos_words=(40, 20), antecedent=(20, 10))
    tasks = {
        "pos": {"format": "conllu", "field": "upos", "train": "probe/pos_train.conllu", "test": "probe/pos_test.conllu"}
    }
    model = tiny_model(len(micro_tokenizer), seed=6)
    with torch.no_grad():
        # finite weights; block 0 adds 3e38 to dimension 0 of every position (still
        # finite), block 1 adds it again: 6e38 = inf from the output of block 1 on
        for layer in model.gpt_neox.layers:
            layer.mlp.dense_4h_to_h.bias[0] = 3e38
    suite = one_checkpoint_suite(tmp_path, {"probes": {"tasks": tasks}})
    extractor = get_extractor("probes")(suite.extractor_options("probes"), suite)
    # Independently: which layers' hidden states are not finite, one text at a time.
    bad_layers = set()
    for text in extractor.tasks[0].train.texts + extractor.tasks[0].test.texts:
        ids = [micro_tokenizer.bos_token_id] + micro_tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            hidden = model.gpt_neox(torch.tensor([ids]), output_hidden_states=True).hidden_states
        bad_layers |= {i for i, h in enumerate(hidden) if not torch.isfinite(h).all()}
    assert bad_layers and min(bad_layers) >= 1
    layers = ", ".join(map(str, sorted(bad_layers)))
    with pytest.raises(
        Diverged,
        match=(
            rf"probes: hidden states not finite \(NaN or inf\) in (\d+) of \1 probed items, "
            rf"at layer\(s\) {layers}$"
        ),
    ):
        extractor.run(model, micro_tokenizer, CHECKPOINT, torch.device("cpu"))


# -- end to end: a checkpoint with NaN weights through extraction and the marts -----------


@pytest.fixture
def suite_with_nan_checkpoint(tmp_path, tokenizer):
    """3 seeds × steps 0, 1 of random checkpoints; seed 2 at step 1 has NaN and inf
    weights (saved as safetensors). Returns (suite file, non-finite count, parameter count)."""
    for seed in (0, 1, 2):
        for step in (0, 1):
            model = tiny_model(len(tokenizer), seed * 100 + step)
            if (seed, step) == (2, 1):
                with torch.no_grad():
                    model.gpt_neox.layers[1].mlp.dense_h_to_4h.weight[:3, :5] = float("nan")
                    model.gpt_neox.embed_in.weight[7, 0] = float("inf")
                parameters = [p.detach().numpy() for p in model.parameters()]
                nonfinite = sum(int((~np.isfinite(p)).sum()) for p in parameters)
                total = sum(p.size for p in parameters)
            folder = tmp_path / f"ck/tiny/seed{seed}/step{step}"
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
    assert nonfinite == 16
    write_documents(tmp_path / "docs.jsonl", n=8)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        """
name: tiny
sizes: [tiny]
seeds: [0, 1, 2]
steps: {all: [0, 1]}
checkpoints: {local: "ck/{size}/seed{seed}/step{step}"}
extractors:
  token_stats: {documents: docs.jsonl, top_k: 3, batch_size: 4}
  weight_stats: {}
"""
    )
    return suite, nonfinite, total


def test_a_diverged_checkpoint_is_recorded_and_left_out_of_the_marts(suite_with_nan_checkpoint, tmp_path):
    suite_file, nonfinite, total = suite_with_nan_checkpoint
    suite, lake = load_suite(suite_file), Lake(tmp_path / "lake")
    summary = run_extraction(suite, lake, progress=False)
    assert summary.ok and not summary.failures  # diverged is not a failure of the job
    assert {(d.checkpoint.seed, d.checkpoint.step, d.extractor) for d in summary.diverged} == {
        (2, 1, "token_stats"),
        (2, 1, "weight_stats"),
    }

    def at(table, seed, step):
        return table.filter(pc.and_(pc.equal(table["seed"], seed), pc.equal(table["step"], step)))

    manifest = lake.read(MANIFEST)
    reason = f"weights not finite: {nonfinite} of {total} parameter values are NaN or inf"
    diverged = at(manifest, 2, 1).to_pylist()
    assert sorted((r["extractor"], r["status"], r["error"]) for r in diverged) == [
        ("token_stats", "diverged", reason),
        ("weight_stats", "diverged", reason),
    ]
    assert set(pc.filter(manifest["status"], pc.invert(pc.equal(manifest["step"], 1))).to_pylist()) == {"success"}
    # What could still be computed was: every tensor's row, the non-finite ones counted.
    weights = at(lake.read(WEIGHT_STATS), 2, 1)
    assert weights.num_rows == at(lake.read(WEIGHT_STATS), 0, 1).num_rows > 0
    counts = dict(zip(weights["tensor_name"].to_pylist(), weights["nonfinite"].to_pylist(), strict=True))
    assert counts["gpt_neox.layers.1.mlp.dense_h_to_4h.weight"] == 15
    assert counts["gpt_neox.embed_in.weight"] == 1
    assert counts["all_weights"] == nonfinite
    assert at(lake.read(TOKEN_STATS), 2, 1).num_rows == 0
    # Diverged is final: a rerun does not retry it.
    again = run_extraction(suite, lake, progress=False)
    assert again.checkpoints == 0 and lake.read(MANIFEST).num_rows == manifest.num_rows

    db = tmp_path / "warehouse.duckdb"
    dbt.build(str(tmp_path / "lake"), db, unit_tests=False)  # every data test passes too
    token_stats = lake.read(TOKEN_STATS)
    with duckdb.connect(str(db), read_only=True) as con:

        def rows(sql):
            cursor = con.execute(sql)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        checkpoints = rows(
            "select seed, step, is_present, is_diverged, diverged_reason, "
            "n_failed_attempts from dim_checkpoints order by seed, step"
        )
        assert [(r["seed"], r["step"]) for r in checkpoints if r["is_diverged"]] == [(2, 1)]
        assert all(r["is_present"] and r["n_failed_attempts"] == 0 for r in checkpoints)
        assert {r["diverged_reason"] for r in checkpoints} == {None, reason}

        features = rows("select seed, step from fct_weight_features")
        assert len(features) == 5 and {"seed": 2, "step": 1} not in features

        consistency = {r["step"]: r for r in rows("select * from fct_loss_consistency")}
        assert set(consistency) == {0, 1}
        assert consistency[0]["n_seeds"] == 3 and consistency[0]["n_seeds_diverged"] == 0
        step1 = consistency[1]
        assert step1["n_seeds"] == 2 and step1["n_seeds_diverged"] == 1
        # numpy over the finite seeds' token losses, read from the lake
        per_seed = np.array(
            [-at(token_stats, seed, 1)["target_logprob"].to_numpy().astype(np.float64).mean() for seed in (0, 1)]
        )
        q25, median, q75 = np.quantile(per_seed, [0.25, 0.5, 0.75])
        for column, value in {
            "loss_median": median,
            "loss_q25": q25,
            "loss_q75": q75,
            "loss_mean": per_seed.mean(),
            "loss_std": per_seed.std(ddof=1),
            "loss_min": per_seed.min(),
            "loss_max": per_seed.max(),
        }.items():
            assert step1[column] == pytest.approx(value, rel=1e-6), column

        outliers = {(r["seed"], r["signal"]): r for r in rows("select * from fct_run_outliers")}
        flagged = outliers[(2, "diverged")]
        assert flagged["fires"] and flagged["is_outlier"] and flagged["first_step"] == 1
        assert flagged["score"] == 1
        assert flagged["reason"].startswith(f"diverged at step 1: {reason}")
        assert not outliers[(0, "diverged")]["fires"] and not outliers[(1, "diverged")]["fires"]
        assert outliers[(0, "diverged")]["reason"].startswith("within threshold: no diverged checkpoint")


def test_weight_stats_files_from_before_nonfinite_read_it_as_null(tmp_path, tokenizer):
    """A lake whose every weight_stats file predates the column still builds."""
    folder = tmp_path / "ck/tiny/seed0/step0"
    tiny_model(len(tokenizer), 0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        "name: tiny\nsizes: [tiny]\nseeds: [0]\nsteps: {all: [0]}\n"
        'checkpoints: {local: "ck/{size}/seed{seed}/step{step}"}\nextractors:\n  weight_stats: {}\n'
    )
    assert run_extraction(load_suite(suite_file), Lake(tmp_path / "lake"), progress=False).ok
    (path,) = (tmp_path / "lake/weight_stats").rglob("*.parquet")
    old = pq.read_table(path)
    pq.write_table(old.drop_columns(["nonfinite"]), path)
    assert "nonfinite" not in pq.read_schema(path).names

    db = tmp_path / "warehouse.duckdb"
    dbt.build(str(tmp_path / "lake"), db, select="+stg_lake__weight_stats", unit_tests=False)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "select count(*), count(nonfinite), bool_or(is_diverged), count(l1) from staging.stg_lake__weight_stats"
        ).fetchone()
    assert rows == (old.num_rows, 0, False, old.num_rows - 2)  # l1: null on the 2 aggregate rows
