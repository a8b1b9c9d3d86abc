"""The extractors against direct, independent computations."""

import numpy as np
import pytest
import torch

from conftest import CHECKPOINT, one_checkpoint_suite, tiny_model, write_documents
from polypythias.extract.extractors import get_extractor
from polypythias.extract.extractors.weight_stats import matrix_stats, singular_values, split_qkv


def _run(tmp_path, name, options, model, tokenizer):
    suite = one_checkpoint_suite(tmp_path, {name: options})
    extractor = get_extractor(name)(suite.extractor_options(name), suite)
    (table,) = extractor.run(model, tokenizer, CHECKPOINT, torch.device("cpu")).values()
    return table


def test_token_stats_match_a_direct_unbatched_forward_pass(tmp_path, tokenizer):
    texts = write_documents(tmp_path / "docs.jsonl", n=9)
    model = tiny_model(len(tokenizer), seed=5)
    table = _run(tmp_path, "token_stats", {"documents": "docs.jsonl", "top_k": 4, "batch_size": 4}, model, tokenizer)
    rows = {(r["doc_id"], r["position"]): r for r in table.to_pylist()}
    expected_rows = 0
    for doc_id, text in enumerate(texts):
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = model(torch.tensor([ids])).logits.log_softmax(-1)[0].double().numpy()
        for position in range(len(ids) - 1):
            expected_rows += 1
            lp = logprobs[position]
            row = rows[(doc_id, position)]
            target = ids[position + 1]
            assert row["target_id"] == target
            assert row["target_logprob"] == pytest.approx(lp[target], abs=1e-5)
            assert row["entropy"] == pytest.approx(-(np.exp(lp) * lp).sum(), abs=1e-5)
            assert row["target_rank"] == 1 + int((lp > lp[target]).sum())
            order = np.argsort(-lp)[:4]
            assert row["topk_ids"] == order.tolist()
            np.testing.assert_allclose(row["topk_logprobs"], lp[order], atol=1e-5)
    assert table.num_rows == expected_rows


def test_token_stats_truncate_to_max_length(tmp_path, tokenizer):
    write_documents(tmp_path / "docs.jsonl", n=5)
    model = tiny_model(len(tokenizer), seed=1)
    table = _run(tmp_path, "token_stats", {"documents": "docs.jsonl", "max_length": 6}, model, tokenizer)
    assert max(table["position"].to_pylist()) == 4  # BOS + 5 tokens → targets at positions 0…4


def test_token_stats_reject_unreadable_documents(tmp_path, tokenizer):
    (tmp_path / "docs.jsonl").write_text('{"text": "w1 w2"}\nnot json\n')
    with pytest.raises(ValueError, match=r"docs.jsonl:2: not JSON"):
        _run(tmp_path, "token_stats", {"documents": "docs.jsonl"}, None, tokenizer)


@pytest.mark.parametrize("shape", [(6, 6), (5, 8), (9, 4)])
def test_matrix_stats_match_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    w = rng.normal(size=shape).astype(np.float32)
    spectrum = singular_values(torch.from_numpy(w))
    stats = matrix_stats(torch.from_numpy(w))
    w64 = w.astype(np.float64)
    sv = np.linalg.svd(w64, compute_uv=False)
    np.testing.assert_allclose(spectrum.numpy(), sv, rtol=0, atol=2e-5 * sv.max())
    assert stats["l1"] == pytest.approx(np.abs(w64).sum(), rel=1e-9)
    assert stats["l2"] == pytest.approx(np.linalg.norm(w64, "fro"), rel=1e-9)
    assert stats["spectral"] == pytest.approx(sv.max(), rel=1e-5)
    assert stats["sv_mean"] == pytest.approx(sv.mean(), rel=1e-5)
    assert stats["sv_var"] == pytest.approx(sv.var(), rel=1e-4)
    assert stats["sv_var"] >= 0
    assert stats["code_sparsity"] == pytest.approx(np.abs(w64).sum() / np.linalg.norm(w64), rel=1e-9)
    assert stats["mean"] == pytest.approx(w64.mean(), abs=1e-12)
    assert stats["var"] == pytest.approx(w64.var(), rel=1e-9)
    if shape[0] == shape[1]:
        assert stats["trace"] == pytest.approx(np.trace(w64), rel=1e-9)
        assert stats["computational_sparsity"] == pytest.approx(np.trace(w64) / sv.max(), rel=1e-5)
    else:
        assert stats["trace"] is None and stats["computational_sparsity"] is None


def test_qkv_split_matches_the_models_own_query_key_value(tokenizer):
    model = tiny_model(len(tokenizer), seed=2)
    attention = model.gpt_neox.layers[0].attention
    heads, head_size = model.config.num_attention_heads, attention.head_size
    x = torch.randn(3, model.config.hidden_size)
    with torch.no_grad():
        fused = attention.query_key_value(x).view(3, heads, 3 * head_size)
        q, k, v = fused.chunk(3, dim=-1)
        parts = split_qkv(attention.query_key_value.weight, heads)
        biases = attention.query_key_value.bias.view(heads, 3, head_size)
        for i, (name, expected) in enumerate(zip("qkv", (q, k, v), strict=True)):
            ours = x @ parts[name].T + biases[:, i].reshape(-1)
            torch.testing.assert_close(ours, expected.reshape(3, -1))


def test_weight_stats_cover_every_matrix_and_all_values(tmp_path, tokenizer):
    model = tiny_model(len(tokenizer), seed=3)
    table = _run(tmp_path, "weight_stats", {}, model, tokenizer)
    kinds = table["kind"].to_pylist()
    layers = model.config.num_hidden_layers
    for kind in ("q", "k", "v", "attn_out", "ffn_in", "ffn_out"):
        assert kinds.count(kind) == layers
    assert kinds.count("embed") == kinds.count("unembed") == 1
    rows = {r["kind"]: r for r in table.to_pylist()}
    weights = np.concatenate(
        [p.detach().numpy().ravel() for n, p in model.named_parameters() if n.endswith("weight")]
    ).astype(np.float64)
    assert rows["all_weights"]["median"] == pytest.approx(np.median(weights), rel=1e-6)
    assert rows["all_weights"]["var"] == pytest.approx(weights.var(), rel=1e-9)
    assert rows["all_weights"]["n_rows"] == weights.size
    hashes = [h for h in table["weight_hash"].to_pylist() if h]
    assert len(set(hashes)) == len(hashes)


@pytest.mark.parametrize(
    "values",
    [[0, 0, 0, 1], [0, 0, 1, 1], [1, 2, 3, 4], [5, 1, 3], [2, 2, 2, 2], [3, 1, 1, 3, 3, 1], [7.0]],
)
def test_median_matches_numpy_with_ties(values):
    from polypythias.extract.extractors.weight_stats import median

    assert median(torch.tensor(values, dtype=torch.float32)) == pytest.approx(np.median(values))


@pytest.mark.parametrize("n", [100_001, 250_000, 333_333])
def test_median_of_large_tensors_is_exact(n):
    from polypythias.extract.extractors.weight_stats import median

    rng = np.random.default_rng(n)
    values = rng.standard_t(3, size=n).astype(np.float32)
    values[: n // 10] = 0.0  # many ties, as in freshly initialised biases
    assert median(torch.from_numpy(values)) == np.median(values.astype(np.float64))
