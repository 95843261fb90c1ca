"""Drafts looked up in the context: the lookup, the run a step accepts, and the sampler with
scripted denoisers (``test_sampler.Scripted``)."""

import torch
from test_sampler import EOS, SPEC, Scripted

from dlm_lsp.model.drafts import ContextIndex, accepted_run, span_drafts
from dlm_lsp.model.sampler import SamplerConfig, sample

# the prefix holds 20 21 10 11 12 13 14 23 once, then ends with 20 21 at the slots
PREFIX = [20, 21, 10, 11, 12, 13, 14, 23, 20, 21]
SUFFIX = [24, 25]
START = len(PREFIX)


def test_a_lookup_returns_what_followed_each_occurrence_of_the_key_nearest_first():
    row = [5, 6, 7, 5, 6, 8, 9, 2, 2, 5, 6]
    fixed = [True] * 7 + [False, False] + [True, True]
    index = ContextIndex(row, fixed)
    # the key 5 6 at 0, 3 and 9; the last has no fixed text after it; the one at 3 is nearer
    assert index.drafts([5, 6], cursor=7, length=4) == [[8, 9], [7, 5, 6, 8]]
    assert index.drafts([5, 6], cursor=7, length=4, limit=1) == [[8, 9]]
    assert index.drafts([6, 5], cursor=7, length=4) == []
    assert index.drafts([], cursor=7, length=4) == []


def test_an_occurrence_that_agrees_longer_before_the_key_comes_before_a_nearer_one():
    # 7 8 9 5 6 -> 1 far from the cursor, 3 5 6 -> 2 next to it; the text written before
    # the key ends 7 8 9, as a snippet's line that starts as the cursor's line does
    row = [7, 8, 9, 5, 6, 1, 4, 4, 3, 5, 6, 2, 0, 0]
    index = ContextIndex(row, [True] * 12 + [False, False])
    assert index.drafts([5, 6], cursor=12, length=1) == [[2], [1]]
    assert index.drafts([5, 6], cursor=12, length=1, before=[7, 8, 9]) == [[1], [2]]
    assert index.drafts([5, 6], cursor=12, length=1, before=[7, 8, 9], limit=1) == [[1]]
    # the nearer occurrence is the one preceded by 3; with reach 0 every occurrence ties
    assert index.drafts([5, 6], cursor=12, length=1, before=[3], reach=1) == [[2], [1]]
    assert index.drafts([5, 6], cursor=12, length=1, before=[7, 8, 9], reach=0) == [[2], [1]]


def test_a_span_prefers_the_draft_whose_context_matches_its_written_line():
    # the slots 15, 16 follow ... 7 8 9 5 6; the file has 5 6 -> 2 nearer, 7 8 9 5 6 -> 1
    row = [7, 8, 9, 5, 6, 1, 3, 5, 6, 2, 7, 8, 9, 5, 6, 0, 0]
    fixed = [True] * 15 + [False, False]
    is_open = [False] * 15 + [True, True]
    first, drafts = span_drafts(ContextIndex(row, fixed), row, [15, 16], is_open, 2)
    assert first == 15 and drafts[0] == [1, 3]


def test_a_span_looks_up_its_longest_key_first_and_shorter_ones_after():
    row = [1, 2, 3, 9, 4, 2, 3, 8, 7, 2, 3, 0, 0, 0]  # the slots: 11, 12, 13
    fixed = [True] * 11 + [False] * 3
    is_open = [False] * 11 + [True] * 3
    first, drafts = span_drafts(ContextIndex(row, fixed), row, [11, 12, 13], is_open, 3)
    assert first == 11
    # 7 2 3 occurs nowhere else; 2 3 twice (the nearer first), 3 adds nothing new
    assert drafts == [[8, 7, 2], [9, 4, 2]]
    assert span_drafts(ContextIndex(row, fixed), row, [11, 12, 13], is_open, 3,
                       shortest=3) == (11, [])


def test_a_written_slot_before_the_first_open_one_is_part_of_the_key():
    row = [4, 5, 6, 4, 5, 0, 0]  # slot 5 written (5), slot 6 open
    index = ContextIndex(row, [True] * 5 + [False, False])
    is_open = [False] * 6 + [True]
    row[5] = 5
    first, drafts = span_drafts(index, row, [5, 6], is_open, 2)
    assert first == 6 and drafts == [[6]]  # key 4 5 (the written slot) -> 6


def test_a_run_goes_on_while_the_proposals_agree_with_the_draft():
    draft = [10, 11, 12, 13]
    assert accepted_run(draft, [-1] * 4, [10, 11, 99, 13], [True] * 4) == 2
    assert accepted_run(draft, [-1] * 4, [10, 11, 12, 13], [True, True, False, True]) == 2
    assert accepted_run(draft, [-1] * 4, [99, 11, 12, 13], [True] * 4) == 0
    # a slot written before must hold the draft's token for the run to go past it
    assert accepted_run(draft, [-1, 11, -1, -1], [10, -1, 12, 7], [True] * 4) == 3
    assert accepted_run(draft, [-1, 7, -1, -1], [10, -1, 12, 13], [True] * 4) == 1


def test_copying_takes_a_draft_token_the_model_finds_likely_enough_but_never_an_end():
    probs = torch.full((3, 16), 0.01)
    probs[:, 9] = 0.5  # the model's own choice everywhere
    probs[0, 10] = probs[1, 11] = 0.3
    probs[2, EOS] = 0.3
    written, proposals, ok = [-1] * 3, [9, 9, 9], [True] * 3
    assert accepted_run([10, 11, EOS], written, proposals, ok) == 0
    assert accepted_run([10, 11, EOS], written, proposals, ok, probs, 0.2) == 3
    assert accepted_run([10, 11, EOS], written, proposals, ok, probs, 0.4) == 0
    assert accepted_run([10, 11, EOS], written, proposals, ok, probs, 0.2,
                        proposed_only=frozenset({EOS})) == 2
    # where the model would end the span, a copy goes on
    assert accepted_run([10, 11, 9], written, [9, EOS, 9], ok, probs, 0.2,
                        proposed_only=frozenset({EOS})) == 3


def unsure_words(n: int, prob: float = 0.6):
    """Tokens 10, 11, ... in the first `n` slots, then eos, each below the 0.9 threshold."""
    def belief(p, T, call):
        k = p - START
        return (10 + k, prob) if 0 <= k < n else (EOS, prob)
    return belief


def test_a_span_written_before_in_the_context_takes_fewer_passes_with_the_same_answer():
    pieces = [PREFIX, 8, SUFFIX]
    plain = sample(Scripted(unsure_words(5)), SPEC, pieces, SamplerConfig())
    drafted = sample(Scripted(unsure_words(5)), SPEC, pieces, SamplerConfig(lookup=3))
    assert plain.candidates[0].spans == drafted.candidates[0].spans == [[10, 11, 12, 13, 14]]
    assert plain.forward_passes == 6  # one token a pass: nothing is sure enough
    # the draft 10 11 12 13 14 23 ...: five agree in the first pass, the end comes next
    assert drafted.forward_passes == 2 and drafted.history[0] == 5


def test_a_draft_the_model_disagrees_with_changes_nothing():
    def other(p, T, call):
        k = p - START
        return (15 + k, 0.6) if 0 <= k < 3 else (EOS, 0.6)
    pieces = [PREFIX, 8, SUFFIX]
    plain = sample(Scripted(other), SPEC, pieces, SamplerConfig())
    drafted = sample(Scripted(other), SPEC, pieces, SamplerConfig(lookup=3))
    assert drafted.candidates[0].spans == plain.candidates[0].spans == [[15, 16, 17]]
    assert drafted.forward_passes == plain.forward_passes


def test_copying_writes_the_draft_where_the_model_hesitates():
    def hesitant(p, T, call):
        k = p - START
        return (15 + k, 0.2) if 0 <= k < 5 else (EOS, 0.9)
    pieces = [PREFIX, 8, SUFFIX]
    cfg = SamplerConfig(lookup=3, window=8)
    # the other tokens get 0.8 / 31 each: 0.025 of probability
    own = sample(Scripted(hesitant), SPEC, pieces, cfg)
    # copying uses only keys of the full length: 20 21 (23 20 21 occurs nowhere else)
    copied = sample(Scripted(hesitant), SPEC, pieces, SamplerConfig(lookup=2, window=8,
                                                                     copy_threshold=0.02))
    assert sample(Scripted(hesitant), SPEC, pieces, SamplerConfig(
        lookup=3, window=8, copy_threshold=0.02)).candidates[0].spans == own.candidates[0].spans
    assert own.candidates[0].spans == [[15, 16, 17, 18, 19]]
    # copied up to 14; 23 follows in the context, but there the model is sure of its end,
    # which closes the span in the same pass
    assert copied.candidates[0].spans == [[10, 11, 12, 13, 14]]
    assert copied.forward_passes == 1 and own.forward_passes == 5  # its end closes with 19


def test_a_draft_is_taken_only_within_the_unmask_window():
    pieces = [PREFIX, 8, SUFFIX]
    out = sample(Scripted(unsure_words(5)), SPEC, pieces, SamplerConfig(lookup=3, window=2))
    assert out.candidates[0].spans == [[10, 11, 12, 13, 14]]
    assert out.history[:3] == [2, 2, 1]  # the last run ends at 14, where the draft goes on


def test_a_draft_run_starts_only_where_the_model_writes_the_first_open_slot_itself():
    def far_first(p, T, call):  # sure of the fourth slot, then surest of the first
        k = p - START
        if k == 3:
            return 13, 0.95
        if k == 0:
            return 10, 0.7
        return (10 + k, 0.6) if 0 <= k < 5 else (EOS, 0.6)
    pieces = [PREFIX, 8, SUFFIX]
    plain = sample(Scripted(far_first), SPEC, pieces, SamplerConfig())
    drafted = sample(Scripted(far_first), SPEC, pieces, SamplerConfig(lookup=3))
    assert plain.candidates[0].spans == drafted.candidates[0].spans == [[10, 11, 12, 13, 14]]
    assert plain.history == [1, 1, 1, 1, 1, 1]
    # the first step writes only the fourth slot; the second the first and, with the draft,
    # the second, third and fifth (the fourth, written before, agrees with the draft)
    assert drafted.history == [1, 4, 1]
