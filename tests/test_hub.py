"""Pipelines by Hub repo id (from a Hugging Face cache the tests populate themselves, offline), push_to_hub with
the upload mocked at huggingface_hub's boundary, the model card, and the metadata a pipeline folder keeps."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from huggingface_hub.utils import filter_repo_objects

import arvis
from arvis.cli import main as cli_main
from arvis.folders import MANIFEST_FILE, files_under
from arvis.hub import declared_files
from arvis.pipeline import Pipeline
from arvis.pipeline_metadata import PipelineMetadata, TrainingStage, final_log
from arvis.samplers import NextTokenSettings

REPO = "arvis-test/tiny"
NAMES = [f"glyph {i}" for i in range(10)]


def cache_repo(cache: Path, repo_id: str, folder: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> None:
    """Lays ``folder`` out as huggingface_hub caches a downloaded repo: content-addressed blobs, a snapshot of
    links per commit, and refs naming the commit."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    for relative in sorted(files_under(folder)):
        data = (folder / relative).read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = storage / "snapshots" / commit / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, with huggingface_hub in offline mode (nothing leaves the machine)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # no local folder named like the repo
    return cache


@pytest.fixture
def named_pipeline(tiny_pipeline) -> Pipeline:
    return tiny_pipeline.with_metadata(
        class_names=NAMES, metrics={"glyph_metrics": {"fd_glyphs": 0.41, "glyph_accuracy": 0.9}},
        training=(TrainingStage("arvis train generator", {"generator": "raster-tiny", "optim": {"lr": 1e-3}}),))


def commit_id(index: int) -> str:
    return f"{index:040x}"


def test_a_repo_id_loads_from_the_cache_at_the_pinned_revision(named_pipeline, offline_cache, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    named_pipeline.save_pretrained(first, repo_id=REPO)
    named_pipeline.with_metadata(metrics=None).save_pretrained(second, repo_id=REPO)
    reference = Pipeline.from_pretrained(second)
    reference.sampling = NextTokenSettings(cfg_scale=4.0)
    reference.save_pretrained(second)
    cache_repo(offline_cache, REPO, first, commit_id(1), refs=("v1",))
    cache_repo(offline_cache, REPO, second, commit_id(2), refs=("main",))

    latest = arvis.load(REPO)
    assert latest.sampling.cfg_scale == 4.0 and latest.metadata.metrics is None
    for revision in ("v1", commit_id(1)):
        pinned = arvis.load(REPO, revision=revision)
        assert pinned.sampling.cfg_scale == 2.0 and pinned.metadata == named_pipeline.metadata
    expected = arvis.generate(named_pipeline, class_labels=[3], num_samples=2, seed=7, output_type="pt")
    assert torch.equal(arvis.generate(arvis.load(REPO, revision="v1"), class_labels=[3], num_samples=2, seed=7,
                                      output_type="pt"), expected)
    with pytest.raises(FileNotFoundError, match="has no revision|neither a local folder"):
        arvis.load(REPO, revision="v9")


def test_a_local_folder_wins_over_the_repo_of_the_same_spelling(named_pipeline, tiny_pipeline, offline_cache,
                                                                tmp_path):
    named_pipeline.save_pretrained(tmp_path / "hub-copy")
    cache_repo(offline_cache, REPO, tmp_path / "hub-copy", commit_id(1))
    tiny_pipeline.save_pretrained(tmp_path / REPO)  # ./arvis-test/tiny, relative to the working directory
    assert arvis.load(REPO).metadata.class_names is None  # the local one: no class names
    with pytest.raises(ValueError, match="local folder, which has no revisions"):
        arvis.load(REPO, revision="main")
    shutil.rmtree(tmp_path / REPO)
    (tmp_path / REPO).mkdir()  # a local folder that is not a pipeline: the error names both readings
    with pytest.raises(FileNotFoundError, match=r"not an arvis pipeline.*read as this local folder.*Hub repo"):
        arvis.load(REPO)


def test_an_uncached_repo_fails_offline_naming_both_readings(offline_cache):
    with pytest.raises(FileNotFoundError, match=r"'arvis-test/missing' is neither a local folder .* nor a Hub repo"):
        arvis.load("arvis-test/missing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        arvis.load("not/a/repo/id")  # three parts: only a path


class RunsCode:
    """Unpickling this writes a marker file: evidence that a pickle was loaded."""

    marker = ""

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pickle was loaded"))


def test_pickles_in_a_repo_are_never_downloaded_nor_read(named_pipeline, offline_cache, tmp_path):
    folder = tmp_path / "pickled"
    named_pipeline.save_pretrained(folder)
    (folder / "generator" / "model.safetensors").unlink()
    marker = tmp_path / "marker.txt"
    RunsCode.marker = str(marker)
    (folder / "generator" / "pytorch_model.bin").write_bytes(pickle.dumps(RunsCode()))
    (folder / "tokenizer" / "model.pkl").write_bytes(pickle.dumps(RunsCode()))
    (folder / "loader.py").write_text(f"open({str(marker)!r}, 'w').write('code ran')\n")
    cache_repo(offline_cache, REPO, folder, commit_id(3))
    with pytest.raises(FileNotFoundError, match=r"no generator/model.safetensors.*never from pickles"):
        arvis.load(REPO)
    assert not marker.exists()
    # Online, only the files pipeline.json declares would be fetched: never a pickle or code.
    repo_files = sorted(files_under(folder))
    index = json.loads((folder / "pipeline.json").read_text())
    fetched = list(filter_repo_objects(repo_files, allow_patterns=declared_files(index, "pipeline.json")))
    assert fetched and all(name.endswith((".json", ".safetensors")) for name in fetched)
    assert "generator/pytorch_model.bin" in repo_files and "generator/pytorch_model.bin" not in fetched
    assert "README.md" not in fetched and "loader.py" not in fetched


def test_the_download_asks_only_for_the_declared_files(named_pipeline, tmp_path, monkeypatch):
    folder = named_pipeline.save_pretrained(tmp_path / "snapshots" / commit_id(9))  # where the cache keeps it
    calls = []

    def fake_hf_hub_download(repo_id, filename, **options):
        calls.append(("file", repo_id, filename, options.get("revision")))
        return str(folder / filename)

    def fake_snapshot_download(repo_id, **options):
        calls.append(("snapshot", repo_id, tuple(options["allow_patterns"]), options.get("revision")))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.chdir(tmp_path)
    loaded = arvis.load("org/name", revision="abc")
    assert loaded.metadata == named_pipeline.metadata
    assert calls[0] == ("file", "org/name", "pipeline.json", "abc")
    kind, _, patterns, revision = calls[1]
    assert kind == "snapshot" and revision == commit_id(9)  # the commit pipeline.json came from
    assert set(patterns) == {"pipeline.json", "recipe.json", "metrics.json", "tokenizer/config.json",
                             "tokenizer/model.safetensors", "generator/config.json", "generator/model.safetensors"}


def test_push_to_hub_uploads_the_folder_with_its_card(named_pipeline, offline_cache, tmp_path, monkeypatch):
    uploads = []

    def create_repo(self, repo_id, **options):
        uploads.append(("create", repo_id, options.get("private")))

    def upload_folder(self, *, repo_id, folder_path, **options):
        patterns = options.get("ignore_patterns")
        files = sorted(files_under(Path(folder_path)))
        kept = list(filter_repo_objects(files, ignore_patterns=patterns))
        copy = tmp_path / "uploaded"
        for name in kept:
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(folder_path) / name, copy / name)
        uploads.append(("upload", repo_id, kept, options.get("commit_message")))
        assert set(options["delete_patterns"]) == {"recipe.json", "metrics.json"}  # an older push's metadata goes
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{commit_id(5)}",
                                          commit_message="m", commit_description="", oid=commit_id(5))

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = named_pipeline.push_to_hub(REPO, private=True)
    assert url.endswith(commit_id(5))
    assert uploads[0] == ("create", REPO, True)
    _, repo_id, files, message = uploads[1]
    assert repo_id == REPO and message == "Upload arvis pipeline"
    assert not [name for name in files if name.endswith(MANIFEST_FILE)]
    assert {"README.md", "pipeline.json", "recipe.json", "metrics.json", "generator/model.safetensors"} <= set(files)
    card = (tmp_path / "uploaded" / "README.md").read_text()
    assert f"arvis.load('{REPO}')" in card and f"arvis demo {REPO}" in card
    cache_repo(offline_cache, REPO, tmp_path / "uploaded", commit_id(5))  # what a download would give back
    loaded = arvis.load(REPO)
    assert loaded.metadata == named_pipeline.metadata
    assert torch.equal(arvis.generate(loaded, [2], num_samples=2, seed=1, output_type="pt"),
                       arvis.generate(named_pipeline, [2], num_samples=2, seed=1, output_type="pt"))
    with pytest.raises(ValueError, match="namespace/name"):
        named_pipeline.push_to_hub("no-namespace")


def test_the_cli_generates_from_a_repo_id(named_pipeline, offline_cache, tmp_path, capsys):
    named_pipeline.save_pretrained(tmp_path / "p")
    cache_repo(offline_cache, REPO, tmp_path / "p", commit_id(1), refs=("main", "v1"))
    assert cli_main(["generate", REPO, "--revision", "v1", "--labels", "0", "--num-samples", "2",
                     "--out", str(tmp_path / "grid.png")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 2
    assert cli_main(["generate", "arvis-test/absent", "--labels", "0"]) == 2
    assert "neither a local folder" in capsys.readouterr().err


def test_the_model_card_describes_the_pipeline(named_pipeline, tmp_path):
    folder = named_pipeline.save_pretrained(tmp_path / "p", repo_id=REPO)
    card = (folder / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: arvis" in front and "image-generation" in front
    assert "`VQTokenizer`" in body and "`RasterGenerator`" in body  # components
    assert "`raster-tiny` (generator, `arvis train generator`)" in body and "`vq-tiny`" in body  # presets
    assert "| `cfg_scale` | 2.0 |" in body and "| `top_k` | 8 |" in body  # the stored sampling defaults
    assert "| 3 | glyph 3 |" in body  # class names
    assert "generator: raster-tiny" in body and "lr: 0.001" in body  # the recipe, as YAML
    assert "| `glyph_metrics.fd_glyphs` | 0.41 |" in body  # metrics
    assert "- `generator/model.safetensors`" in body and "- `pipeline.json`" in body and MANIFEST_FILE not in body
    bare = Pipeline(named_pipeline.tokenizer, named_pipeline.generator).save_pretrained(tmp_path / "bare")
    text = (bare / "README.md").read_text()
    assert "names not recorded" in text and "Training recipe\n\nNot recorded." in text and "None recorded" in text


def test_metadata_round_trips_and_bad_metadata_is_refused(named_pipeline, tiny_pipeline, tmp_path):
    folder = named_pipeline.save_pretrained(tmp_path / "p")
    assert json.loads((folder / "pipeline.json").read_text())["class_names"] == NAMES
    assert Pipeline.from_pretrained(folder).metadata == named_pipeline.metadata
    with pytest.raises(ValueError, match="got 3 class names for a generator of 10 classes"):
        tiny_pipeline.with_metadata(class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="repeats"):
        PipelineMetadata(class_names=["a", "a"])
    with pytest.raises(ValueError, match="JSON values"):
        PipelineMetadata(metrics={"fid": float("nan")})
    with pytest.raises(ValueError, match="JSON object"):
        PipelineMetadata(metrics=[1, 2])
    diverged = PipelineMetadata(metrics=final_log([{"step": 3, "loss": float("nan")}]))  # still exports
    assert diverged.metrics == {"final_training_log": {"step": 3, "loss": "nan"}}
    (folder / "recipe.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="recipe.json must be a list"):
        Pipeline.from_pretrained(folder)
    folder = named_pipeline.save_pretrained(tmp_path / "p")
    index = json.loads((folder / "pipeline.json").read_text())
    index["class_names"] = ["only one"]
    (folder / "pipeline.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="1 class names for a generator of 10"):
        Pipeline.from_pretrained(folder)
