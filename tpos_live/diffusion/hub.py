"""The Hugging Face hub: files from the local cache first, downloaded only when missing and online."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import diffusers
import huggingface_hub
import transformers
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from tpos_live.errors import UserError, first_line

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_cache() -> Path:
    # huggingface_hub reads these once at import; reading them now honours changes made since.
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(huggingface_hub.constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        return bool(huggingface_hub.constants.HF_HUB_OFFLINE)
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def missing_files(folder: Path, patterns: tuple[str, ...]) -> list[str]:
    return [pattern for pattern in patterns if not any(folder.glob(pattern))]


def hub_snapshot(repo_id: str, patterns: tuple[str, ...], what: str, hint: str, progress: bool) -> Path:
    """The local snapshot of the files ``patterns`` of ``repo_id``: from the cache, else downloaded."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UserError(
            f"{what} '{repo_id}' is neither a local path nor a valid hub id ({first_line(error)}): "
            "check the name"
        ) from error
    cache = hub_cache()
    allow = list(patterns)
    with contextlib.suppress(LocalEntryNotFoundError):
        snapshot = huggingface_hub.snapshot_download(
            repo_id, cache_dir=cache, allow_patterns=allow, local_files_only=True
        )
        if not missing_files(Path(snapshot), patterns):
            return Path(snapshot)

    def unavailable(reason: str) -> UserError:
        return UserError(
            f"{what} '{repo_id}' is not in the Hugging Face cache ({cache}) and cannot be downloaded "
            f"({reason}): run `hf download {repo_id}` on a connected machine and copy the cache, or {hint}"
        )

    if hub_offline():
        raise unavailable("offline: HF_HUB_OFFLINE is set")
    try:
        folder = Path(huggingface_hub.snapshot_download(repo_id, cache_dir=cache, allow_patterns=allow))
    except (GatedRepoError, RepositoryNotFoundError) as error:
        raise UserError(
            f"{what} '{repo_id}' is not on the Hugging Face hub, or is private or gated "
            f"({first_line(error)}): check the name, or run `hf auth login` if you have access"
        ) from error
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise unavailable(first_line(error)) from error
    missing = missing_files(folder, patterns)
    if missing:
        raise UserError(
            f"{what} '{repo_id}' lacks {', '.join(missing)} (we load only safetensors weights in the "
            f"diffusers layout): {hint}"
        )
    return folder


@contextlib.contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """Show or hide the download / loading bars of huggingface_hub, transformers and diffusers."""
    if show:
        yield
        return
    transformers_on = transformers.utils.logging.is_progress_bar_enabled()
    diffusers_on = diffusers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()
    try:
        with huggingface_hub.utils.disable_progress_bars():
            yield
    finally:
        if transformers_on:
            transformers.utils.logging.enable_progress_bar()
        if diffusers_on:
            diffusers.utils.logging.enable_progress_bar()
