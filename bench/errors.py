"""Where one model loses to another on single lines: every answer put in one error class.

    python -m bench.errors [--diffusion embedded] [--ar bench/models/ar-twin]
                           [--extra-heldout 700] [--out training/results/errors.md]

Both models complete the same single-line cases through ``bench.infill`` (the server's
context, healing, sampler and cuts): the obvious lines, the held-out rest-of-line cases and,
with ``--extra-heldout N``, N more cuts drawn the same way from the held-out packages with
another seed (needs ``runs/corpus``). Each answer gets one class (:func:`classify`), and the
report counts, for the cases one model gets right and the other wrong, what the wrong one
did, with examples.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from dlm_lsp.pipeline.postprocess import first_line, repetitive

_LEX = re.compile(r"\w+|[^\s\w]")

# In the order they are tested: the first that fits is the class.
CLASSES = {
    "exact": "the whole rest of the line, exactly",
    "declined: blank": "no answer: the model wrote nothing but blanks or a line break",
    "declined: repetition": "no answer: a short unit written over and over, dropped",
    "declined: dropped": "no answer: every cut of it failed the parse check or the suffix",
    "suffix written again": "the line right, then the start of the code after the cursor",
    "too long": "the line right, then more",
    "ended early": "a correct start, ended too early",
    "tokenization at the cursor": "wrong from its first token, where the cursor splits a "
                                  "token of the line",
    "wrong first token": "wrong from its first token",
    "wrong later": "a correct first token, wrong after it",
}


@dataclass
class Case:
    set: str
    name: str
    prefix: str
    middle: str
    suffix: str


@dataclass
class Answer:
    text: str  # what the editor would show ("" when declined)
    raw: str  # the model's text before the cuts
    forward_passes: int
    tokens: int


def lexemes(text: str) -> list[str]:
    return _LEX.findall(text)


def splits_token(prefix: str, middle: str) -> bool:
    """Whether the cursor sits inside a lexical token of the line (a word cut in two, or a
    space the next word's token would carry): where token healing must do its work."""
    if not prefix or not middle:
        return False
    before, after = prefix[-1], middle[0]
    word = re.compile(r"\w")
    return bool(word.match(before) and word.match(after)) or (before == " " and after != " ")


def classify(case: Case, answer: Answer) -> str:
    """One class of :data:`CLASSES` for `answer` to `case` (single-line mode)."""
    want, got = case.middle.rstrip(), answer.text.rstrip()
    if got == want:
        return "exact"
    if not got:
        raw = first_line(answer.raw)
        if not raw.strip():
            return "declined: blank"
        if repetitive(raw):
            return "declined: repetition"
        return "declined: dropped"
    line_suffix = first_line(case.suffix).strip()
    if got.startswith(want):
        extra = got[len(want):].strip()
        if line_suffix and extra and line_suffix.startswith(extra[: len(line_suffix)]):
            return "suffix written again"
        return "too long"
    if want.startswith(got):
        return "ended early"
    w, g = lexemes(want), lexemes(got)
    if not g or not w or g[0] != w[0]:
        return "tokenization at the cursor" if splits_token(case.prefix, case.middle) \
            else "wrong first token"
    return "wrong later"


def load_all(extra_heldout: int, corpus: Path) -> list[Case]:
    from bench import heldout, obvious

    cases = [Case("obvious", c.name, c.prefix, c.middle, c.suffix)
             for c in obvious.load_cases()]
    cases += [Case("heldout", f"{c.package}:{i}", c.prefix, c.middle, c.suffix)
              for i, c in enumerate(heldout.load_cases())]
    if extra_heldout:
        more = heldout.make_cases(corpus, extra_heldout, seed=1)
        cases += [Case("heldout-extra", f"{c.package}:{i}", c.prefix, c.middle, c.suffix)
                  for i, c in enumerate(more)]
    return cases


def run_model(path: str, name: str, cases: list[Case], threads: int) -> list[Answer]:
    import torch

    from bench.infill import Infiller
    from dlm_lsp.config import Settings
    from dlm_lsp.pipeline.engine import Engine

    torch.set_num_threads(threads)
    infiller = Infiller(Engine(Settings(model=path, threads=threads)), name)
    out = []
    for case in tqdm(cases, desc=name):
        r = infiller(case.prefix + case.suffix, len(case.prefix), "line")
        out.append(Answer(r.text, r.raw, r.forward_passes, r.generated_tokens))
    return out


def tabulate(cases: list[Case], answers: dict[str, list[Answer]]) -> dict:
    """Class counts per model and set, and the classes of each model where the other one
    is right and it is not."""
    names = list(answers)
    classes = {n: [classify(c, a) for c, a in zip(cases, answers[n], strict=True)]
               for n in names}
    sets = sorted({c.set for c in cases})
    out: dict = {"counts": {}, "losses": {}, "examples": {}}
    for n in names:
        out["counts"][n] = {s: dict(Counter(k for c, k in zip(cases, classes[n], strict=True)
                                            if c.set == s)) for s in sets}
    for loser, winner in ((names[0], names[1]), (names[1], names[0])) if len(names) == 2 else ():
        lost = [i for i in range(len(cases))
                if classes[winner][i] == "exact" and classes[loser][i] != "exact"]
        out["losses"][loser] = dict(Counter(classes[loser][i] for i in lost))
        examples: dict[str, list] = {}
        for i in lost:
            ex = examples.setdefault(classes[loser][i], [])
            if len(ex) < 3:
                c = cases[i]
                ex.append({"case": f"{c.set}/{c.name}",
                           "line": c.prefix.rsplit("\n", 1)[-1] + "█",
                           "want": c.middle, loser: answers[loser][i].text,
                           f"{loser} raw": first_line(answers[loser][i].raw)})
        out["examples"][loser] = examples
    return out


def report(table: dict, n_cases: dict[str, int], date: str, machine: str,
           before: dict | None = None, before_label: str = "") -> str:
    """The Markdown report; with `before` (an earlier run's table) each count shows the
    earlier one beside it."""
    names = list(table["counts"])
    lines = ["# Where the denoiser loses to its AR twin (single lines)", "",
             f"`python -m bench.errors`, {date}, {machine}. Every answer is put in the first "
             "class that fits (`bench/errors.py`, `classify`):", ""]
    lines += [f"- **{k}**: {v}" for k, v in CLASSES.items()]
    lines += ["", "## All answers, per set", ""]
    if before:
        lines += [f"Each cell: now (before: {before_label}).", ""]
    sets = sorted(n_cases)
    header = "| class | " + " | ".join(f"{n} {s} ({n_cases[s]})" for n in names for s in sets)
    lines += [header + " |", "|---" * (1 + len(names) * len(sets)) + "|"]
    for k in CLASSES:
        row = []
        for n in names:
            for s in sets:
                cell = str(table["counts"][n][s].get(k, 0))
                if before and s in before["counts"].get(n, {}):
                    cell += f" ({before['counts'][n][s].get(k, 0)})"
                row.append(cell)
        lines.append(f"| {k} | " + " | ".join(row) + " |")
    lines += ["", "## Where one is right and the other is not", ""]
    lines += ["| the wrong one's class | " + " | ".join(
        f"{n} wrong, {m} right" for n, m in ((names[0], names[1]), (names[1], names[0])))
        + " |", "|---|---|---|"]
    for k in CLASSES:
        if k == "exact":
            continue
        lines.append(f"| {k} | " + " | ".join(str(table["losses"][n].get(k, 0))
                                               for n in names) + " |")
    lines.append("| **total** | " + " | ".join(
        str(sum(table["losses"][n].values()))
        + (f" ({sum(before['losses'][n].values())})" if before else "")
        for n in names) + " |")
    for n in names:
        lines += ["", f"### Examples: {n} wrong where the other is right", ""]
        for k, exs in table["examples"][n].items():
            lines.append(f"- **{k}**")
            for e in exs:
                lines.append(f"  - `{e['case']}`: `{e['line'].strip()}` wants "
                             f"`{e['want']}`, got `{e[n]}` (raw `{e[n + ' raw']}`)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import time

    from bench.suite import machine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--diffusion", default="dlm_lsp/models/embedded")
    ap.add_argument("--ar", default="bench/models/ar-twin")
    ap.add_argument("--extra-heldout", type=int, default=0)
    ap.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("training/results/errors.md"))
    ap.add_argument("--before", type=Path, default=None,
                    help="an earlier run's runs/errors.json: its counts beside the new ones")
    ap.add_argument("--before-label", default="the earlier run")
    args = ap.parse_args(argv)
    before = json.loads(args.before.read_text())["table"] if args.before else None
    cases = load_all(args.extra_heldout, args.corpus)
    answers = {"denoiser": run_model(args.diffusion, "denoiser", cases, args.threads),
               "twin": run_model(args.ar, "twin", cases, args.threads)}
    table = tabulate(cases, answers)
    n_cases = dict(Counter(c.set for c in cases))
    m = machine(args.threads)
    where = f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}"
    args.out.write_text(report(table, n_cases, time.strftime("%Y-%m-%d"), where, before,
                               args.before_label))
    raw = Path("runs/errors.json")  # the answers themselves, for a closer look
    raw.write_text(json.dumps({"cases": [asdict(c) for c in cases],
                               "answers": {n: [asdict(a) for a in v] for n, v in answers.items()},
                               "table": table}) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
