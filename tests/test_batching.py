"""Several FIM requests decoded in one batch give what each gives alone."""

import dataclasses

import torch

from dlm_lsp.model.batching import FimRequest, layout, sample_fim_batch
from dlm_lsp.model.checkpoint import load_checkpoint
from dlm_lsp.model.sampler import SamplerConfig, sample

TEXTS = [("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", 6),
         ("x = ", "", 3),
         ("class Stack:\n    def push(self, item):\n        self.items.", "\n", 8)]


def requests(model):
    return [FimRequest(model.encode(p), model.encode(s), n) for p, s, n in TEXTS]


def test_layout_aligns_every_rows_slots_and_hides_the_padding():
    reqs = [FimRequest([5, 6, 7], [8], 2), FimRequest([5], [8, 9, 10], 4)]
    x, span_of, keys = layout(reqs, pad=0, mask=2, device=torch.device("cpu"))
    assert x.tolist() == [[5, 6, 7, 2, 2, 0, 0, 8, 0, 0],
                          [0, 0, 5, 2, 2, 2, 2, 8, 9, 10]]
    assert span_of.tolist() == [-1, -1, -1, 0, 0, 0, 0, -1, -1, -1]
    assert keys.tolist() == [[True] * 5 + [False, False, True, False, False],
                             [False, False] + [True] * 8]


def test_batched_rows_decode_as_each_request_alone(random_checkpoint):
    model = load_checkpoint(random_checkpoint)
    # without the cache every step is an exact forward, so only the batching can differ
    cfg = SamplerConfig(threshold=0.5, use_cache=False, max_steps=8)
    batched = sample_fim_batch(model, requests(model), cfg)
    for req, got in zip(requests(model), batched, strict=True):
        alone = sample(model.denoiser, model.spec, [req.prefix_ids, req.max_tokens,
                                                    req.suffix_ids], cfg)
        assert got.tokens == alone.candidates[0].spans[0]
        assert len(got.tokens) <= req.max_tokens
    assert batched[0].forward_passes >= 1


def test_batched_decoding_with_the_cache_respects_each_budget(random_checkpoint):
    model = load_checkpoint(random_checkpoint)
    batched = sample_fim_batch(model, requests(model), SamplerConfig())
    assert [len(r.tokens) <= n for r, (_, _, n) in zip(batched, TEXTS, strict=True)] == [True] * 3
    assert any(r.tokens for r in batched)


def test_padding_tokens_are_invisible_to_the_model(random_checkpoint):
    model = load_checkpoint(random_checkpoint)
    reqs = requests(model)
    x, span_of, keys = layout(reqs, model.spec.pad_token_id, model.spec.mask_token_id,
                              model.device)
    noisy = torch.where(keys, x, torch.randint_like(x, 3, 200))  # junk where padding is
    with torch.inference_mode():
        a = model.denoiser(x, key_mask=keys)
        b = model.denoiser(noisy, key_mask=keys)
    assert torch.allclose(a[keys], b[keys], atol=1e-5)


def test_each_row_keeps_its_own_healing_constraint(random_checkpoint):
    model = load_checkpoint(random_checkpoint)
    cfg = SamplerConfig(threshold=0.5, use_cache=False, max_steps=8)
    free = sample_fim_batch(model, requests(model), cfg)
    forced = 7 if free[0].tokens[0] != 7 else 8  # a first token the model did not choose
    reqs = requests(model)
    reqs[0].first_tokens = (forced,)
    batched = sample_fim_batch(model, reqs, cfg)
    assert batched[0].tokens[0] == forced
    alone = sample(model.denoiser, model.spec, [reqs[0].prefix_ids, reqs[0].max_tokens,
                                                reqs[0].suffix_ids],
                   dataclasses.replace(cfg, first_tokens=(forced,)))
    assert batched[0].tokens == alone.candidates[0].spans[0]
    # the rows without a constraint decode as they did
    assert [r.tokens for r in batched[1:]] == [r.tokens for r in free[1:]]
