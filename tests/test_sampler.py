"""The masked-diffusion sampler against scripted denoisers whose beliefs we choose."""

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from dlm_lsp.model.checkpoint import DlmSpec, load_checkpoint
from dlm_lsp.model.sampler import Cancelled, SamplerConfig, sample

PAD, EOS, MASK, EXPAND = 0, 1, 2, 3
V = 32
SPEC = DlmSpec(mask_token_id=MASK, pad_token_id=PAD, eos_token_id=EOS)
SPEC_EXPAND = DlmSpec(mask_token_id=MASK, pad_token_id=PAD, eos_token_id=EOS,
                      expand_token_id=EXPAND)

Belief = Callable[[int, int, int], tuple[int, float]]  # (position, seq_len, call) -> token, prob


class Scripted(nn.Module):
    """Predicts `belief(pos, seq_len, call)` with that probability at every requested row."""

    def __init__(self, belief: Belief):
        super().__init__()
        self.belief = belief
        self.dummy = nn.Parameter(torch.zeros(1))
        self.calls = 0
        self.full_len = 0
        self.asked: list[list[int]] = []

    def forward(self, ids, positions=None, cache=None, logits_at=None, causal=False):
        B, T = ids.shape
        if positions is None:
            positions = torch.arange(T)
            self.full_len = T
            if cache is not None:
                cache.keys.append(torch.zeros(1, 1, T, 1))
        rows = positions if logits_at is None else positions[logits_at]
        self.asked.append(rows.tolist())
        out = torch.full((B, len(rows), V), -30.0)
        for i, p in enumerate(rows.tolist()):
            tok, prob = self.belief(p, self.full_len, self.calls)
            rest = (1 - prob) / (V - 1)
            out[:, i] = torch.log(torch.tensor(rest))
            out[:, i, tok] = torch.log(torch.tensor(prob))
        self.calls += 1
        return out


PREFIX, SUFFIX = [20, 21, 22], [23, 24]
START = len(PREFIX)


def words_then_eos(n: int, prob: float = 0.99) -> Belief:
    """Tokens 10, 11, ... in the first `n` slots, then eos."""
    def belief(p, T, call):
        k = p - START
        return (10 + k, prob) if 0 <= k < n else (EOS, prob)
    return belief


def test_trailing_end_slots_are_removed_without_knowing_the_length():
    out = sample(Scripted(words_then_eos(3)), SPEC, [PREFIX, 8, SUFFIX], SamplerConfig())
    assert out.candidates[0].spans == [[10, 11, 12]]
    assert out.generated_tokens == 3


def test_confident_model_fills_the_whole_span_in_one_forward_pass():
    out = sample(Scripted(words_then_eos(5)), SPEC, [PREFIX, 8, SUFFIX],
                 SamplerConfig(threshold=0.9))
    assert out.forward_passes == 1 and out.candidates[0].spans == [[10, 11, 12, 13, 14]]
    assert out.history == [6]  # 5 tokens and the eos; the pads after it need no commit


def test_threshold_one_commits_exactly_one_token_per_step():
    out = sample(Scripted(words_then_eos(5)), SPEC, [PREFIX, 8, SUFFIX],
                 SamplerConfig(threshold=1.0, max_steps=64))
    assert set(out.history) == {1}
    assert out.candidates[0].spans == [[10, 11, 12, 13, 14]]
    assert out.forward_passes == out.steps == len(out.history)


def test_max_steps_bounds_the_number_of_steps_for_an_unsure_model():
    out = sample(Scripted(words_then_eos(8, prob=0.3)), SPEC, [PREFIX, 8, SUFFIX],
                 SamplerConfig(threshold=0.9, max_steps=2))
    assert out.steps == 2 and out.history == [4, 4]
    assert out.candidates[0].spans == [list(range(10, 18))]


def test_expand_tokens_grow_the_span():
    def belief(p, T, call):  # ask for more room until the span has 4 slots
        k = p - START
        if T < len(PREFIX) + 4 + len(SUFFIX):
            return EXPAND, 0.99
        return 10 + k, 0.99

    out = sample(Scripted(belief), SPEC_EXPAND, [PREFIX, 2, SUFFIX], SamplerConfig())
    assert out.candidates[0].spans == [[10, 11, 12, 13]]
    assert out.forward_passes == 2  # the layout change forces a full forward


def test_expand_cannot_grow_a_span_past_max_span():
    model = Scripted(lambda p, T, call: (EXPAND, 0.6))
    out = sample(model, SPEC_EXPAND, [PREFIX, 2, SUFFIX], SamplerConfig(max_span=2))
    assert model.full_len == len(PREFIX) + 2 + len(SUFFIX)
    assert EXPAND not in out.candidates[0].spans[0]


def test_cancellation_is_checked_between_steps():
    checks = []

    def stop():
        checks.append(1)
        return len(checks) > 2

    with pytest.raises(Cancelled):
        sample(Scripted(words_then_eos(8, prob=0.3)), SPEC, [PREFIX, 8, SUFFIX],
               SamplerConfig(threshold=1.0, max_steps=64), should_stop=stop)
    assert len(checks) == 3


def test_holes_are_filled_jointly_in_one_run():
    def belief(p, T, call):
        return {3: (10, 0.99), 4: (EOS, 0.99), 8: (11, 0.99), 9: (12, 0.99)}.get(p, (EOS, 0.99))

    pieces = [PREFIX, 3, [30, 31], 2, SUFFIX]  # span A at 3..5, span B at 8..9
    out = sample(Scripted(belief), SPEC, pieces, SamplerConfig())
    assert out.candidates[0].spans == [[10], [11, 12]]
    assert out.forward_passes == 1


def test_n_best_rows_are_decoded_in_one_batch():
    out = sample(Scripted(words_then_eos(2, prob=0.5)), SPEC, [PREFIX, 4, SUFFIX],
                 SamplerConfig(candidates=3, threshold=0.9, max_steps=4))
    assert len(out.candidates) == 3
    assert out.candidates[0].spans == [[10, 11]]  # the first row stays greedy


def test_shifted_logits_read_the_position_before_each_slot():
    model = Scripted(lambda p, T, c: (10 + p, 0.99) if p < START + 1 else (EOS, 0.99))
    spec = DlmSpec(mask_token_id=MASK, pad_token_id=PAD, eos_token_id=EOS, logits_shift=True)
    out = sample(model, spec, [PREFIX, 3, SUFFIX], SamplerConfig())
    assert model.asked[0] == [START - 1, START, START + 1]
    assert out.candidates[0].spans == [[10 + START - 1, 10 + START]]


def test_a_delete_token_removes_its_slot_and_the_span_goes_on_after_it():
    # DreamOn: eos in a slot deletes that slot; it does not end the span
    spec = DlmSpec(mask_token_id=MASK, pad_token_id=EOS, eos_token_id=EOS,
                   delete_token_id=EOS)
    script = {START: 10, START + 1: EOS, START + 2: 12, START + 3: EOS}
    out = sample(Scripted(lambda p, T, c: (script.get(p, EOS), 0.99)), spec,
                 [PREFIX, 4, SUFFIX], SamplerConfig())
    assert out.candidates[0].spans == [[10, 12]]
    # without a delete token the same beliefs end the span at the first eos
    ended = sample(Scripted(lambda p, T, c: (script.get(p, EOS), 0.99)),
                   DlmSpec(mask_token_id=MASK, pad_token_id=EOS, eos_token_id=EOS),
                   [PREFIX, 4, SUFFIX], SamplerConfig())
    assert ended.candidates[0].spans == [[10]]


def test_remasking_revises_a_token_the_model_stops_believing():
    def belief(p, T, call):
        k = p - START
        if k == 0:
            return (10, 0.95) if call == 0 else (11, 0.95)
        return (12, 0.3) if call < 3 else (EOS, 0.99)

    cfg = SamplerConfig(threshold=0.9, max_steps=16, remask_threshold=0.5)
    revised = sample(Scripted(belief), SPEC, [PREFIX, 2, SUFFIX], cfg)
    kept = sample(Scripted(belief), SPEC, [PREFIX, 2, SUFFIX],
                  SamplerConfig(threshold=0.9, max_steps=16))
    assert revised.candidates[0].spans[0][0] == 11
    assert kept.candidates[0].spans[0][0] == 10


def test_cache_and_no_cache_both_decode_a_real_random_model(random_checkpoint):
    model = load_checkpoint(random_checkpoint)
    prefix, suffix = model.encode("def f(x):\n    return "), model.encode("\n")
    for use_cache in (True, False):
        out = sample(model.denoiser, model.spec, [prefix, 6, suffix],
                     SamplerConfig(threshold=1.0, max_steps=6, use_cache=use_cache))
        assert out.forward_passes <= 6
        assert all(t not in model.special_ids for t in out.candidates[0].spans[0])


def test_parrot_model_writes_its_token_everywhere_in_one_pass(parrot_checkpoint):
    model = load_checkpoint(parrot_checkpoint)
    out = sample(model.denoiser, model.spec, [model.encode("x = "), 5, model.encode("\n")],
                 SamplerConfig())
    assert model.decode(out.candidates[0].spans[0]) == "11111"
    assert out.forward_passes == 1


def test_refresh_ratio_controls_how_often_the_context_is_recomputed():
    def full_forwards(ratio: float) -> int:
        model = Scripted(words_then_eos(8, prob=0.3))
        lengths = []
        original = model.forward

        def spy(ids, positions=None, **kw):
            lengths.append(positions is None)
            return original(ids, positions=positions, **kw)

        model.forward = spy
        sample(model, SPEC, [PREFIX, 8, SUFFIX],
               SamplerConfig(threshold=1.0, max_steps=8, refresh_ratio=ratio))
        return sum(lengths)

    assert full_forwards(1.0) == 1  # once per span
    assert full_forwards(0.25) == 3  # steps 1, 4 and 7: once more than 2 of 8 slots changed


class WritesAfterItsLeft(nn.Module):
    """Knows slot k only once slot k-1 is written (words 10, 11, 12, then eos); before
    that it guesses eos with 0.6, more than its 0.5 for the first word."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids, positions=None, cache=None, logits_at=None, causal=False):
        assert cache is None and positions is None, "full forwards only (use_cache=False)"
        B, T = ids.shape
        rows = torch.arange(T) if logits_at is None else logits_at
        out = torch.full((B, len(rows), V), -30.0)
        for i, p in enumerate(rows.tolist()):
            k = p - START
            if k == 0 or int(ids[0, p - 1]) != MASK:
                tok, prob = (10 + k, 0.5) if k < 3 else (EOS, 0.95)
            else:
                tok, prob = EOS, 0.6
            out[:, i] = math.log((1 - prob) / (V - 1))
            out[:, i, tok] = math.log(prob)
        return out


def test_an_unsure_model_cannot_close_a_span_before_writing_it():
    model = WritesAfterItsLeft()
    out = sample(model, SPEC, [PREFIX, 8, SUFFIX], SamplerConfig(threshold=0.9, max_steps=8,
                                                                 use_cache=False))
    assert out.candidates[0].spans == [[10, 11, 12]]


def test_the_step_budget_forces_content_but_never_an_end_so_such_a_span_takes_longer():
    """The embedded model proposes an end everywhere past its next slot or two; forcing
    those ends to meet `max_steps` would close spans unwritten, so the budget yields."""
    out = sample(WritesAfterItsLeft(), SPEC, [PREFIX, 8, SUFFIX],
                 SamplerConfig(threshold=0.9, max_steps=2, use_cache=False))
    assert out.candidates[0].spans == [[10, 11, 12]]
    assert out.steps == 4  # a word a step, then its end: twice the budget


def test_a_span_is_never_empty_even_when_the_model_wants_to_end_at_once():
    out = sample(Scripted(lambda p, T, call: (EOS, 0.99)), SPEC, [PREFIX, 4, SUFFIX],
                 SamplerConfig())
    assert len(out.candidates[0].spans[0]) == 1


class Prefers(nn.Module):
    """Slot k of the span scores `prefs[k]` (token -> logit), everything else -30."""

    def __init__(self, prefs: dict[int, dict[int, float]]):
        super().__init__()
        self.prefs = prefs
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids, positions=None, cache=None, logits_at=None, causal=False):
        B, T = ids.shape
        positions = torch.arange(T) if positions is None else positions
        rows = positions if logits_at is None else positions[logits_at]
        out = torch.full((B, len(rows), V), -30.0)
        for i, p in enumerate(rows.tolist()):
            for tok, logit in self.prefs.get(p - START, {EOS: 5.0}).items():
                out[:, i, tok] = logit
        return out


BLANK, NEWLINE = 8, 9


def test_a_blank_span_neither_ends_nor_stops_until_it_writes_something_else():
    """On a blank line the model would answer indentation alone; with the blank tokens
    named, its end and the line break wait until a word is written."""
    prefs = {0: {BLANK: 5.0}, 1: {EOS: 5.0, NEWLINE: 4.0, 10: 3.0}, 2: {NEWLINE: 5.0}}
    line = SamplerConfig(threshold=0.5, stop_ids=(NEWLINE,))
    free = sample(Prefers(prefs), SPEC, [PREFIX, 6, SUFFIX], line)
    assert free.candidates[0].spans == [[BLANK]]
    blank = dataclasses.replace(line, blank_ids=(BLANK, NEWLINE))
    for use_cache in (True, False):
        cfg = dataclasses.replace(blank, use_cache=use_cache)
        out = sample(Prefers(prefs), SPEC, [PREFIX, 6, SUFFIX], cfg)
        assert out.candidates[0].spans == [[BLANK, 10, NEWLINE]]  # stops once it has a word


def test_a_block_of_whole_lines_does_not_end_before_a_line_break_after_content():
    """On a blank line after `def f():` the model would end after one word (`self`); with
    the line breaks named, its end waits until a line is written, and a break before any
    content does not count."""
    prefs = {0: {10: 5.0}, 1: {EOS: 5.0, 11: 3.0}, 2: {EOS: 5.0, NEWLINE: 3.0}}
    block = SamplerConfig(threshold=0.5, blank_ids=(BLANK, NEWLINE))
    assert sample(Prefers(prefs), SPEC, [PREFIX, 6, SUFFIX], block).candidates[0].spans == [[10]]
    lines = dataclasses.replace(block, line_ids=(NEWLINE,))
    for use_cache in (True, False):
        cfg = dataclasses.replace(lines, use_cache=use_cache)
        out = sample(Prefers(prefs), SPEC, [PREFIX, 6, SUFFIX], cfg)
        assert out.candidates[0].spans == [[10, 11, NEWLINE]]
    early_break = {0: {NEWLINE: 5.0}, 1: {EOS: 5.0, 10: 3.0}, 2: {EOS: 5.0, NEWLINE: 3.0}}
    out = sample(Prefers(early_break), SPEC, [PREFIX, 6, SUFFIX], lines)
    assert out.candidates[0].spans == [[NEWLINE, 10, NEWLINE]]


def test_the_blank_rule_looks_at_each_span_and_row_on_its_own():
    """A word in the first span does not let the second one end blank, nor a row another."""
    prefs = {0: {10: 5.0}, 1: {EOS: 5.0}, 3: {BLANK: 5.0}, 4: {EOS: 5.0, 11: 3.0}}
    cfg = SamplerConfig(threshold=0.5, blank_ids=(BLANK,), candidates=2)
    out = sample(Prefers(prefs), SPEC, [PREFIX, 3, [], 3, SUFFIX], cfg)
    for cand in out.candidates:
        assert cand.spans == [[10], [BLANK, 11]]


def test_the_token_healing_took_back_is_no_content_for_the_blank_rule():
    """After healing, the first slot spells the prefix's last token again (HEALED); a line
    that ends right after it is the empty answer, so the end must wait for a word."""
    HEALED = 12
    prefs = {0: {HEALED: 5.0}, 1: {NEWLINE: 5.0, 10: 3.0}, 2: {NEWLINE: 5.0}}
    line = SamplerConfig(threshold=0.5, stop_ids=(NEWLINE,), blank_ids=(BLANK, NEWLINE))
    plain = sample(Prefers(prefs), SPEC, [PREFIX, 6, SUFFIX], line)
    assert plain.candidates[0].spans == [[HEALED, NEWLINE]]  # HEALED alone counts as a word
    healed = dataclasses.replace(line, healed_token=HEALED, first_tokens=(HEALED, 13))
    out = sample(Prefers(prefs), SPEC, [PREFIX, 6, SUFFIX], healed)
    assert out.candidates[0].spans == [[HEALED, 10, NEWLINE]]
    later = {0: {10: 5.0}, 1: {HEALED: 5.0}, 2: {NEWLINE: 5.0}}  # only at the first slot
    out = sample(Prefers(later), SPEC, [PREFIX, 6, SUFFIX],
                 dataclasses.replace(healed, first_tokens=()))
    assert out.candidates[0].spans == [[10, HEALED, NEWLINE]]


def test_the_blank_rule_rules_out_an_end_only_where_it_would_take_effect():
    """Only the first open slot of a blank span loses its end tokens; a later slot keeps its
    own beliefs (an end there is not committed, its word is no surer for it)."""
    prefs = {0: {10: 2.0, 11: 1.9}, 1: {NEWLINE: 3.0, 12: 2.9}, 2: {NEWLINE: 5.0}}
    cfg = SamplerConfig(threshold=0.55, stop_ids=(NEWLINE,), blank_ids=(BLANK, NEWLINE),
                        window=0)
    out = sample(Prefers(prefs), SPEC, [PREFIX, 6, SUFFIX], cfg)
    # slot 1's 12 would pass 0.55 if its line break were ruled out there: it is not
    assert out.history[0] == 1 and out.candidates[0].spans == [[10, NEWLINE]]


def test_an_end_bias_lets_a_span_go_on_where_the_model_hesitates():
    prefs = {0: {10: 5.0}, 1: {EOS: 3.0, 11: 2.5}, 2: {EOS: 5.0}}
    cfg = SamplerConfig(threshold=0.5)
    assert sample(Prefers(prefs), SPEC, [PREFIX, 6, SUFFIX], cfg).candidates[0].spans == [[10]]
    biased = dataclasses.replace(cfg, end_bias=1.0)
    out = sample(Prefers(prefs), SPEC, [PREFIX, 6, SUFFIX], biased)
    assert out.candidates[0].spans == [[10, 11]]


def test_an_end_threshold_closes_a_span_in_the_pass_that_writes_its_last_token():
    def belief(p, T, call):  # sure of one word, less sure that the line ends after it
        k = p - START
        return (10, 0.95) if k == 0 else (EOS, 0.6)

    plain = sample(Scripted(belief), SPEC, [PREFIX, 6, SUFFIX], SamplerConfig())
    early = sample(Scripted(belief), SPEC, [PREFIX, 6, SUFFIX], SamplerConfig(end_threshold=0.5))
    late = sample(Scripted(belief), SPEC, [PREFIX, 6, SUFFIX], SamplerConfig(end_threshold=0.7))
    assert plain.candidates[0].spans == early.candidates[0].spans == [[10]]
    assert (plain.forward_passes, early.forward_passes, late.forward_passes) == (2, 1, 2)


def test_a_stop_token_is_kept_and_ends_its_span_so_the_run_stops_early():
    """Single-line mode: a committed line break ends the span, nothing after it is decoded."""
    NEWLINE = 9

    def belief(p, T, call):  # confident about a word and the line break, unsure after
        k = p - START
        return {0: (10, 0.99), 1: (NEWLINE, 0.95)}.get(k, (12 + k, 0.3))

    cfg = SamplerConfig(threshold=0.9, max_steps=64)
    stopped = sample(Scripted(belief), SPEC, [PREFIX, 8, SUFFIX],
                     SamplerConfig(threshold=0.9, max_steps=64, stop_ids=(NEWLINE,)))
    assert stopped.candidates[0].spans == [[10, NEWLINE]]
    assert stopped.forward_passes == 1
    plain = sample(Scripted(belief), SPEC, [PREFIX, 8, SUFFIX], cfg)
    assert plain.candidates[0].spans[0][:2] == [10, NEWLINE]
    assert len(plain.candidates[0].spans[0]) == 8 and plain.forward_passes == 7


def test_window_asks_logits_only_for_the_first_open_slots_of_each_span():
    net = Scripted(words_then_eos(5))
    out = sample(net, SPEC, [PREFIX, 8, SUFFIX, 6, [25]],
                 SamplerConfig(threshold=0.9, window=2))
    assert max(len(rows) for rows in net.asked) <= 4  # 2 per span
    assert net.asked[0] == [3, 4, 13, 14]  # each span's first two slots
    assert out.candidates[0].spans[0] == [10, 11, 12, 13, 14]
    # the same tokens as without the window, in more passes
    free = sample(Scripted(words_then_eos(5)), SPEC, [PREFIX, 8, SUFFIX, 6, [25]],
                  SamplerConfig(threshold=0.9))
    assert out.candidates[0].spans == free.candidates[0].spans
    assert free.forward_passes < out.forward_passes


def test_window_still_finishes_within_max_steps():
    unsure = Scripted(lambda p, T, call: (10 + p, 0.2))
    out = sample(unsure, SPEC, [PREFIX, 12, SUFFIX], SamplerConfig(window=2, max_steps=6))
    assert out.steps <= 6
    assert len(out.candidates[0].spans[0]) == 12


def _filter(bias: float):
    """A finality filter that trusts every prediction (bias > 0) or none (bias < 0)."""
    from dlm_lsp.model.finality import FinalityFilter

    f = FinalityFilter()
    with torch.no_grad():
        for p in f.parameters():
            p.zero_()
        f.net[2].bias.fill_(bias)
    return f


def test_a_trusting_finality_filter_commits_more_slots_a_step_with_the_same_answer():
    unsure = Scripted(words_then_eos(5, prob=0.6))  # below any confidence threshold
    base = SamplerConfig(threshold=0.9, window=8, max_steps=64)
    one = sample(unsure, SPEC, [PREFIX, 8, SUFFIX], base)
    fast = sample(Scripted(words_then_eos(5, prob=0.6)), SPEC, [PREFIX, 8, SUFFIX],
                  dataclasses.replace(base, filter_threshold=0.5), finality=_filter(5.0))
    slow = sample(Scripted(words_then_eos(5, prob=0.6)), SPEC, [PREFIX, 8, SUFFIX],
                  dataclasses.replace(base, filter_threshold=0.5), finality=_filter(-5.0))
    assert fast.candidates[0].spans == one.candidates[0].spans == [[10, 11, 12, 13, 14]]
    assert fast.forward_passes == 1 < slow.forward_passes == one.forward_passes


def test_the_trace_gives_features_and_the_final_tokens_to_label_them():
    from dlm_lsp.model.finality import N_FEATURES

    trace: list = []
    out = sample(Scripted(words_then_eos(3, prob=0.6)), SPEC, [PREFIX, 6, SUFFIX],
                 SamplerConfig(threshold=1.0, window=4, max_steps=64), trace=trace)
    assert len(trace) == out.steps and out.final is not None
    feats, tokens, pos, open_, picked = trace[0]
    assert feats.shape == (1, len(pos), N_FEATURES) and open_.all()
    # p1: the script's 0.6, renormalised without the mask (and the ends at the first slot)
    assert ((feats[0, :, 0] >= 0.6) & (feats[0, :, 0] < 0.63)).all()
    assert (tokens[0] == out.final[0, pos]).all()  # a confident script never changes its mind
    assert int(picked.sum()) == 1  # one token a step

