"""Pipelines on the Hugging Face Hub: load by repo id, push a pipeline folder, through ``huggingface_hub``.

``arvis.load("org/name")`` reads a local folder when one of that spelling exists (a local folder always wins);
otherwise ``org/name`` is a Hub repo id. Loading a repo first fetches its ``pipeline.json``, then only the files
that file declares (:func:`declared_files`): the components' ``config.json`` and ``model.safetensors``, the
text tokenizer's ``tokenizer.json`` or the text encoder's JSON and safetensors files, ``recipe.json`` and
``metrics.json``. Nothing else is downloaded or read, so a pickle in a repo is never fetched, let alone loaded.
huggingface_hub's cache, revision pinning (``revision=`` a branch, tag or commit) and offline mode
(``HF_HUB_OFFLINE=1``: the cache only) apply as they do for transformers and diffusers.

A pipeline folder is a valid Hub repo as it is (its model card is ``README.md``); :func:`push_pipeline` uploads
one with ``upload_folder``.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from arvis.config import read_json
from arvis.folders import MANIFEST_FILE
from arvis.pipeline import PIPELINE_FILE, Pipeline, is_sub_folder_name
from arvis.pipeline_metadata import METRICS_FILE, RECIPE_FILE

COMPONENT_FILES = ("config.json", "model.safetensors")
DECLARED_FOLDER_FILES = {  # pipeline.json entry -> the files of its folder that loading reads
    "tokenizer": COMPONENT_FILES,
    "generator": COMPONENT_FILES,
    "text_tokenizer": ("tokenizer.json",),
    "text_encoder": ("*.json", "*.safetensors"),
}
METADATA_FILES = (RECIPE_FILE, METRICS_FILE)
# A Hub repo id: namespace/name of letters, digits, '-', '_' and '.', as huggingface_hub validates them.
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
UNUPLOADED = (f"*{MANIFEST_FILE}",)  # the records of which local files arvis wrote, at any depth: local facts


def is_repo_id(text: object) -> bool:
    """Whether ``text`` (a string, never a ``Path``) reads as a Hub repo id ``namespace/name``."""
    return isinstance(text, str) and REPO_ID.match(text) is not None and ".." not in text


def pipeline_folder(spec: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The local folder of the pipeline ``spec`` names: the folder itself when it exists, else the cached
    snapshot of the Hub repo ``spec`` at ``revision`` (downloaded first unless offline). Raises
    ``FileNotFoundError`` naming both readings when neither exists."""
    path = Path(spec)
    if path.exists():
        if revision is not None:
            raise ValueError(f"{str(spec)!r} is a local folder, which has no revisions; revision= pins the version "
                             "of a Hub repo (a local folder of the same spelling always wins over the repo id)")
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is a file, not a pipeline folder")
        return path
    if not is_repo_id(spec):
        raise FileNotFoundError(f"pipeline folder {path} does not exist")
    return download_pipeline(str(spec), revision=revision, cache_dir=cache_dir)


def local_reading_note(spec: str | Path) -> str:
    """For an error about the local folder ``spec``: when it also reads as a Hub repo id, a sentence saying that
    the local folder was read instead of the repo, else ''."""
    if not is_repo_id(spec):
        return ""
    return (f" ({str(spec)!r} was read as this local folder, which wins over the Hub repo of the same name; to load "
            "the repo, run from a directory without that folder)")


def declared_files(index: object, where: str) -> list[str]:
    """The files (patterns relative to the repo root) that loading the pipeline ``index`` (its ``pipeline.json``)
    reads; ``ValueError`` for a folder entry that is not a direct sub-folder's name."""
    if not isinstance(index, dict):
        raise ValueError(f"{where} is not an arvis pipeline index: it holds a {type(index).__name__}, not a JSON "
                         "object")
    files = [PIPELINE_FILE, *METADATA_FILES]
    for entry, names in DECLARED_FOLDER_FILES.items():
        if entry not in index:
            continue
        folder = index[entry]
        if not is_sub_folder_name(folder):
            raise ValueError(f"{where}: the {entry!r} entry names {folder!r}, which is not a sub-folder of the "
                             "pipeline")
        files += [f"{folder}/{name}" for name in names]
    return files


def download_pipeline(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """Fetches the files the repo's ``pipeline.json`` declares (from the cache when they are there) and returns
    the snapshot folder; errors name the repo (and the local reading of its name)."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    from arvis import __version__

    at = f" at revision {revision!r}" if revision is not None else ""
    options = {"revision": revision, "cache_dir": cache_dir, "library_name": "arvis", "library_version": __version__}
    try:
        index_file = hf_hub_download(repo_id, PIPELINE_FILE, **options)
        index = read_json(index_file)
        patterns = declared_files(index, f"{PIPELINE_FILE} of the Hub repo {repo_id}{at}")
        # The rest from the commit that pipeline.json came from (the cache keeps it under snapshots/<commit>/),
        # so that a push in between cannot mix two versions.
        options["revision"] = Path(index_file).parent.name
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, **options))
    except LocalEntryNotFoundError as error:
        raise FileNotFoundError(
            f"{repo_id!r} is neither a local folder (no {Path(repo_id).resolve()}) nor a Hub repo{at} in the "
            f"Hugging Face cache{f' {cache_dir}' if cache_dir else ''}, and the Hub cannot be reached "
            f"({type(error).__name__}: {str(error).splitlines()[0]}); download it once online (unset HF_HUB_OFFLINE) "
            "or pass the path of a pipeline folder") from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"the Hub repo {repo_id} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{repo_id!r} is neither a local folder (no {Path(repo_id).resolve()}) nor a Hub "
                                "repo this token can read") from None
    except EntryNotFoundError:
        raise FileNotFoundError(f"the Hub repo {repo_id}{at} holds no {PIPELINE_FILE}: it is not an arvis "
                                "pipeline") from None
    except HfHubHTTPError as error:
        raise OSError(f"could not download the Hub repo {repo_id}{at}: {error}") from None
    check_downloaded(folder, index, f"the Hub repo {repo_id}{at}")
    return folder


def check_downloaded(folder: Path, index: dict, what: str) -> None:
    """``FileNotFoundError`` if a component of the snapshot lacks its safetensors weights (a repo of pickled
    weights: arvis never downloads nor reads those)."""
    for entry in ("tokenizer", "generator"):
        weights = folder / index[entry] / "model.safetensors" if entry in index else None
        if weights is not None and not weights.is_file():
            raise FileNotFoundError(f"{what} has no {index[entry]}/model.safetensors; arvis reads weights only from "
                                    "safetensors files, never from pickles (.bin, .pt, .pkl), which can run code "
                                    "when loaded: save the pipeline with Pipeline.save_pretrained and push that")


def push_pipeline(pipeline: Pipeline, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                  token: str | None = None, commit_message: str | None = None, create_pr: bool = False) -> str:
    """Saves ``pipeline`` (with its model card, whose examples load ``repo_id``) into a temporary folder and
    uploads it to the Hub repo ``repo_id`` (created if missing, ``private`` then; on branch ``revision``, created
    if missing) in one commit; returns the commit's URL. Files already in the repo that the pipeline does not
    write are left there, except an older push's ``recipe.json`` / ``metrics.json`` (which would otherwise load as
    this pipeline's)."""
    from huggingface_hub import HfApi

    if not is_repo_id(repo_id):
        raise ValueError(f"repo_id must be 'namespace/name' (letters, digits, '-', '_', '.'), got {repo_id!r}")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="arvis-push-") as scratch:
        folder = pipeline.save_pretrained(Path(scratch) / "pipeline", repo_id=repo_id)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                                   commit_message=commit_message or "Upload arvis pipeline",
                                   ignore_patterns=list(UNUPLOADED), delete_patterns=list(METADATA_FILES))
    return str(getattr(commit, "commit_url", commit))
