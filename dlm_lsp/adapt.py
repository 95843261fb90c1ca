"""Learning a repository: fine-tune the embedded model on the workspace's own code.

    dlm-lsp adapt [DIR] [--tokens N] [--yes] [--forget]

A small model cannot know a project's names and habits; a few minutes of fine-tuning on the
project's own files teach it some (measured on glom: rest-of-line exact 6.3 -> 9.1 % on its
held-back files, nothing lost on another package, with lr 3e-4 for 20 epochs; lr 1e-3 made
things worse, and a 22k-token project learnt nothing). So:

- the source files of the model's languages under DIR (``.gitignore`` respected, as the
  workspace index reads them) are tokenized; below :data:`MIN_TOKENS` of own code nothing is
  learnt, and the command says so;
- the budget is tokens, not steps: :data:`EPOCHS` passes over the code, at most ``--tokens``;
  the configuration (fp32 or bf16 autocast) is the faster of the two measured here, and the
  time it will take is said before it starts;
- rows are the training objective's own (masked diffusion and infilling, the model's logit
  shift), drawn from the project's files;
- the result is a checkpoint in the user's cache, keyed by the repository (its git top
  level, else its path) and recording its commit; the server uses it for that workspace
  when ``model`` is "embedded" (``dlm.status``, ``dlm-lsp doctor`` say so); ``--forget``
  drops it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MIN_TOKENS = 50_000
EPOCHS = 20
LR = 3e-4
MAX_BUDGET = 4_000_000
BATCH, SEQ_LEN = 8, 512


@dataclass
class Repository:
    root: Path  # the git top level, or the directory itself
    commit: str | None  # HEAD, when it is a git repository

    @property
    def key(self) -> str:
        return hashlib.sha256(str(self.root).encode()).hexdigest()[:16]


def repository(directory: Path) -> Repository:
    """The repository holding `directory` (git's top level and HEAD when git knows it)."""
    directory = directory.resolve()
    try:
        top = subprocess.run(["git", "-C", str(directory), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10)
        head = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return Repository(directory, None)
    if top.returncode != 0:
        return Repository(directory, None)
    return Repository(Path(top.stdout.strip()).resolve(),
                      head.stdout.strip() if head.returncode == 0 else None)


def cache_root() -> Path:
    """Where adapted models live: ``$DLM_LSP_CACHE``, else the XDG cache directory."""
    if os.environ.get("DLM_LSP_CACHE"):
        return Path(os.environ["DLM_LSP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dlm-lsp"


def adapted_dir(repo: Repository) -> Path:
    return cache_root() / "adapted" / repo.key


def find_adapted(directory: Path) -> Path | None:
    """The adapted model of the repository holding `directory`, if one was learnt."""
    target = adapted_dir(repository(directory))
    return target if (target / "dlm.json").is_file() else None


def forget(directory: Path) -> bool:
    target = adapted_dir(repository(directory))
    if not target.exists():
        return False
    shutil.rmtree(target)
    return True


def own_code(root: Path, languages: list[str]) -> list[str]:
    """The texts of the repository's source files in `languages` (all when empty)."""
    from dlm_lsp.pipeline.syntax import detect_language
    from dlm_lsp.pipeline.workspace import read_source, source_files

    out = []
    for path in source_files(root):
        lang = detect_language(None, path.as_uri())
        if languages and lang not in languages:
            continue
        text = read_source(path)
        if text is not None and text.strip():
            out.append(text)
    return out


def plan_budget(own_tokens: int, cap: int) -> tuple[int, int]:
    """(tokens to train on, optimizer steps) for `own_tokens` of code."""
    tokens = min(EPOCHS * own_tokens, cap)
    return tokens, max(1, math.ceil(tokens / (BATCH * SEQ_LEN)))


def _fastest(model, batcher, shift: bool) -> tuple[bool, float]:  # noqa: ANN001
    """(bf16 autocast?, seconds per step), measured on two steps of each configuration."""
    import torch

    from dlm_lsp.model.objective import loss_on

    options = [False]
    if bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        options.append(True)
    timings = {}
    for bf16 in options:
        batch = batcher.batch(BATCH)
        t0 = time.perf_counter()
        for _ in range(2):
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                loss = loss_on(model, batch, causal=False, shift=shift)
            loss.backward()
            model.zero_grad(set_to_none=True)
        timings[bf16] = (time.perf_counter() - t0) / 2
    best = min(timings, key=timings.get)
    return best, timings[best]


def adapt(directory: Path, model_dir: Path, cap: int = MAX_BUDGET,
          say: Callable[[str], None] = print, confirm: Callable[[], bool] = lambda: True,
          threads: int = 0, seed: int = 0) -> Path | None:
    """Fine-tune `model_dir` on the repository holding `directory`; the adapted model's
    directory, or None when there is too little code or the user declined."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from dlm_lsp.model.batcher import Batcher, Prepared
    from dlm_lsp.model.checkpoint import DlmSpec, load_checkpoint, save_checkpoint
    from dlm_lsp.model.middles import node_spans
    from dlm_lsp.model.objective import loss_on

    if threads:
        torch.set_num_threads(threads)
    repo = repository(directory)
    loaded = load_checkpoint(model_dir, quantize="none")
    tok, spec = loaded.tokenizer, loaded.spec
    texts = own_code(repo.root, spec.languages)
    eos = spec.eos_token_id
    ids = [i for enc in tok.encode_batch(texts, add_special_tokens=False) for i in enc.ids + [eos]]
    languages = ", ".join(spec.languages) or "code"
    if len(ids) < MIN_TOKENS:
        say(f"{repo.root} holds {len(ids):,} tokens of {languages} in {len(texts)} files; "
            f"learning a repository needs at least {MIN_TOKENS:,} (measured: below that the "
            "model learnt nothing of its own, or got worse). Nothing was changed.")
        return None
    budget, steps = plan_budget(len(ids), cap)
    spans = [np.asarray(node_spans(t), dtype=np.int32).reshape(-1, 2) for t in texts]
    data = Prepared(tok, texts, np.asarray(ids, dtype=np.uint16), spans)
    batcher = Batcher(data, "diffusion", seq_len=SEQ_LEN, seed=seed, fixed_length=True)
    model = loaded.denoiser
    model.train()
    bf16, step_s = _fastest(model, batcher, spec.logits_shift)
    say(f"{repo.root}: {len(ids):,} tokens of {languages} in {len(texts)} files; "
        f"{budget:,} tokens of training ({steps} steps, {'bf16' if bf16 else 'fp32'}), "
        f"about {max(1, round(steps * step_s / 60))} min on this CPU.")
    if not confirm():
        say("Nothing was changed.")
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    for step in tqdm(range(steps), desc="adapt", unit="step"):
        lr = LR * min(1.0, (step + 1) / 20) * (1 - step / steps)  # warm up, decay to 0
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = loss_on(model, batcher.batch(BATCH), causal=False, shift=spec.logits_shift)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    model.eval()
    target = adapted_dir(repo)
    staging = target.with_name(target.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    training = {**spec.training, "adapted": {
        "repository": repo.root.name, "commit": repo.commit, "files": len(texts),
        "own_tokens": len(ids), "tokens": budget, "steps": steps, "lr": LR,
        "date": time.strftime("%Y-%m-%d")}}
    # the filter goes along: it reads the model's own confidences, which fine-tuning keeps
    finality = dict(spec.finality) if loaded.finality is not None else {}
    new_spec = DlmSpec(**{**spec.__dict__, "training": training, "finality": finality})
    save_checkpoint(staging, model, tok, new_spec, dtype=torch.float16)
    if loaded.finality is not None:
        loaded.finality.save(staging / finality["file"])
    (staging / "repository.json").write_text(json.dumps(
        {"root": str(repo.root), "commit": repo.commit}) + "\n")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    say(f"adapted model for {repo.root} -> {target}; the server uses it for this workspace "
        "(dlm-lsp adapt --forget drops it)")
    return target
