"""Each published family's generation algorithm, written plainly from its authors' code:
a full forward every step, no cache, no window, greedy (temperature 0).

They run on dlm-lsp's denoiser (whose logits are checked against transformers elsewhere),
so comparing them with the project's sampler set to the family's recipe checks the
decoding, not the network. Each returns the middle's tokens as the family's own code would
leave them, before any end-token cut.

- Dream / DiffuCoder: ``generation_utils.py`` ``_sample`` (alg ``entropy``; transfer count
  ``int(n_masked * (1 - s / t))`` on ``linspace(1, eps, steps + 1)``),
- DreamOn: ``eval/generator.py`` ``batch_generate_with_expand_as_token`` (one token a step,
  expand into two masks, an eos fills the masks right of it and every new eos is deleted),
- LLaDA: ``generate.py`` ``generate`` (blocks of ``block_length``, low-confidence remasking),
- Open-dCoder: ``generation_utils.py`` ``_mdm_sample`` alg ``p2``,
- Fast-dLLM v2: the model's ``generate`` (32-token blocks, 8-token sub-blocks, threshold 1,
  a block's first token written autoregressively from the block before).
"""

from __future__ import annotations

import torch

from dlm_lsp.model.checkpoint import LoadedModel


def _logits(model: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """(1, T, V) logits of a full forward, shifted for AR-adapted families."""
    with torch.no_grad():
        out = model.denoiser(x)
    if model.spec.logits_shift:
        out = torch.cat([out[:, :1], out[:, :-1]], dim=1)
    return out.float()


def _neg_entropy(probs: torch.Tensor) -> torch.Tensor:
    return (probs * torch.log(probs + 1e-10)).sum(-1)


def dream(model: LoadedModel, prefix: list[int], n: int, suffix: list[int],
          eps: float = 1e-3) -> list[int]:
    mask = model.spec.mask_token_id
    x = torch.tensor([prefix + [mask] * n + suffix])
    steps = n
    timesteps = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        mask_index = x == mask
        if not mask_index.any():
            break
        logits = _logits(model, x)[mask_index]
        probs = torch.softmax(logits, dim=-1)
        confidence, x0 = probs.max(dim=-1)
        confidence = _neg_entropy(probs)
        t, s = timesteps[i], timesteps[i + 1]
        n_masked = mask_index.sum() / mask_index.shape[0]
        k = int(n_masked * (1 - s / t)) if i < steps - 1 else int(n_masked)
        full = torch.full(x.shape, -torch.inf)
        full[mask_index] = confidence
        if k > 0:
            _, idx = torch.topk(full, k)
            proposal = torch.full(x.shape, mask)
            proposal[mask_index] = x0
            x[0, idx[0]] = proposal[0, idx[0]]
    return x[0, len(prefix):len(prefix) + n].tolist()


def dreamon(model: LoadedModel, prefix: list[int], n: int, suffix: list[int],
            max_gen: int = 64, steps: int = 128) -> list[int]:
    spec = model.spec
    mask, expand, eos = spec.mask_token_id, spec.expand_token_id, spec.eos_token_id
    prompt = [spec.bos_token_id] + prefix + [mask] * n + suffix + [eos]
    x = torch.tensor([prompt])
    middle = n
    budget = max_gen
    for _ in range(steps):
        mask_index = x == mask
        if not mask_index.any():
            break
        logits = _logits(model, x)[mask_index]
        if budget == 0 or middle >= max_gen:
            logits[:, expand] -= 1e9
        probs = torch.softmax(logits, dim=-1)
        _, x0 = probs.max(dim=-1)
        confidence = _neg_entropy(probs)
        idx = torch.topk(confidence, 1).indices
        proposal = torch.full_like(x0, mask)
        proposal[idx] = x0[idx]
        x[mask_index] = proposal
        seq = x[0]
        first_eos = (seq == eos).nonzero()
        if len(first_eos):  # pad_eos_to_right: masks after the first eos become eos
            right = torch.arange(len(seq)) >= int(first_eos[0])
            seq[right & mask_index[0]] = eos
        for j in sorted((seq == expand).nonzero().squeeze(1).tolist(), reverse=True):
            seq = torch.cat([seq[:j], torch.tensor([mask, mask]), seq[j + 1:]])
            mask_index = torch.cat([mask_index[0][:j], torch.tensor([True, True]),
                                    mask_index[0][j + 1:]])[None]
            middle += 1
            budget -= 1
        deleted = ((seq == eos) & mask_index[0]).nonzero().squeeze(1).tolist()
        for j in sorted(deleted, reverse=True):  # delete_eos_token
            seq = torch.cat([seq[:j], seq[j + 1:]])
            middle -= 1
        x = seq[None]
    start = 1 + len(prefix)
    return x[0, start:start + middle].tolist()


def llada(model: LoadedModel, prefix: list[int], n: int, suffix: list[int],
          block_length: int = 32) -> list[int]:
    spec = model.spec
    mask = spec.mask_token_id
    prompt = [spec.bos_token_id] + prefix
    x = torch.tensor([prompt + [mask] * n + suffix])
    p0 = len(prompt)
    block_length = min(block_length, n)
    n_blocks = -(-n // block_length)
    for b in range(n_blocks):
        lo, hi = p0 + b * block_length, p0 + min(n, (b + 1) * block_length)
        for _ in range(int((x[0, lo:hi] == mask).sum())):  # steps = block length
            mask_index = x == mask
            logits = _logits(model, x)
            x0 = logits.argmax(-1)
            x0_p = torch.gather(torch.softmax(logits, -1), -1, x0[..., None]).squeeze(-1)
            x0_p[:, hi:] = -torch.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(-torch.inf))
            j = int(confidence[0].argmax())
            x[0, j] = x0[0, j]
    return x[0, p0:p0 + n].tolist()


def open_dcoder_p2(model: LoadedModel, prefix: list[int], n: int,
                   suffix: list[int]) -> list[int]:
    mask = model.spec.mask_token_id
    x = torch.tensor([prefix + [mask] * n + suffix])
    fixed = x != mask
    steps = n
    for i in range(steps):
        mask_index = x == mask
        if not mask_index.any():
            break
        logits = _logits(model, x)
        conf, x0 = torch.softmax(logits, -1).max(-1)
        conf = conf.clone()
        conf[fixed] = torch.inf
        keep_masked = int(((~fixed).sum().float() * (1.0 - (i + 1) / steps)).floor())
        to_mask = torch.zeros_like(x, dtype=torch.bool)
        if keep_masked > 0:
            order = torch.argsort(conf, dim=1, stable=True)
            to_mask[0, order[0, :keep_masked]] = True
        x[to_mask] = mask
        keep = mask_index & ~to_mask
        x[keep] = x0[keep]
    return x[0, len(prefix):len(prefix) + n].tolist()


def fast_dllm_v2(model: LoadedModel, prompt: list[int], n: int, block: int = 32,
                 small: int = 8) -> list[int]:
    """Generate `n` tokens after `prompt` (n chosen so that they end on a block boundary)."""
    mask, stop = model.spec.mask_token_id, model.spec.eos_token_id
    x = torch.tensor([prompt])
    start = len(prompt)
    if start % block == 0:  # the prompt fills its last block: the next token comes from AR
        x = torch.cat([x, _raw_logits(model, x)[:, -1:].argmax(-1)], dim=1)
    while x.shape[1] < start + n:
        if stop in x[0, start:].tolist():
            break
        fill = block - x.shape[1] % block
        x = torch.cat([x, torch.full((1, fill), mask)], dim=1)
        b0 = x.shape[1] - block  # the current block
        for s0 in range(b0, x.shape[1], small):
            while (x[0, s0:s0 + small] == mask).any():
                gen = x[0, start:].tolist()
                if stop in gen and mask not in gen[:gen.index(stop)]:
                    break
                logits = _raw_logits(model, x)[:, b0:]  # the block, shifted inside it
                logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
                logits = logits[:, s0 - b0:s0 - b0 + small]
                p = torch.softmax(logits, -1)
                x1 = p.argmax(-1)
                x1_p = torch.gather(p, -1, x1[..., None]).squeeze(-1)
                open_ = x[:, s0:s0 + small] == mask
                x1_p = torch.where(open_, x1_p, torch.tensor(-torch.inf))
                j = int(x1_p[0].argmax())
                x[0, s0 + j] = x1[0, j]
        gen = x[0, start:].tolist()
        if stop in gen and mask not in gen[:gen.index(stop)]:
            break
        if x.shape[1] < start + n:  # the block is done: the next one starts with AR
            x = torch.cat([x, _raw_logits(model, x)[:, -1:].argmax(-1)], dim=1)
    return x[0, start:start + n].tolist()


def _raw_logits(model: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.denoiser(x).float()
