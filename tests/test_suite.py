"""Suite files: presets, validation errors that name the file and the field."""

from pathlib import Path

import pytest

from polypythias.extract.suite import CheckpointId, SuiteError, load_suite

MINIMAL = """
name: s
sizes: [1m]
seeds: [0, 1]
steps: {all: [0, 2, "4:12:4"]}
checkpoints: {local: "ck/{size}/seed{seed}/step{step}"}
extractors:
  weight_stats: {}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_polypythias_preset_has_the_published_grid():
    suite = load_suite("polypythias")
    assert suite.sizes == ["14m", "31m", "70m", "160m", "410m"]
    assert suite.seeds == list(range(10))
    all_steps = suite.steps["all"]
    assert len(all_steps) == 154
    assert all_steps[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert all_steps[-1] == 143000
    grid = suite.steps["eval_grid"]
    assert len(grid) == 27 and set(grid) <= set(all_steps)
    assert grid[11:14] == [1000, 3000, 13000]
    assert suite.source_of(CheckpointId("polypythias", "70m", 0, 3000)) == "EleutherAI/pythia-70m@step3000"
    assert suite.source_of(CheckpointId("polypythias", "410m", 7, 512)) == "EleutherAI/pythia-410m-seed7@step512"
    assert len(suite.checkpoints_for("weight_stats")) == 5 * 10 * 154


def test_ranges_expand_and_local_paths_resolve_against_the_file(tmp_path):
    suite = load_suite(_write(tmp_path, MINIMAL))
    assert suite.steps["all"] == [0, 2, 4, 8, 12]
    assert suite.source_of(CheckpointId("s", "1m", 1, 8)) == str(tmp_path / "ck/1m/seed1/step8")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("sizes: [1m]", "sizes: [../1m]"), "sizes"),
        (("seeds: [0, 1]", "seeds: [0, 0]"), "seeds: duplicate"),
        (("weight_stats: {}", "weight_stats: {steps: eval}"), "unknown step set 'eval'"),
        (("weight_stats: {}", "weights: {}"), "unknown extractor 'weights'"),
        (("weight_stats: {}", "weight_stats: {top_k: 3}"), "extractors.weight_stats: top_k"),
        (("{local:", "{repo: x, local:"), "exactly one"),
        (("seed{seed}", "seed{sed}"), "unknown placeholder"),
        (('"4:12:4"', '"12:4:4"'), "empty"),
        (("name: s", "name: s\ncolour: red"), "colour"),
    ],
)
def test_a_wrong_field_names_the_file_and_the_field(tmp_path, change, message):
    path = _write(tmp_path, MINIMAL.replace(*change))
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_unreadable_or_missing_files_are_clear(tmp_path):
    with pytest.raises(SuiteError, match="not valid YAML"):
        load_suite(_write(tmp_path, "name: [unclosed"))
    with pytest.raises(SuiteError, match="no such suite file .*presets: .*polypythias"):
        load_suite(tmp_path / "nope.yaml")


def test_micro_preset_describes_what_micro_train_writes_by_default(tmp_path, monkeypatch):
    from polypythias.extract.micro.train import TrainConfig, suite_document

    monkeypatch.chdir(tmp_path)
    preset = load_suite("micro")
    trained = tmp_path / "micro" / "suite.yaml"
    trained.parent.mkdir()
    import yaml

    trained.write_text(yaml.safe_dump(suite_document(TrainConfig())))
    written = load_suite(trained)
    assert (preset.sizes, preset.seeds, preset.steps) == (written.sizes, written.seeds, written.steps)
    assert preset.extractors.keys() == written.extractors.keys()
    checkpoint = CheckpointId("micro", "1m", 4, 96)
    assert preset.source_of(checkpoint) == written.source_of(checkpoint)
    assert preset.resolve_path("micro/eval/documents.jsonl") == written.resolve_path("eval/documents.jsonl")
    assert preset.resolve_path(preset.checkpoints.tokenizer) == written.resolve_path(written.checkpoints.tokenizer)
    path_options = {"documents", "include_path", "train", "test"}

    def in_micro(options):  # the written suite's paths, seen from the preset's folder
        if isinstance(options, dict):
            return {key: "micro/" + value if key in path_options else in_micro(value) for key, value in options.items()}
        return options

    assert preset.extractors == in_micro(written.extractors)
    assert set(preset.extractors["probes"]["tasks"]) == {"pos", "antecedent"}
