"""Lay a local model directory out as a Hugging Face hub cache snapshot (what `hf download` leaves):
blobs named by content hash, a snapshot of symlinks to them, and ``refs/main`` naming the commit."""

from __future__ import annotations

import hashlib
from pathlib import Path


def install_snapshot(model_dir: Path, cache: Path, repo_id: str, commit: str = "0" * 40) -> Path:
    """Put ``model_dir``'s files into ``cache`` as ``repo_id`` at ``commit``; returns the snapshot dir."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for source in sorted(Path(model_dir).iterdir()):
        if not source.is_file():
            continue
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            blob.symlink_to(source.resolve())  # the test's cache points at the real files: no copy
        link = snapshot / source.name
        if not link.exists():
            link.symlink_to(Path("..") / ".." / "blobs" / digest)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
