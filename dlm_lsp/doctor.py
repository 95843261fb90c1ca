"""`dlm-lsp doctor`: what is installed, which model would load, and how fast it completes."""

from __future__ import annotations

import os
import platform
import sys
import time

from dlm_lsp import __version__
from dlm_lsp.config import Settings
from dlm_lsp.model.checkpoint import HOW_TO_POINT, ModelError, embedded_available

SAMPLE = '''def mean(values):
    """Return the arithmetic mean of a list of numbers."""
    total = 0
    for v in values:
        total += v
''' + "    return total / "


def _line(name: str, value: object) -> None:
    print(f"{name:<22} {value}")


def run_doctor(settings: Settings) -> int:
    """Print the report; 0 when a sample completion ran, 1 otherwise."""
    import torch

    from dlm_lsp.model.denoiser import count_parameters
    from dlm_lsp.pipeline.engine import Engine
    from dlm_lsp.pipeline.syntax import error_count

    _line("dlm-lsp", __version__)
    _line("python", sys.version.split()[0] + f" ({platform.platform()})")
    _line("torch", f"{torch.__version__}, {torch.get_num_threads()} threads, "
                   f"{os.cpu_count()} cores, cuda={torch.cuda.is_available()}")
    try:
        ok = error_count("python", "def f(:\n") > 0 and error_count("python", "x = 1\n") == 0
        _line("tree-sitter", "python grammar ok" if ok else "python grammar gives odd results")
    except Exception as exc:  # pragma: no cover - broken install
        _line("tree-sitter", f"FAILED: {exc!r}")
    _line("model setting", settings.model)
    _line("embedded model", "present" if embedded_available() else "not in this install")
    engine = Engine(settings)
    t0 = time.perf_counter()
    try:
        model = engine.load()
    except ModelError as exc:
        print(f"\nThe model could not be loaded: {exc}")
        if HOW_TO_POINT not in str(exc):
            print(HOW_TO_POINT)
        print("For a quick smoke test without a trained model:\n"
              "  dlm-lsp random-checkpoint /tmp/dlm-random && "
              "dlm-lsp doctor --model /tmp/dlm-random")
        return 1
    total, non_emb = count_parameters(model.denoiser)
    _line("model path", model.path)
    _line("parameters", f"{total / 1e6:.1f}M ({non_emb / 1e6:.1f}M non-embedding)")
    _line("load time", f"{(time.perf_counter() - t0) * 1e3:.0f} ms")
    _line("device", model.device)
    outcome = engine.complete(SAMPLE, len(SAMPLE) - 1, "python")
    stats = outcome.stats
    text = outcome.candidates[0].text if outcome.candidates else "(no candidate)"
    _line("sample completion", repr(text))
    if stats:
        _line("sample latency", f"{stats.ms:.0f} ms, {stats.forward_passes} forward passes, "
                                f"{stats.tokens} tokens, context {stats.context_tokens} tokens")
    return 0
