"""Which files a checkpoint load reads: safetensors only, shards inside the directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dlm_lsp.model.checkpoint import ModelError, load_checkpoint, weight_files


def _sharded(src: Path, dst: Path, shard_name: str) -> Path:
    shutil.copytree(src, dst)
    (dst / "model.safetensors").rename(dst / "model-00001-of-00001.safetensors")
    index = {"metadata": {}, "weight_map": {"model.norm.weight": shard_name}}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    return dst


def test_a_sharded_checkpoint_loads_from_its_index(parrot_checkpoint, tmp_path: Path):
    ckpt = _sharded(parrot_checkpoint, tmp_path / "ok", "model-00001-of-00001.safetensors")
    assert [f.name for f in weight_files(ckpt)] == ["model-00001-of-00001.safetensors"]
    assert load_checkpoint(ckpt).denoiser is not None


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd",
                                  "sub/../../x.safetensors", "model.bin"])
def test_shards_outside_the_checkpoint_directory_are_refused(parrot_checkpoint, tmp_path, name):
    ckpt = _sharded(parrot_checkpoint, tmp_path / "bad", name)
    (tmp_path / "outside.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="outside the checkpoint directory"):
        load_checkpoint(ckpt)
