"""The artifact format: a directory holding ``model.onnx``, ``reference.parquet`` and
``manifest.json`` (DESIGN §3.2).

An artifact is written into a temporary sibling directory and renamed into place, so a
reader never sees a half-written one. The manifest records the sha256 of every other file;
:func:`verify` checks them and names the first file that does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pruneguard.registry.errors import ArtifactCorrupt, ArtifactError
from pruneguard.registry.tasks import task_name

__all__ = [
    "FILES",
    "MANIFEST",
    "MODEL",
    "REFERENCE",
    "REQUIRED_KEYS",
    "REQUIRED_METRICS",
    "SCHEMA",
    "artifact_files",
    "read_manifest",
    "sha256_file",
    "verify",
    "write_artifact",
]

SCHEMA = "pruneguard.artifact/v1"
MANIFEST = "manifest.json"
MODEL = "model.onnx"
REFERENCE = "reference.parquet"
FILES = (MODEL, REFERENCE)

REQUIRED_KEYS = frozenset(
    {
        "schema",
        "name",
        "kind",
        "parent",
        "pruning",
        "metrics",
        "io",
        "files",
        "versions",
        "created_at",
    }
)
REQUIRED_METRICS = frozenset(
    {
        "accuracy",
        "baseline_accuracy",
        "params",
        "baseline_params",
        "macs",
        "baseline_macs",
        "onnx_bytes",
        "latency_ms",
        "baseline_latency_ms",
        "speedup",
        "parity_max_abs_diff",
        "agreement_with_baseline",
    }
)
KINDS = ("dense", "pruned", "quantized")  # quantized: int8 made from a pruned parent


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_files(root: Path) -> list[str]:
    """Every file under ``root`` but the manifest, as sorted POSIX paths relative to it (a
    text model's tokenizer lives in a subfolder)."""
    found = (p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    return sorted(p.relative_to(root).as_posix() for p in found)


def _check_manifest(manifest: Mapping[str, Any], where: str) -> None:
    missing = REQUIRED_KEYS - set(manifest)
    if missing:
        raise ArtifactError(
            f"{where}: manifest lacks {sorted(missing)}; rebuild the artifact with `pruneguard prune`"
        )
    if manifest["schema"] != SCHEMA:
        raise ArtifactError(
            f"{where}: manifest schema is {manifest['schema']!r}, expected {SCHEMA!r}; "
            "rebuild the artifact with this pruneguard version"
        )
    if manifest["kind"] not in KINDS:
        raise ArtifactError(f"{where}: kind is {manifest['kind']!r}, expected one of {KINDS}")
    missing_metrics = REQUIRED_METRICS - set(manifest["metrics"])
    if missing_metrics:
        raise ArtifactError(f"{where}: manifest metrics lack {sorted(missing_metrics)}")
    try:
        task_name(manifest)
    except ArtifactError as exc:
        raise ArtifactError(f"{where}: {exc}") from exc
    _check_file_names(manifest.get("files"), where)


def _check_file_names(files: Any, where: str) -> None:
    """``files`` names paths inside the artifact: relative, no ``..``, no backslashes."""
    if not isinstance(files, Mapping):
        raise ArtifactError(f"{where}: manifest files must map file names to sha256 digests")
    for name in files:
        parts = str(name).split("/")
        if not name or str(name).startswith("/") or "\\" in str(name) or ".." in parts:
            raise ArtifactError(
                f"{where}: manifest files lists {name!r}, which is not a path inside the "
                "artifact; rebuild the artifact with `pruneguard prune`"
            )


def write_artifact(
    dest: str | os.PathLike[str],
    manifest: Mapping[str, Any],
    write_files: Callable[[Path], None],
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write an artifact atomically and return the manifest as written.

    ``write_files(tmp_dir)`` must create ``model.onnx`` and ``reference.parquet`` in
    ``tmp_dir`` (and may add more, e.g. ``tokenizer/``); this function adds every file's
    sha256 under ``files``, writes the manifest and renames the directory to ``dest``. On any
    error nothing appears at ``dest``.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise ArtifactError(f"{dest} already exists; choose another --out or remove it first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        write_files(tmp)
        for name in FILES:
            if not (tmp / name).is_file():
                raise ArtifactError(f"artifact writer did not create {name}")
        full = dict(manifest)
        full["files"] = {name: sha256_file(tmp / name) for name in artifact_files(tmp)}
        _check_manifest(full, str(dest))
        _write_json_atomic(tmp / MANIFEST, full)
        _fsync_dir(tmp)
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return full


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    part = path.with_suffix(path.suffix + ".part")
    with open(part, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(part, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_dir(src: Path, dest: Path) -> None:
    if not dest.exists():
        os.rename(src, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.rename(dest, old / "artifact")
    os.rename(src, dest)
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the manifest of the artifact directory ``path`` (no hashing)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{path} is not a pruneguard artifact: {MANIFEST} is missing; "
            "pass a directory written by `pruneguard prune --out`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactCorrupt(
            f"{manifest_path} is not valid JSON ({exc})", path=str(manifest_path)
        ) from exc
    if not isinstance(manifest, dict):
        raise ArtifactCorrupt(f"{manifest_path} is not a JSON object", path=str(manifest_path))
    _check_manifest(manifest, str(path))
    return manifest


def verify(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file against its sha256 in the manifest; return the manifest.

    Raises :class:`ArtifactCorrupt` naming the first file that is missing or differs.
    """
    path = Path(path)
    manifest = read_manifest(path)
    for name, expected in sorted(manifest["files"].items()):
        file = path / name
        if not file.is_file():
            raise ArtifactCorrupt(f"{file} is missing; the artifact is incomplete", path=str(file))
        actual = sha256_file(file)
        if actual != expected:
            raise ArtifactCorrupt(
                f"{file} fails its sha256 check (expected {expected[:12]}…, got {actual[:12]}…); "
                "the file was modified or damaged: re-register the version from a good copy",
                path=str(file),
            )
    return manifest
