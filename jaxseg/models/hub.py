"""Weights from the Hugging Face hub: ``hf-hub:ORG/NAME`` -> a local file, downloaded into
huggingface_hub's cache when online and read from that cache offline (``HF_HUB_OFFLINE=1``)."""

from __future__ import annotations

import os
from pathlib import Path

from jaxseg.errors import UserError

HUB_PREFIX = "hf-hub:"
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


class WeightsNotFound(UserError):
    """The weights file does not exist, or a hub id is neither cached nor downloadable."""


def _default_hub_cache() -> str:
    """Where huggingface_hub keeps its cache when nothing names one (it follows XDG_CACHE_HOME)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _hub_cache_dir() -> str | None:
    """``HF_HUB_CACHE`` (or ``$HF_HOME/hub``) as set now, not when huggingface_hub was imported."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # huggingface_hub's default.


def _hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_file(repo_id: str, *, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """The local path of ``repo_id``'s weights (``model.safetensors``, else ``pytorch_model.bin``),
    downloaded into the Hugging Face cache if needed; offline, read only from that cache."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise UserError(
            f"loading 'hf-hub:{repo_id}' needs huggingface_hub: pip install 'jaxseg[hub]' "
            "(or pip install huggingface_hub), or download the weights file and pass its path"
        ) from None
    offline = _hub_offline()
    cache_dir = cache_dir or _hub_cache_dir()
    for filename in HUB_FILES:
        try:
            path = hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=offline
            )
        except (EntryNotFoundError, LocalEntryNotFoundError):
            continue
        except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as e:
            raise UserError(f"cannot load 'hf-hub:{repo_id}': {type(e).__name__}: {e}") from e
        return Path(path)
    where = cache_dir or _default_hub_cache()
    how = (
        f"with network access, run: hf download {repo_id} model.safetensors"
        + (f" --cache-dir {cache_dir}" if cache_dir else "")
        + ", then retry (offline: HF_HUB_OFFLINE=1)"
    )
    state = "offline (HF_HUB_OFFLINE=1) and " if offline else ""
    raise WeightsNotFound(
        f"cannot load 'hf-hub:{repo_id}': {state}neither of {list(HUB_FILES)} is in {where} "
        f"or could be downloaded; {how}"
    )
