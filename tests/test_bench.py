"""The AR twin's decoding (served by the engine like the denoiser) and HumanEval scoring."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from bench.humaneval import DATA, editor_view, load_tasks, passes, program
from bench.infill import finish
from dlm_lsp.config import Settings
from dlm_lsp.model.autoregressive import is_autoregressive, sample_autoregressive
from dlm_lsp.model.checkpoint import load_checkpoint
from dlm_lsp.model.denoiser import Denoiser
from dlm_lsp.model.random_checkpoint import stdlib_texts
from dlm_lsp.model.sampler import Cancelled, SamplerConfig
from dlm_lsp.pipeline.engine import Engine, context_budget
from training.export import export
from training.shapes import init_weights, model_config
from training.tokenizer import train_tokenizer

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")


def _ar_export(directory: Path, **facts: str) -> Path:
    tok = train_tokenizer(stdlib_texts(200_000), vocab_size=500)
    model = Denoiser(model_config("tiny", tok.get_vocab_size()))
    init_weights(model, 1)
    with torch.no_grad():  # sharper logits than the init, so greedy choices are not ties
        model.lm_head.weight.mul_(30)
    args = {"objective": "ar", "mechanism": "eos", "seq_len": 128, "size": "tiny", "batch": 1,
            **facts}
    return export(model, tok, directory / "ckpt", args, 0, 0, "x")


@pytest.fixture(scope="module")
def ar_checkpoint(tmp_path_factory) -> Path:
    """A twin exported without a FIM order: trained before the option, so PSM."""
    return _ar_export(tmp_path_factory.mktemp("ar"))


@pytest.fixture(scope="module")
def spm_checkpoint(tmp_path_factory) -> Path:
    return _ar_export(tmp_path_factory.mktemp("spm"), fim_order="spm")


def _greedy_by_recomputing(model, seq: list[int], n: int) -> list[int]:  # noqa: ANN001
    want = []
    with torch.no_grad():
        for _ in range(n):
            tok = int(model.denoiser(torch.tensor([seq]), causal=True)[0, -1].argmax())
            if tok in (model.spec.eos_token_id, model.spec.pad_token_id):
                break
            want.append(tok)
            seq = [*seq, tok]
    return want


@pytest.mark.parametrize("order", ["psm", "spm"])
def test_ar_twin_cached_decoding_matches_recomputing_every_step(order, ar_checkpoint,
                                                                 spm_checkpoint):
    model = load_checkpoint(ar_checkpoint if order == "psm" else spm_checkpoint)
    assert model.spec.training["fim_order"] == order
    prefix, suffix = model.encode("def f(x):\n    return "), model.encode("\n\nprint(f(2))\n")
    got = sample_autoregressive(model, [prefix, 12, suffix], SamplerConfig())
    fp, fs, fm = (model.tokenizer.token_to_id(t)
                  for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    # the layouts written out here, independently of fim_prompt
    seq = [fp, *prefix, fs, *suffix, fm] if order == "psm" else [fp, fs, *suffix, fm, *prefix]
    want = _greedy_by_recomputing(model, seq, 12)
    assert got.candidates[0].spans == [want]
    assert got.forward_passes == len(want) + (len(want) < 12)


def test_ar_twin_without_a_known_fim_order_is_refused(spm_checkpoint):
    model = load_checkpoint(spm_checkpoint)
    model.spec.training["fim_order"] = "mps"
    with pytest.raises(ValueError, match="fim_order"):
        sample_autoregressive(model, [model.encode("x = "), 4, []], SamplerConfig())


def test_ar_twin_stops_after_a_stop_token_and_keeps_it(ar_checkpoint):
    model = load_checkpoint(ar_checkpoint)
    prefix, suffix = model.encode("def f(x):\n    return "), model.encode("\n\nprint(f(2))\n")
    free = sample_autoregressive(model, [prefix, 12, suffix], SamplerConfig())
    first = free.candidates[0].spans[0][0]
    stopped = sample_autoregressive(model, [prefix, 12, suffix], SamplerConfig(stop_ids=(first,)))
    assert stopped.candidates[0].spans == [[first]]
    assert stopped.forward_passes == 1


def test_ar_twin_neither_stops_nor_ends_while_it_has_written_only_blanks(ar_checkpoint):
    """The sampler's blank rule, on the twin: a stop token that counts as blank cannot
    close the span before something else is written."""
    model = load_checkpoint(ar_checkpoint)
    prefix, suffix = model.encode("def f(x):\n    return "), model.encode("\n\nprint(f(2))\n")
    free = sample_autoregressive(model, [prefix, 12, suffix], SamplerConfig())
    first = free.candidates[0].spans[0][0]
    cfg = SamplerConfig(stop_ids=(first,), blank_ids=(first,))
    span = sample_autoregressive(model, [prefix, 12, suffix], cfg).candidates[0].spans[0]
    assert span and span[0] != first


def test_ar_twin_does_not_end_a_block_of_whole_lines_before_a_line_break(ar_checkpoint):
    """The sampler's whole-line rule, on the twin: with its ends made likeliest it would end
    at once; with a line break named, not before it writes one after content."""
    model = load_checkpoint(ar_checkpoint)
    prefix, suffix = model.encode("def f(x):\n    "), model.encode("\n\nprint(f(2))\n")
    free = sample_autoregressive(model, [prefix, 12, suffix], SamplerConfig())
    written = free.candidates[0].spans[0]
    assert len(written) >= 2
    eager = SamplerConfig(end_bias=-50.0)
    assert sample_autoregressive(model, [prefix, 12, suffix], eager).candidates[0].spans[0] == []
    lines = dataclasses.replace(eager, line_ids=(written[1],))
    span = sample_autoregressive(model, [prefix, 12, suffix], lines).candidates[0].spans[0]
    assert span == written[:written.index(written[1]) + 1]


def test_left_to_right_decoding_sees_a_block_end_where_a_line_starts_too_shallow():
    from dlm_lsp.model.autoregressive import DedentWatch

    texts = ["x", " = 1", "\n        ", "\n", "    ", "    ", "y", "\n    z", "\n\n"]
    watch = DedentWatch(texts, column=8, rows=2)
    # row 0: a line at 8 (inside), then a blank line, then "    " + "    " + y: 8, inside;
    # row 1: a line break whose token carries a line at 4: outside at once
    steps = [(0, 7), (1, 0), (2, 0), (8, 0), (4, 0), (5, 0), (6, 0), (3, 0), (0, 0)]
    seen = [watch.update(pair) for pair in steps]
    assert [s[1] for s in seen] == [True] + [False] * 8
    assert [s[0] for s in seen] == [False] * 8 + [True]  # "\n" then "x": column 0


def test_ar_twin_fills_several_spans_left_to_right_with_n_best_rows(ar_checkpoint):
    model = load_checkpoint(ar_checkpoint)
    a, b, c = (model.encode(t) for t in ("x = ", "\ny = ", "\nprint(x, y)\n"))
    res = sample_autoregressive(model, [a, 5, b, 4, c], SamplerConfig(candidates=3))
    assert len(res.candidates) == 3
    assert all(len(cand.spans) == 2 for cand in res.candidates)
    assert all(len(cand.spans[0]) <= 5 and len(cand.spans[1]) <= 4 for cand in res.candidates)
    # the second span is decoded after the first: its prompt holds the first span's tokens
    alone = sample_autoregressive(model, [a + res.candidates[0].spans[0] + b, 4, c],
                                  SamplerConfig())
    assert alone.candidates[0].spans[0] == res.candidates[0].spans[1]


def test_ar_twin_decoding_is_cancelled_between_tokens(ar_checkpoint):
    model = load_checkpoint(ar_checkpoint)
    with pytest.raises(Cancelled):
        sample_autoregressive(model, [model.encode("x = "), 8, []], SamplerConfig(),
                              should_stop=lambda: True)


def test_engine_serves_an_ar_checkpoint_one_pass_per_token(ar_checkpoint):
    engine = Engine(Settings(model=str(ar_checkpoint), max_tokens=6))
    model = engine.load()
    assert is_autoregressive(model.spec)
    # the FIM sentinels need room in the trained window
    assert context_budget(engine.settings, model, 6) == model.spec.max_context - 6 - 3
    text = "def f(x):\n    return x\n\nprint(f(2))\n"
    out = engine.complete(text, text.index("x\n") + 1, "python")
    stats = engine.last_stats
    assert out.stats is stats and not stats.cached
    assert 1 <= stats.forward_passes <= 6
    assert stats.forward_passes in (stats.tokens, stats.tokens + 1)


def test_finish_applies_the_server_cuts_per_mode():
    text = "def f(x):\n    y = x\n\n    return y\n"
    offset = text.index("\n\n") + 1
    assert finish("    y += 1\n    z = 2", "line", text, offset, "\n    return y\n") == "    y += 1"
    block = finish("    y += 1\n    z = 2\n    return y", "block", text, offset, "\n    return y\n")
    assert block == "    y += 1\n    z = 2"
    assert finish("abc", "span", text, offset, "") == "abc"


@needs_data
@pytest.mark.parametrize("kind", ["single", "multi", "random"])
def test_canonical_middles_pass_and_a_wrong_one_fails(kind):
    tasks = load_tasks(kind, limit=3)
    assert len(tasks) == 3
    for task in tasks:
        text, offset, mode = editor_view(task)
        middle = task.middle[:-1] if mode != "span" else task.middle
        assert program(task, middle) == task.prompt + task.middle + task.suffix
        assert passes(task, middle)
    assert not passes(tasks[0], "    raise ValueError('no')\n")


def test_block_sites_put_the_cursor_on_an_empty_body_in_block_mode():
    import sysconfig

    from bench.lsp_latency import block_sites
    from dlm_lsp.pipeline.syntax import plan_span
    from dlm_lsp.protocol.positions import offset_at

    text = (Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()
    sites = block_sites(text, 5)
    assert len(sites) == 5
    for doc, line, col in sites:
        assert doc.split("\n")[line].strip() == ""
        assert plan_span(doc, offset_at(doc, line, col), "python").mode == "block"


def _curve(*points):
    return [{"threshold": t, "pass@1": p, "tokens_per_pass": tpp, "tokens_per_s": tps}
            for t, p, tpp, tps in points]


def test_targets_judge_parallelism_against_one_token_per_step_within_one_point():
    from bench.report import targets

    result = {
        "lsp": {"diffusion": {"line": {"p50_ms": 140.0, "p95_ms": 320.0}}},
        # threshold 0.5 is the most parallel within 1 point of 1.0; 0.3 lost 2 points
        "curve": _curve((1.0, 5.0, 1.0, 50), (0.5, 4.0, 3.2, 120), (0.3, 3.0, 4.0, 160)),
        "quality": {"diffusion": {"single": _curve((0.9, 4.5, 1.5, 70))[0]},
                    "ar": {"single": {"pass@1": 4.0, "tokens_per_s": 100.0}}},
    }
    got = [(t["value"], t["met"]) for t in targets(result)]
    assert got == [(140.0, True), (320.0, False), (3.2, True), (120, True)]
    result["quality"]["ar"]["single"]["pass@1"] = 6.0  # no denoiser setting is as good
    assert targets(result)[3]["met"] is False and targets(result)[3]["value"] is None


def test_targets_count_step_budgets_as_parallel_settings_too():
    from bench.report import targets

    result = {
        "lsp": {"diffusion": {"line": {"p50_ms": 140.0, "p95_ms": 250.0}}},
        "curve": _curve((1.0, 5.0, 1.0, 50), (0.5, 2.0, 1.2, 60)),
        # 8 steps: 3.1 tokens per pass within a point; 4 steps lost 3 points
        "steps": [{"steps": n, "pass@1": p, "tokens_per_pass": tpp, "tokens_per_s": tps}
                  for n, p, tpp, tps in ((8, 4.5, 3.1, 150), (4, 2.0, 5.0, 250))],
        "quality": {"diffusion": {"single": _curve((0.9, 4.5, 1.1, 55))[0]},
                    "ar": {"single": {"pass@1": 4.5, "tokens_per_s": 100.0}}},
    }
    parallel, versus_ar = targets(result)[2:]
    assert (parallel["value"], parallel["met"]) == (3.1, True)
    assert parallel["unit"] == "tokens/pass at 8 steps"
    assert (versus_ar["value"], versus_ar["met"]) == (150, True)


def test_targets_do_not_count_a_setting_whose_answers_drift_from_the_truth():
    from bench.report import targets

    def pt(th, pass1, sim, tpp, tps):
        return {"threshold": th, "pass@1": pass1, "similarity": sim,
                "tokens_per_pass": tpp, "tokens_per_s": tps}

    result = {
        "lsp": {"diffusion": {"line": {"p50_ms": 100.0, "p95_ms": 200.0}}},
        # same pass@1 everywhere; 0.3 is more parallel but its answers are further off
        "curve": [pt(1.0, 2.0, 0.20, 1.0, 50), pt(0.5, 2.0, 0.195, 1.5, 80),
                  pt(0.3, 2.0, 0.12, 3.5, 200)],
        "quality": {"diffusion": {"single": pt(0.9, 2.0, 0.20, 1.2, 60)},
                    "ar": {"single": {"pass@1": 2.0, "similarity": 0.19,
                                      "tokens_per_s": 70.0}}},
    }
    parallel, versus_ar = targets(result)[2:]
    assert (parallel["value"], parallel["met"]) == (1.5, False)
    assert (versus_ar["value"], versus_ar["met"]) == (80, True)
    assert "similarity >= 0.190" in parallel["target"]


def test_gpu_timings_run_at_a_tiny_shape_on_cpu():
    from bench.gpu import TINY, run

    result = run("cpu", TINY, embedded=None)
    step = result["step_7b_shape"]
    assert step["full_forward_ms"] > step["cached_step_ms"] > 0
    assert step["bandwidth_gbs"] > 0 and step["bandwidth_floor_ms"] > 0


def test_dlm_lsp_bench_runs_the_benchmark_from_the_checkout(capsys):
    from dlm_lsp.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    assert "python -m bench" in capsys.readouterr().out


@needs_data
def test_benchmark_suite_writes_json_markdown_and_plot_with_consistent_verdicts(tmp_path):
    import json

    from bench.suite import main

    main(["--limit", "2", "--kinds", "single", "--thresholds", "1.0", "0.5",
          "--steps", "8", "--variants", "window-4", "--requests", "2", "--reuse-sites", "2",
          "--out", str(tmp_path)])
    result = json.loads((tmp_path / "results.json").read_text())
    assert set(result["quality"]) == {"diffusion", "ar", "diffusion, fp32"}
    assert [p["threshold"] for p in result["curve"]] == [1.0, 0.5]
    assert [p["steps"] for p in result["steps"]] == [8]
    assert result["lsp"]["diffusion"]["line"]["requests"] == 2
    assert result["lsp"]["ar"]["block"]["requests"] == 2
    assert "skipped" in result["gpu"] or "step_7b_shape" in result["gpu"]
    share = result["profile"]["first_pass_end_share_by_slot"]
    assert share and all(0 <= v <= 1 for v in share)
    p50 = result["lsp"]["diffusion"]["line"]["p50_ms"]
    assert result["targets"][0]["met"] == (p50 <= 150)
    md = (tmp_path / "RESULTS.md").read_text()
    assert "## Targets" in md and "## Through the LSP server" in md
    assert all(t["target"] in md for t in result["targets"])
    png = (tmp_path / "speed_quality.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_aup_on_hand_made_points():
    import math

    from bench.aup import aup, weight

    assert aup([(1.0, 50.0)], 50.0) == 50.0  # one point: rho_1 * y_1
    assert aup([(3.0, 50.0), (1.0, 50.0)], 50.0) == 150.0  # no loss: the area, sorted first
    assert aup([(1.0, 50.0), (2.0, 44.0)], 50.0) == 50.0  # over 5 points lost: left out
    w = math.exp(-3 * (1 - 46 / 50))
    assert weight(46.0, 50.0) == w and weight(60.0, 50.0) == 1.0
    assert math.isclose(aup([(1.0, 50.0), (2.0, 46.0)], 50.0), 50 + 0.5 * (46 * w + 50))
    # the same speed-up costs a weaker set more than it gains
    assert aup([(1.0, 50.0), (2.0, 46.0)], 50.0) < aup([(1.0, 50.0), (2.0, 50.0)], 50.0)


def test_the_workspace_bench_scores_cuts_whose_answer_was_in_the_snippets_with_and_without():
    from bench.workspace import tally_reached

    copied: dict = {}
    shares = [0.0, 0.25, 0.5]
    # cut 1: the answer was in the snippets of both shares; the model copied it only at 0.5
    right = {"m share 0": False, "m share 0.25": False, "m share 0.5": True}
    tally_reached(copied, [0.25, 0.5], right, ["m"], shares)
    # cut 2: in the snippets at 0.5 only, and the model knew it without them
    right = {"m share 0": True, "m share 0.25": True, "m share 0.5": True}
    tally_reached(copied, [0.5], right, ["m"], shares)
    tally_reached(copied, [], right, ["m"], shares)  # cut 3: reached nowhere, counts nowhere
    assert copied == {"share 0.25": {"cuts": 1, "m share 0": 0, "m share 0.25": 0},
                      "share 0.5": {"cuts": 2, "m share 0": 1, "m share 0.5": 2}}


def test_the_workspace_bench_sets_server_settings_by_their_editor_names_and_refuses_bad_ones():
    from bench.workspace import with_settings
    from dlm_lsp.config import Settings

    got = with_settings(Settings(threads=1), ["copyThreshold=0.05", "lookupDrafts=2"])
    assert (got.copy_threshold, got.lookup_drafts, got.threads) == (0.05, 2, 1)
    with pytest.raises(SystemExit, match="copyThreshold"):
        with_settings(Settings(), ["copyThreshold=2"])
    with pytest.raises(SystemExit, match="unknown setting"):
        with_settings(Settings(), ["copyThreshhold=0.1"])


def test_the_reach_counts_answers_found_in_the_snippets_by_kind_and_anywhere_else():
    from bench.workspace import answer_reach, index_package

    verbose = "    parser.add_argument('--verbose', action='store_true')\n"
    files = {"cli/a.py": f"def build(parser):\n{verbose}",
             "cli/b.py": f"def extend(parser):\n{verbose}"
                         "    total = compute_something_unique(42)\n    n = 1\n"}
    b = files["cli/b.py"]
    line_cut = b.index("action=")
    nowhere_cut = b.index("compute_")
    short_cut = b.rindex("1\n")
    cuts = [("cli/b.py", line_cut, b.index("\n", line_cut)),  # in a.py: a line snippet holds it
            ("cli/b.py", nowhere_cut, b.index("\n", nowhere_cut)),  # written nowhere else
            ("cli/b.py", short_cut, short_cut + 1)]  # under 8 characters: not counted
    got = answer_reach(index_package(files), files, cuts, [64, 256],
                       lambda text: list(range(len(text) // 4 + 1)))
    assert got["cuts"] == 2 and got["anywhere"] == 50.0
    assert got["in_snippets"] == {"64": 50.0, "256": 50.0}
    assert got["by_kind"]["64"]["line"] == 50.0
    none = answer_reach(index_package(files), files, cuts, [0], lambda t: [0] * len(t))
    assert none["in_snippets"] == {"0": 0.0}  # no budget, no snippets


def test_the_soak_growth_is_the_trend_of_the_last_hour_not_one_sample_in_a_dip():
    from bench.soak import growth_mb

    flat = [{"minute": float(m), "http": 450.0 + (m % 3) * 0.5} for m in range(121)]
    flat[60]["http"] = 410.0  # a heap trim's dip right where the last hour begins
    got = growth_mb(flat, "http", 60)
    assert got["end_samples_mb"] == 40.0 and abs(got["trend_mb"]) <= 0.5
    assert (got["min_mb"], got["max_mb"]) == (410.0, 451.0)
    growing = [{"minute": float(m), "http": 400.0 + m / 2} for m in range(121)]
    assert growth_mb(growing, "http", 60)["trend_mb"] == 30.0  # 0.5 MB a minute
    assert growth_mb(growing[:50], "http", 60) is None  # shorter than an hour


BLOCK_FILE = """import os


def size(path):
    st = os.stat(path)

    return st.st_size


def long():
""" + "".join(f"    x{i} = {i}\n" for i in range(12))


def test_a_block_case_cuts_the_whole_body_after_its_opener():
    import random

    from bench.blocks import MAX_BODY_LINES, cut_block

    cuts = {cut_block(BLOCK_FILE, random.Random(seed)) for seed in range(200)} - {None}
    assert len(cuts) == 1  # `long` has more than MAX_BODY_LINES lines, `import` no body
    a, b = cuts.pop()
    assert BLOCK_FILE[:a].endswith("def size(path):\n    ")
    assert BLOCK_FILE[a:b] == "st = os.stat(path)\n\n    return st.st_size"
    assert BLOCK_FILE[b:].startswith("\n\n\ndef long():")
    assert 12 > MAX_BODY_LINES


def test_block_scores_count_first_lines_bodies_and_answers():
    from bench.blocks import BlockCase, score

    cases = [BlockCase("p", "f.py", "", "a = 1\n    return a", ""),
             BlockCase("p", "f.py", "", "pass", ""),
             BlockCase("p", "f.py", "", "x()\n    y()", "")]
    got = score(["a = 1\n    return b", "pass\n", ""], cases)
    assert got["first_line_exact"] == round(100 * 2 / 3, 1)
    assert got["body_exact"] == round(100 / 3, 1) and got["answered"] == round(200 / 3, 1)
    assert 0 < got["similarity"] < 1
    assert score(["x()\n    y()"], cases[2:])["similarity"] == 1.0
