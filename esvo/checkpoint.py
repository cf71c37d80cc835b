"""Checkpoints: ``checkpoints/gen_NNNNNN/`` = ``state.npz`` (arrays, no pickle) + ``meta.json``.

A checkpoint is written to a temporary directory next to its final place, every file fsynced,
then renamed with ``os.replace`` (atomic on POSIX): a crash at any instant leaves either the new
checkpoint complete or no trace of it, and the previous ones intact. ``meta.json`` carries the
sha256 of ``state.npz``, so a truncated or corrupted checkpoint is detected on load
(acme ``Saveable`` style: explicit arrays plus JSON metadata, design.md §6).

``generation`` of a checkpoint is the number of completed generations (the next one to run).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
STATE_FILE = "state.npz"
META_FILE = "meta.json"
_NAME = re.compile(r"^gen_(\d{6,})$")
_TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read: missing, truncated, corrupted or of another format."""


class CheckpointWarning(UserWarning):
    """An invalid checkpoint was skipped."""


class DiskFullError(OSError):
    """No space (or quota) left while writing ``filename``; ``str(e)`` says which file."""

    def __str__(self) -> str:
        return f"disk full while writing {self.filename}"


_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def writing(path: Path):
    """Turn ENOSPC/EDQUOT raised inside the block into a ``DiskFullError`` naming ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as e:
        if e.errno in _FULL:
            raise DiskFullError(e.errno, os.strerror(e.errno), str(path)) from e
        raise


@dataclass(frozen=True)
class Checkpoint:
    """A loaded, verified checkpoint."""

    path: Path
    generation: int
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


def checkpoint_name(generation: int) -> str:
    return f"gen_{generation:06d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so that it is either complete (new) or untouched (old) after a crash or a
    full disk: temp file, fsync, rename, fsync of the directory. ``DiskFullError`` names
    ``path``; the temp file is removed."""
    path = Path(path)
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{os.getpid()}")
    with writing(path):
        try:
            _write_file(tmp, data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    """``write_bytes_atomic`` of UTF-8 text."""
    write_bytes_atomic(path, text.encode())


def save_checkpoint(
    root: Path,
    generation: int,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
) -> Path:
    """Write ``root/gen_NNNNNN`` atomically and return its path.

    Args:
        root: the run's ``checkpoints/`` directory (created if needed).
        generation: completed generations.
        arrays: ``name -> array``; saved with ``np.savez`` (object arrays are refused).
        meta: JSON-serializable metadata; ``format_version``, ``esvo_version``,
            ``generation`` and ``sha256`` are added.

    Returns:
        The checkpoint directory. If a valid checkpoint of this generation already exists it
        is kept as is (a run is deterministic, so it holds the same state).
    """
    from esvo import __version__

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(generation)
    if final.exists():
        try:
            load_checkpoint(final)
            return final
        except CheckpointError:
            _discard(final)

    plain = {k: np.asarray(v) for k, v in arrays.items()}
    bad = [k for k, v in plain.items() if v.dtype.hasobject]
    if bad:
        raise TypeError(f"checkpoint arrays must be numeric (no pickle), got objects in {bad}")
    buf = io.BytesIO()
    np.savez(buf, **plain)  # object arrays refused above: no pickle inside
    data = buf.getvalue()
    full_meta = {
        "format_version": FORMAT_VERSION,
        "esvo_version": __version__,
        "generation": int(generation),
        "sha256": hashlib.sha256(data).hexdigest(),
        "state_bytes": len(data),
        **{k: v for k, v in meta.items() if k not in ("format_version", "generation")},
    }
    tmp = root / f"{_TMP_PREFIX}{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    with writing(final):
        try:
            tmp.mkdir()
            _write_file(tmp / STATE_FILE, data)
            meta_text = json.dumps(full_meta, indent=1, allow_nan=True) + "\n"
            _write_file(tmp / META_FILE, meta_text.encode())
            _fsync_dir(tmp)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # never half a checkpoint under any name
            raise
        _fsync_dir(root)
    return final


def _discard(path: Path) -> None:
    """Move a bad checkpoint out of the way (renamed first, so the removal is never partial
    under its real name)."""
    trash = path.with_name(f"{_TMP_PREFIX}discard-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and verify one checkpoint directory.

    Raises:
        CheckpointError: naming the checkpoint and what is wrong with it.
    """
    path = Path(path)
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable {META_FILE} ({e})") from e
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise CheckpointError(
            f"checkpoint {path}: format_version {version!r}, expected {FORMAT_VERSION}"
        )
    try:
        data = (path / STATE_FILE).read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path}: unreadable {STATE_FILE} ({e})") from e
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise CheckpointError(
            f"checkpoint {path}: {STATE_FILE} checksum mismatch "
            f"({len(data)} bytes, expected {meta.get('state_bytes')}): truncated or corrupted"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: cannot parse {STATE_FILE} ({e})") from e
    return Checkpoint(path, int(meta["generation"]), arrays, meta)


def latest_valid_path(root: Path) -> Path | None:
    """The newest checkpoint that loads and verifies (quietly; for messages), or None."""
    for path in reversed(list_checkpoints(root)):
        try:
            load_checkpoint(path)
        except CheckpointError:
            continue
        return path
    return None


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories under ``root``, oldest generation first (not verified)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: Path) -> Checkpoint | None:
    """The newest valid checkpoint; each invalid newer one is reported with a
    ``CheckpointWarning`` naming it and skipped. ``None`` if there is no valid one."""
    for path in reversed(list_checkpoints(root)):
        try:
            return load_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(
                f"{e}; falling back to the previous checkpoint", CheckpointWarning, stacklevel=2
            )
    return None


def prune_checkpoints(root: Path, keep: int, protect: Sequence[int] = ()) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints and the generations in ``protect``;
    also removes temporary directories left by a crash. Returns the deleted paths."""
    root = Path(root)
    deleted = []
    paths = list_checkpoints(root)
    kept = set(paths[-keep:]) if keep > 0 else set()
    for p in paths:
        gen = int(_NAME.match(p.name).group(1))  # type: ignore[union-attr]
        if p not in kept and gen not in protect:
            _discard(p)
            deleted.append(p)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(_TMP_PREFIX) and not p.name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(p, ignore_errors=True)
    return deleted


def best_generation(root: Path, maximize: bool) -> int | None:
    """Generation of the checkpoint with the best ``eval_return`` in its meta (if any)."""
    best = None
    for p in list_checkpoints(root):
        try:
            meta = json.loads((p / META_FILE).read_text())
        except (OSError, ValueError):
            continue
        value = meta.get("eval_return")
        if value is None or not np.isfinite(value):
            continue
        signed = value if maximize else -value
        if best is None or signed > best[0]:
            best = (signed, int(meta["generation"]))
    return None if best is None else best[1]
