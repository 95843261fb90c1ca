"""Shared fixtures: tiny random checkpoints built on the spot (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlm_lsp.config import Settings
from dlm_lsp.model.random_checkpoint import make_random_checkpoint
from dlm_lsp.pipeline.engine import Engine


@pytest.fixture(scope="session")
def parrot_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that writes '1' in every slot with near-certainty: known output, no training."""
    return make_random_checkpoint(tmp_path_factory.mktemp("parrot") / "ckpt", parrot="1")


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_checkpoint(tmp_path_factory.mktemp("random") / "ckpt", seed=1)


@pytest.fixture(scope="session")
def slow_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Big enough that a long one-token-per-step decode takes seconds."""
    return make_random_checkpoint(tmp_path_factory.mktemp("slow") / "ckpt", hidden_size=256,
                                  num_layers=4, num_heads=4, num_kv_heads=2, seed=2)


@pytest.fixture
def parrot_engine(parrot_checkpoint: Path) -> Engine:
    return Engine(Settings(model=str(parrot_checkpoint), max_tokens=8, max_block_tokens=12))
