"""Fetch a published checkpoint from the Hugging Face Hub into the local hub cache.

``dlm-lsp pull ORG/NAME`` and the server's download prompt use the same plan: list the
repository at a revision, keep only the files the loader reads (configs, tokenizer files,
safetensors and their index, ``dlm.json``; never pickled ``.bin`` weights or ``*.py`` code),
check the free disk space, then download what the cache does not hold yet, resuming
interrupted files. The result is an ordinary hub-cache snapshot, which the ``model``
setting then finds by its id without any network access.
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dlm_lsp.model.errors import ModelError

# What checkpoint loading reads (model/checkpoint.py, model/families.py), nothing else.
ALLOWED = ["config.json", "generation_config.json", "dlm.json", "tokenizer.json",
           "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
           "vocab.json", "merges.txt", "model.safetensors.index.json", "*.safetensors"]
DISK_MARGIN = 1.05  # the cache needs a little more than the files themselves


class PullError(ModelError):
    """A download that cannot start or finish, with what to do about it."""


@dataclass
class PullFile:
    path: str
    size: int
    cached: bool


@dataclass
class PullPlan:
    repo_id: str
    revision: str
    commit: str
    files: list[PullFile]
    skipped: list[str]  # in the repository, not read by the loader

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def missing_bytes(self) -> int:
        return sum(f.size for f in self.files if not f.cached)


def allowed(path: str) -> bool:
    """Whether the loader reads `path` (top-level files only)."""
    return "/" not in path and any(fnmatch.fnmatchcase(path, pat) for pat in ALLOWED)


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def _cached(repo_id: str, commit: str, path: str) -> bool:
    folder = cache_dir() / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit
    return (folder / path).is_file()


def plan(repo_id: str, revision: str = "main") -> PullPlan:
    """What pulling `repo_id` at `revision` would fetch; PullError when the hub is out of
    reach or the repository has no loadable checkpoint."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.hf_api import RepoFile

    api = HfApi()
    try:
        commit = api.model_info(repo_id, revision=revision).sha or revision
        tree = [f for f in api.list_repo_tree(repo_id, revision=commit, recursive=True)
                if isinstance(f, RepoFile)]
    except OfflineModeIsEnabled as exc:
        raise PullError(f"HF_HUB_OFFLINE is set: cannot fetch {repo_id}. On a machine with "
                        f"network, run: dlm-lsp pull {repo_id}") from exc
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise PullError(f"{repo_id}@{revision} was not found on the hub "
                        "(a private or gated model needs `hf auth login` first)") from exc
    except Exception as exc:  # HTTP errors, refused connections, DNS: the client's own types
        raise PullError(f"the hub cannot be reached ({type(exc).__name__}): to use {repo_id}, "
                        f"run `dlm-lsp pull {repo_id}` where there is network, or copy the "
                        "checkpoint directory here and set model to its path") from exc
    files = [PullFile(f.path, f.size, _cached(repo_id, commit, f.path))
             for f in tree if allowed(f.path)]
    if not any(f.path.endswith(".safetensors") for f in files):
        raise PullError(f"{repo_id} has no safetensors weights (only safetensors are loaded; "
                        "pickled .bin weights are never read)")
    skipped = sorted(f.path for f in tree if not allowed(f.path))
    return PullPlan(repo_id, revision, commit, files, skipped)


def check_space(p: PullPlan, free: int | None = None) -> None:
    """PullError when the cache's disk cannot hold what is still to fetch."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free if free is None else free
    need = int(p.missing_bytes * DISK_MARGIN)
    if need > free:
        raise PullError(f"{p.repo_id} needs {human(need)} in {folder} but only {human(free)} is "
                        "free: free some space or set HF_HUB_CACHE to a larger disk")


def pull(p: PullPlan, progress: Callable[[int, int], None] | None = None) -> Path:
    """Download what `p` lacks into the hub cache and return the snapshot directory.

    `progress(done_bytes, total_bytes)` is called as bytes arrive (cached files count as
    done). A file is written to ``blobs/<etag>.incomplete`` first, so an interrupted pull
    (a dropped connection, Ctrl-C, a machine gone to sleep) resumes there on the next call.
    """
    check_space(p)
    done = sum(f.size for f in p.files if f.cached)
    total = p.total_bytes

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(min(done, total), total)

    advance(0)
    repo = cache_dir() / ("models--" + p.repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / p.commit
    for f in p.files:
        if not f.cached:
            _fetch(p.repo_id, p.commit, f.path, repo, snapshot, advance)
    if p.revision != p.commit:  # the id then resolves to this snapshot (refs/<revision>)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / p.revision).write_text(p.commit)
    return snapshot


def _fetch(repo_id: str, commit: str, path: str, repo: Path, snapshot: Path,
           advance: Callable[[int], None]) -> None:
    """One file into the cache's layout: ``blobs/<etag>`` and a link in the snapshot."""
    import httpx
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    meta = get_hf_file_metadata(hf_hub_url(repo_id, path, revision=commit))
    etag = (meta.etag or commit + "-" + path.replace("/", "_")).strip('"').removeprefix("W/")
    blob = repo / "blobs" / etag
    if not blob.exists():
        blob.parent.mkdir(parents=True, exist_ok=True)
        part = blob.with_name(etag + ".incomplete")
        have = part.stat().st_size if part.exists() else 0
        advance(have)
        headers = build_hf_headers()
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with httpx.stream("GET", meta.location, headers=headers, follow_redirects=True,
                              timeout=httpx.Timeout(30, read=120)) as resp:
                if have and resp.status_code == 200:  # the server ignored the range
                    advance(-have)
                    have = 0
                resp.raise_for_status()
                with open(part, "ab" if have else "wb") as out:
                    for chunk in resp.iter_bytes(1 << 20):
                        out.write(chunk)
                        advance(len(chunk))
        except httpx.HTTPError as exc:
            raise PullError(f"downloading {path} stopped ({type(exc).__name__}: {exc}); run "
                            "the same pull again to resume it") from exc
        if meta.size is not None and part.stat().st_size != meta.size:
            raise PullError(f"{path}: got {part.stat().st_size} bytes of {meta.size}; run the "
                            "same pull again to resume it")
        part.replace(blob)
    link = snapshot / path
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        try:
            link.symlink_to(Path("../..") / "blobs" / etag)
        except OSError:  # no symlinks (some Windows setups): a copy is what the hub does too
            shutil.copyfile(blob, link)
