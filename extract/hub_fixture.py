"""A Hugging Face hub cache holding a small PolyPythias-shaped suite, for offline runs.

``write_hub_suite`` lays out, in a hub cache folder (what ``HF_HUB_CACHE`` names,
``$HF_HOME/hub`` by default), the repos of the real suite exactly as
``huggingface_hub`` leaves them after downloading::

    models--EleutherAI--pythia-14m/
        blobs/<sha256>                       file contents, stored once
        refs/step1000                        the commit the branch points at
        refs/main                            (the last step, as on the hub)
        snapshots/<commit>/config.json  ->  ../../blobs/<sha256>
    models--EleutherAI--pythia-14m-seed1/ …

Seed 0 is ``EleutherAI/pythia-{size}``, seed k ``EleutherAI/pythia-{size}-seed{k}``,
one revision ``step{N}`` per step. As on the hub, seed 0's revisions hold only
``pytorch_model.bin`` (the original Pythia branches predate safetensors) and the
other seeds' ``model.safetensors``. The models have Pythia's own configuration for
their size (layers, hidden size, heads, rotary fraction 0.25, parallel residual,
untied embeddings, vocabulary padded to 50,304) and the real tokenizer files;
weights are random: a seeded initialisation at step 0, drifting a little with
every later step, stored in float16 as Pythia's are. The point is the path, the
shapes and the cost, not what the models know.

    python -m polypythias.extract.hub_fixture OUT_DIR --tokenizer tokenizer.json \\
        [--sizes 14m,70m] [--seeds 0,1,2] [--steps 0,1000]

then ``HF_HUB_CACHE=OUT_DIR HF_HUB_OFFLINE=1 polypythias extract --suite polypythias …``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

#: Pythia's architecture per size (the hub's config.json of EleutherAI/pythia-{size}).
PYTHIA_SHAPES = {
    "14m": {"hidden_size": 128, "num_hidden_layers": 6, "num_attention_heads": 4, "intermediate_size": 512},
    "31m": {"hidden_size": 256, "num_hidden_layers": 6, "num_attention_heads": 8, "intermediate_size": 1024},
    "70m": {"hidden_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8, "intermediate_size": 2048},
    "160m": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "410m": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}
#: What every Pythia config shares.
PYTHIA_COMMON = {
    "architectures": ["GPTNeoXForCausalLM"],
    "model_type": "gpt_neox",
    "vocab_size": 50304,  # the tokenizer's 50,277 ids, padded to a multiple of 128
    "max_position_embeddings": 2048,
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    "use_parallel_residual": True,
    "tie_word_embeddings": False,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "initializer_range": 0.02,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "use_cache": True,
    "torch_dtype": "float16",
}
#: The tokenizer files of EleutherAI/pythia-* besides tokenizer.json.
TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "bos_token": "<|endoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "clean_up_tokenization_spaces": True,
    "model_max_length": 2048,
    "tokenizer_class": "GPTNeoXTokenizer",
}
SPECIAL_TOKENS_MAP = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}


def repo_id(size: str, seed: int) -> str:
    return f"EleutherAI/pythia-{size}" if seed == 0 else f"EleutherAI/pythia-{size}-seed{seed}"


def weights_file(seed: int) -> str:
    """Seed 0's revisions hold only pickle weights, the other seeds' safetensors."""
    return "pytorch_model.bin" if seed == 0 else "model.safetensors"


def hub_config(size: str) -> dict:
    """The config.json of EleutherAI/pythia-{size}, in the hub's own (legacy) keys."""
    if size not in PYTHIA_SHAPES:
        raise ValueError(f"unknown Pythia size {size!r}; known: {', '.join(PYTHIA_SHAPES)}")
    return {**PYTHIA_COMMON, **PYTHIA_SHAPES[size]}


def pythia_config(size: str):
    """The transformers config of a Pythia size, as loading its config.json gives it."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig.from_dict(hub_config(size))


def write_hub_suite(
    cache: Path,
    tokenizer_file: Path,
    sizes: tuple[str, ...] = ("14m", "70m"),
    seeds: tuple[int, ...] = (0, 1, 2),
    steps: tuple[int, ...] = (0, 1000),
) -> list[Path]:
    """Write the repos into the hub cache folder `cache`; returns the weight files."""
    import torch
    from safetensors.torch import save_file
    from transformers import GPTNeoXForCausalLM

    tokenizer_json = Path(tokenizer_file).read_bytes()
    written = []
    for size in sizes:
        config = pythia_config(size)
        for seed in seeds:
            repo = _Repo(cache, repo_id(size, seed))
            torch.manual_seed(hash_seed(size, seed))
            model = GPTNeoXForCausalLM(config)
            state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
            del model
            generator = torch.Generator().manual_seed(hash_seed(size, seed, "drift"))
            previous = 0
            for step in sorted(steps):
                if step > previous:
                    # Drift as training would: more the further the step.
                    scale = 1e-3 * (step - previous) ** 0.5
                    for tensor in state.values():
                        if tensor.is_floating_point():
                            tensor.add_(torch.randn(tensor.shape, generator=generator) * scale)
                previous = step
                half = {name: tensor.to(torch.float16).contiguous() for name, tensor in state.items()}
                weights = repo.folder / "incoming.partial"
                if seed == 0:
                    torch.save(half, weights)
                else:
                    save_file(half, weights, metadata={"format": "pt"})
                files = {
                    "config.json": _json_bytes(hub_config(size)),
                    "tokenizer.json": tokenizer_json,
                    "tokenizer_config.json": _json_bytes(TOKENIZER_CONFIG),
                    "special_tokens_map.json": _json_bytes(SPECIAL_TOKENS_MAP),
                }
                written.append(repo.add_revision(f"step{step}", files, {weights_file(seed): weights}))
            repo.point("main", f"step{max(steps)}")  # as on the hub: main is the last checkpoint
    return written


def hash_seed(*parts: object) -> int:
    """A stable seed from the parts (Python's hash() differs between processes)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


class _Repo:
    """One model repo of a hub cache: blobs by content hash, refs, snapshots of symlinks."""

    def __init__(self, cache: Path, repo: str) -> None:
        self.folder = Path(cache) / ("models--" + repo.replace("/", "--"))
        for sub in ("blobs", "refs", "snapshots"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.repo = repo

    def add_revision(self, revision: str, files: dict[str, bytes], moved: dict[str, Path]) -> Path:
        """A commit holding `files` (contents) and `moved` (files moved into blobs);
        the branch `revision` points at it. Returns the last moved file's snapshot path."""
        commit = hashlib.sha1(f"{self.repo}@{revision}".encode()).hexdigest()
        snapshot = self.folder / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        path = snapshot
        for name, content in files.items():
            blob = self.folder / "blobs" / hashlib.sha256(content).hexdigest()
            if not blob.exists():
                blob.write_bytes(content)
            self._link(snapshot / name, blob)
        for name, source in moved.items():
            digest = hashlib.sha256()
            with source.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(chunk)
            blob = self.folder / "blobs" / digest.hexdigest()
            os.replace(source, blob)
            path = snapshot / name
            self._link(path, blob)
        (self.folder / "refs" / revision).write_text(commit)
        return path

    def point(self, ref: str, revision: str) -> None:
        (self.folder / "refs" / ref).write_text((self.folder / "refs" / revision).read_text())

    @staticmethod
    def _link(link: Path, blob: Path) -> None:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the hub cache folder to write (HF_HUB_CACHE)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="the Pythia tokenizer.json")
    parser.add_argument("--sizes", default="14m,70m")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", default="0,1000")
    args = parser.parse_args()
    files = write_hub_suite(
        args.out,
        args.tokenizer,
        tuple(args.sizes.split(",")),
        tuple(int(s) for s in args.seeds.split(",")),
        tuple(int(s) for s in args.steps.split(",")),
    )
    print(f"{len(files)} checkpoints written to {args.out}")


if __name__ == "__main__":
    main()
