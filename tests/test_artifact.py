from __future__ import annotations

from pathlib import Path

import pytest

from pruneguard.registry.artifact import REQUIRED_KEYS, read_manifest, verify, write_artifact
from pruneguard.registry.errors import ArtifactCorrupt, ArtifactError


def test_factory_artifact_verifies_and_runs(artifact_factory) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    import onnxruntime as ort

    path = artifact_factory(name="m", kind="dense")
    manifest = verify(path)
    assert set(manifest) >= REQUIRED_KEYS
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.zeros((3, 1, 8, 8), np.float32)})
    assert logits.shape == (3, 10)


def test_flipped_byte_is_named(artifact_factory) -> None:  # type: ignore[no-untyped-def]
    path = artifact_factory()
    model = path / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupt, match=r"model\.onnx") as info:
        verify(path)
    assert info.value.path.endswith("model.onnx")


def test_failed_writer_leaves_nothing(tmp_path: Path) -> None:
    def broken(tmp: Path) -> None:
        (tmp / "model.onnx").write_bytes(b"x")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        write_artifact(tmp_path / "out", {"schema": "x"}, broken)
    assert list(tmp_path.iterdir()) == []


def test_missing_manifest_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="pruneguard prune"):
        read_manifest(tmp_path)


def test_existing_destination_is_refused(artifact_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = artifact_factory()
    with pytest.raises(ArtifactError, match="already exists"):
        write_artifact(path, {}, lambda tmp: None)
