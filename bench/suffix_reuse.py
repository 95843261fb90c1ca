"""How far below the cursor must an edit be before the last completion can be served again?

    python -m bench.suffix_reuse [--model embedded] [--sites 40] [--file argparse.py]

For single-line cursors in a standard-library file, it decodes once, deletes the line
`d` lines below the cursor, decodes again from scratch and counts how often the two
completions are the same text. Reusing the last completion after an edit at distance `d`
(``suffixReuseLines`` < d) is right exactly as often as they agree, and saves a whole decode.
"""

from __future__ import annotations

import argparse
import json
import sysconfig
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.lsp_latency import cursors
from dlm_lsp.config import Settings
from dlm_lsp.pipeline.engine import Engine

DISTANCES = (1, 2, 4, 8, 16, 32)


def _fresh(engine: Engine, text: str, offset: int) -> str:
    engine.forget()
    out = engine.complete(text, offset, "python")
    return out.candidates[0].text if out.candidates else ""


def agreement(engine: Engine, text: str, sites: int,
              distances: tuple[int, ...] = DISTANCES) -> list[dict[str, Any]]:
    """Per distance: sites, how many fresh decodes matched the completion before the edit."""
    lines = text.split("\n")
    starts = [0]
    for ln in lines[:-1]:
        starts.append(starts[-1] + len(ln) + 1)
    same = dict.fromkeys(distances, 0)
    count = dict.fromkeys(distances, 0)
    for line, col in tqdm(cursors(text, sites), desc="suffix reuse", leave=False):
        offset = starts[line] + col
        before = _fresh(engine, text, offset)
        for d in distances:
            if line + d >= len(lines):
                continue
            edited = "\n".join(lines[:line + d] + lines[line + d + 1:])
            count[d] += 1
            same[d] += _fresh(engine, edited, offset) == before
    return [{"distance_lines": d, "sites": count[d], "same": same[d],
             "agreement": round(same[d] / count[d], 3) if count[d] else None}
            for d in distances]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--file", default="argparse.py")
    ap.add_argument("--sites", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    engine = Engine(Settings(model=args.model, threads=args.threads))
    text = (Path(sysconfig.get_paths()["stdlib"]) / args.file).read_text()
    print(json.dumps(agreement(engine, text, args.sites), indent=1))


if __name__ == "__main__":
    main()
