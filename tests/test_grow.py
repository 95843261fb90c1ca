"""Growing a model into a bigger shape keeps its function, and leaves every new weight a way
to learn."""

from __future__ import annotations

import pytest
import torch

from dlm_lsp.model.denoiser import Denoiser, DenoiserConfig
from training.grow import grow, head_slots, layer_map
from training.shapes import init_weights


def cfg(d: int, layers: int, heads: int, inter: int, eps: float = 1e-6) -> DenoiserConfig:
    return DenoiserConfig(vocab_size=97, hidden_size=d, intermediate_size=inter,
                          num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=2, head_dim=8, tie_word_embeddings=True,
                          rms_norm_eps=eps)


def test_inserted_layers_are_spread_over_the_depth():
    assert layer_map(6, 8) == [0, 1, 2, None, 3, 4, 5, None]
    assert layer_map(3, 3) == [0, 1, 2]
    with pytest.raises(ValueError):
        layer_map(4, 3)


def test_old_heads_keep_their_key_value_group():
    slots = head_slots(4, 6, 2)  # groups of 2 become groups of 3
    assert slots == [0, 1, 3, 4]
    assert [s // 3 for s in slots] == [h // 2 for h in range(4)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_a_grown_model_computes_the_same_logits(causal, eps):
    """Exactly without the norms' epsilon; with it, the epsilon weighs a little more against
    a mean over more dimensions (a relative 1e-3 here, at untrained activations)."""
    torch.manual_seed(0)
    src, dst = cfg(32, 3, 4, 80, eps), cfg(48, 5, 6, 128, eps)
    small = Denoiser(src)
    init_weights(small, seed=1)
    with torch.no_grad():  # trained-looking norms, not all ones
        for name, p in small.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    big = Denoiser(dst)
    big.load_state_dict(grow(small.state_dict(), src, dst))
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        a, b = small(ids, causal=causal), big(ids, causal=causal)
    tolerance = 1e-5 if eps == 0 else 2e-3
    assert (a - b).abs().max() <= tolerance * a.abs().max()
    assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_every_weight_of_a_grown_model_learns_from_the_second_step():
    """Zero output projections stop the gradient of what feeds them for one step (as any
    zero-initialised residual branch); after one update every weight gets a gradient."""
    src, dst = cfg(32, 2, 4, 80), cfg(48, 3, 6, 128)
    small = Denoiser(src)
    init_weights(small, seed=1)
    big = Denoiser(dst)
    big.load_state_dict(grow(small.state_dict(), src, dst))
    opt = torch.optim.SGD(big.parameters(), lr=0.1)
    ids = torch.randint(0, 97, (2, 9))

    def step() -> list[str]:
        opt.zero_grad()
        logits = big(ids)
        torch.nn.functional.cross_entropy(logits.reshape(-1, 97), ids.reshape(-1)).backward()
        silent = [n for n, p in big.named_parameters()
                  if p.grad is None or not p.grad.abs().sum()]
        opt.step()
        return silent

    first = step()
    inserted = [f"layers.{i}." for i, j in enumerate(layer_map(2, 3)) if j is None]
    assert first and all(any(k in n for k in inserted) for n in first)  # only the new block
    assert step() == []
