# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Where `--source` is: a local folder, else a Hub id (cache or download), with messages that name the problem.

A missing local path is reported as such (not as an invalid repo id). A Hub id is looked up once with a short
timeout (`HF_HUB_ETAG_TIMEOUT`, no retries) before `snapshot_download`, so an unreachable Hub fails in seconds; with
`HF_HUB_OFFLINE=1` only the local Hub cache is used.
"""

from __future__ import annotations

from pathlib import Path

from ..hub.ids import is_hub_id
from ..hub.refusals import LlavaVRRefusal, log, one_line

DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "README.md"]


def resolve_source(source: str) -> tuple[Path, str | None]:
    """(local folder, the source's Hub id or None): an existing folder, else a Hub id from the cache or the Hub."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise LlavaVRRefusal(f"--source {source} is a file; expected a checkpoint folder")
        return path.resolve(), hub_id_of_local_path(path.resolve())
    if not is_hub_id(source):
        raise LlavaVRRefusal(f"--source {source}: no such folder ({path.absolute()} does not exist)")
    return fetch_from_hub(source), source


def hub_id_of_local_path(path: Path) -> str | None:
    """`.../models--OWNER--NAME/snapshots/<sha>` (a Hub cache snapshot) -> `OWNER/NAME`; else None."""
    for part in path.parts:
        if part.startswith("models--") and part.count("--") >= 2:
            owner, name = part[len("models--") :].split("--", 1)
            return f"{owner}/{name}"
    return None


def cached_snapshot(repo_id: str) -> Path | None:
    """The repo's snapshot in the local Hub cache, or None (never touches the network)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=DOWNLOAD_PATTERNS, local_files_only=True))
    except Exception:
        return None


def hub_problem(repo_id: str) -> tuple[str, str] | None:
    """One quick look-up of `repo_id` on the Hub: None when it is there, else (kind, message) with kind
    `unreachable` (the Hub did not answer) or `refused` (no such repo, gated, an HTTP error)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except GatedRepoError:
        return "refused", (
            f"{repo_id} is gated on the Hub: accept its terms on {constants.ENDPOINT}/{repo_id} and "
            "log in (`hf auth login`)"
        )
    except RepositoryNotFoundError:
        return "refused", f"there is no Hub model {repo_id} either (a private one needs `hf auth login`)"
    except HfHubHTTPError as error:
        return "refused", f"the Hub refused it ({one_line(error)})"
    except Exception as error:  # connection refused, DNS, timeout, proxy
        return "unreachable", (
            f"the Hub ({constants.ENDPOINT}) cannot be reached ({type(error).__name__}: {one_line(error)}); check the "
            "network / proxy / HF_ENDPOINT, or download it where there is a network (`hf download "
            f"{repo_id} --local-dir DIR`) and pass --source DIR"
        )
    return None


def fetch_from_hub(repo_id: str) -> Path:
    """The local snapshot of Hub model `repo_id`: from the cache when offline or unreachable, else downloaded
    (huggingface_hub's progress bars)."""
    from huggingface_hub import constants, snapshot_download

    missing = f"--source {repo_id}: no such local folder"
    if constants.HF_HUB_OFFLINE:
        cached = cached_snapshot(repo_id)
        if cached is None:
            raise LlavaVRRefusal(
                f"{missing}, and HF_HUB_OFFLINE is set while {repo_id} is not in the Hub cache "
                f"({constants.HF_HUB_CACHE}): unset HF_HUB_OFFLINE to download it, or pass a local checkpoint folder"
            )
        log(f"Using {repo_id} from the Hub cache (HF_HUB_OFFLINE is set): {cached}")
        return cached
    problem = hub_problem(repo_id)
    if problem is not None:
        kind, message = problem
        cached = cached_snapshot(repo_id) if kind == "unreachable" else None
        if cached is None:
            raise LlavaVRRefusal(f"{missing}, and {message}")
        log(f"The Hub cannot be reached; using {repo_id} from the Hub cache: {cached}")
        return cached
    log(f"Downloading {repo_id} from the Hub ...")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=DOWNLOAD_PATTERNS))
    except Exception as error:
        raise LlavaVRRefusal(f"--source {repo_id}: the download failed ({one_line(error)})") from None
