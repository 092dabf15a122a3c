"""The BentoML model store, as the registry uses it.

A version is a BentoML model ``name:version`` whose directory holds the artifact files
(``model.onnx``, ``reference.parquet``, ``manifest.json``) next to BentoML's ``model.yaml``.

BentoML writes a model straight into its final directory, so a process killed half-way
would leave a partial entry that ``bentoml models list`` shows. Here every entry is built in
a staging store on the same filesystem and moved into the real store with one ``rename``:
an entry in ``<bentoml_home>/models`` is always complete. Staging directories of dead
processes are swept by :meth:`ModelStore.sweep_staging`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruneguard.registry.artifact import FILES, MANIFEST
from pruneguard.registry.errors import ArtifactError, NotFound
from pruneguard.registry.settings import prepare_bentoml_env

if TYPE_CHECKING:
    from bentoml._internal.models import ModelStore as BentoStore

__all__ = ["ModelStore", "bentoml_metadata"]

STAGING = ".pruneguard-staging"
MODEL_YAML = "model.yaml"


class ModelStore:
    """Adapter over BentoML's model store rooted at ``bentoml_home``."""

    def __init__(self, bentoml_home: Path) -> None:
        self.home = Path(bentoml_home)
        self.root = self.home / "models"
        prepare_bentoml_env(self.home)

    # --- reading -------------------------------------------------------------------------
    def path_of(self, tag: str) -> Path:
        """The directory of ``tag`` in the store (it may not exist)."""
        name, version = tag.split(":", 1)
        return self.root / name / version

    def is_complete(self, tag: str) -> bool:
        path = self.path_of(tag)
        return (path / MODEL_YAML).is_file() and (path / MANIFEST).is_file()

    def tags(self) -> list[str]:
        """Every complete ``name:version`` entry in the store."""
        if not self.root.is_dir():
            return []
        found = []
        for name_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for version_dir in sorted(p for p in name_dir.iterdir() if p.is_dir()):
                tag = f"{name_dir.name}:{version_dir.name}"
                if self.is_complete(tag):
                    found.append(tag)
        return found

    # --- writing -------------------------------------------------------------------------
    def add(
        self,
        artifact_dir: Path,
        tag: str,
        *,
        labels: Mapping[str, str],
        manifest: Mapping[str, Any],
    ) -> Path:
        """Copy ``artifact_dir`` into the store as ``tag``; return the entry's directory.

        Idempotent: an existing complete entry is kept (the caller has checked its sha256).
        """
        import bentoml

        if self.is_complete(tag):
            return self.path_of(tag)
        with self._staging() as staging:
            with bentoml.models.create(
                tag,
                labels=dict(labels),
                metadata=bentoml_metadata(manifest),
                _model_store=self._bento_store(staging),
            ) as model:
                for name in (*sorted(manifest.get("files", {}) or FILES), MANIFEST):
                    target = Path(model.path) / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(Path(artifact_dir) / name, target)
            return self._publish(_entry(staging, tag), tag)

    def import_file(self, archive: Path, check: Callable[[str, Path], None]) -> str:
        """Import a ``.bentomodel`` written by :meth:`export`; return its tag.

        ``check(tag, staged_dir)`` runs before the entry enters the store (raise to refuse).
        """
        import bentoml

        with self._staging() as staging:
            try:
                model = bentoml.models.import_model(
                    str(archive), _model_store=self._bento_store(staging)
                )
            except Exception as exc:  # BentoML raises tar/lzma/zip/yaml errors as they come
                raise ArtifactError(
                    f"{archive} is not a BentoML model archive ({type(exc).__name__}: {exc}); "
                    "pass a file written by `pruneguard models export`"
                ) from exc
            tag = str(model.tag)
            if not (Path(model.path) / MANIFEST).is_file():
                raise ArtifactError(
                    f"{archive} holds BentoML model {tag} but no {MANIFEST}: it was not "
                    "exported by `pruneguard models export`"
                )
            check(tag, _entry(staging, tag))
            if not self.is_complete(tag):
                self._publish(_entry(staging, tag), tag)
            return tag

    def export(self, tag: str, dest: Path) -> Path:
        """Write ``tag`` as a ``.bentomodel`` archive at ``dest`` (a file or a directory)."""
        import bentoml

        if not self.is_complete(tag):
            raise NotFound(f"{tag} is not in the BentoML store {self.root}")
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / f"{tag.replace(':', '-')}.bentomodel"
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = bentoml.models.export_model(tag, str(dest), _model_store=self._bento_store(self.root))
        return Path(out)

    def delete(self, tag: str) -> None:
        """Remove ``tag`` from the store: rename it aside first, so it vanishes atomically."""
        path = self.path_of(tag)
        if not path.exists():
            return
        trash = self.home / STAGING / f"{os.getpid()}-delete-{path.parent.name}-{path.name}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        self._fix_latest(path.parent)

    def sweep_staging(self) -> list[Path]:
        """Remove staging directories left by processes that no longer run."""
        base = self.home / STAGING
        removed: list[Path] = []
        if not base.is_dir():
            return removed
        for entry in base.iterdir():
            pid = entry.name.split("-", 1)[0]
            if pid.isdigit() and _alive(int(pid)):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        return removed

    # --- internals -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _staging(self) -> Iterator[Path]:
        base = self.home / STAGING
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _bento_store(path: Path) -> BentoStore:
        from bentoml._internal.models import ModelStore as BentoStore

        return BentoStore(str(path))

    def _publish(self, staged: Path, tag: str) -> Path:
        final = self.path_of(tag)
        final.parent.mkdir(parents=True, exist_ok=True)
        _fsync_tree(staged)
        try:
            os.rename(staged, final)
        except OSError:
            if not self.is_complete(tag):  # a concurrent registration may have won the rename
                raise
        _fsync_dir(final.parent)
        self._fix_latest(final.parent)
        return final

    def _fix_latest(self, name_dir: Path) -> None:
        """Keep BentoML's ``latest`` pointer on the newest complete version."""
        if not name_dir.is_dir():
            return
        newest = max(
            (p for p in name_dir.iterdir() if (p / MODEL_YAML).is_file()),
            key=lambda p: (p / MODEL_YAML).stat().st_mtime,
            default=None,
        )
        latest = name_dir / "latest"
        if newest is None:
            latest.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                name_dir.rmdir()
            return
        part = name_dir / f".latest.{os.getpid()}"
        part.write_text(newest.name)
        os.replace(part, latest)


def _entry(staging: Path, tag: str) -> Path:
    name, version = tag.split(":", 1)
    return staging / name / version


def bentoml_metadata(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest in the form BentoML metadata accepts: no ``None`` (dropped), plain types.

    The lossless manifest is ``manifest.json`` in the entry; this copy makes
    ``bentoml models get`` readable.
    """
    return _clean(json.loads(json.dumps(manifest)))


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value if v is not None]
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
