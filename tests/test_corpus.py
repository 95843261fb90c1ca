"""Corpus sources: licence checks, pinned downloads, sdists, held-out packages, contamination."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from bench.obvious import load_cases, parse_cases
from training import corpus as corpus_mod
from training.contamination import ContaminationIndex, evaluation_texts
from training.corpus import build, dist_files, vendored_copy
from training.sources import PinnedSource, canonical_url, choose_file, download, is_permissive

CODE = "def area(w, h):\n    return w * h\n"


@pytest.mark.parametrize("licence,ok", [
    ("MIT", True), ("BSD-3-Clause", True), ("Apache-2.0 AND MIT", True),
    ("Python Software Foundation License", True), ("", False), ("LGPL-2.1-only", False),
    ("BSD License AND GNU General Public License (GPL)", False), ("MPL-2.0", False),
    ("Other/Proprietary License", False)])
def test_only_permissive_licences_are_accepted(licence, ok):
    assert is_permissive(licence) is ok


def test_sdists_are_preferred_unless_huge_and_mirror_urls_become_canonical():
    sdist = {"packagetype": "sdist", "filename": "a-1.tar.gz", "size": 10}
    wheel = {"packagetype": "bdist_wheel", "filename": "a-1-py3-none-any.whl", "size": 5}
    assert choose_file([wheel, sdist]) is sdist
    assert choose_file([wheel, {**sdist, "size": 10**9}]) is wheel
    assert choose_file([{"packagetype": "bdist_wheel", "filename": "a-1-cp311-linux.whl"}]) is None
    assert canonical_url("../../packages/packages/ab/cd/a-1.tar.gz") == \
        "https://files.pythonhosted.org/packages/ab/cd/a-1.tar.gz"


def _sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _pinned(path: Path, name: str, split: str = "train") -> PinnedSource:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return PinnedSource(name, "1.0", path.name, path.as_uri(), digest, "MIT", split)


def test_a_download_that_does_not_match_its_pin_is_refused(tmp_path: Path):
    src = _sdist(tmp_path / "pkg-1.0.tar.gz", {"pkg-1.0/pkg/a.py": CODE})
    pinned = _pinned(src, "pkg")
    assert download(pinned, tmp_path / "dists").read_bytes() == src.read_bytes()
    bad = PinnedSource(**{**pinned.__dict__, "sha256": "0" * 64,
                          "filename": "other-1.0.tar.gz"})
    with pytest.raises(ValueError, match="does not match"):
        download(bad, tmp_path / "dists")
    assert not list((tmp_path / "dists").glob("other*"))


def test_sdist_paths_lose_their_top_folder_and_wheels_keep_theirs(tmp_path: Path):
    src = _sdist(tmp_path / "pkg-1.0.tar.gz", {"pkg-1.0/pkg/b.py": CODE, "pkg-1.0/README": "x",
                                               "pkg-1.0/pkg/a.py": CODE})
    assert [p for p, _ in dist_files(src)] == ["pkg/a.py", "pkg/b.py"]
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/a.py", CODE)
    assert [p for p, _ in dist_files(wheel)] == ["pkg/a.py"]


def test_vendored_copies_of_held_out_packages_are_recognised():
    assert vendored_copy("pip/_vendor/arrow/parser.py", {"arrow"})
    assert not vendored_copy("arrowhead/parser.py", {"arrow"})
    assert not vendored_copy("pip/_vendor/requests/api.py", {"arrow"})


def test_held_out_packages_stay_out_of_training_with_their_copies(tmp_path: Path):
    held_code = "def held_out_function(x):\n    return x + 41\n"
    held = _sdist(tmp_path / "held-1.0.tar.gz", {"held-1.0/held/core.py": held_code})
    train = _sdist(tmp_path / "big-1.0.tar.gz", {
        "big-1.0/big/main.py": CODE,
        "big-1.0/big/copy_of_held.py": held_code,  # identical file: a duplicate
        "big-1.0/big/_vendor/held/core.py": held_code + "# patched\n"})  # vendored
    sources = [_pinned(train, "big"), _pinned(held, "held", "heldout")]
    manifest = build(tmp_path / "corpus", tmp_path / "dists", sources,
                     ContaminationIndex.build({}), stdlib=False)
    rows = [json.loads(x) for x in (tmp_path / "corpus" / "train.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows]
    assert corpus_mod.normalise(CODE) in texts
    assert all("held_out_function" not in t for t in texts)
    held_rows = (tmp_path / "corpus" / "heldout.jsonl").read_text().splitlines()
    assert len(held_rows) == 1 and "held_out_function" in held_rows[0]
    big = next(s for s in manifest["sources"] if s["name"] == "big==1.0")
    assert big["dropped"] == {"duplicate": 1, "vendored held-out package": 1}
    assert big["license"] == "MIT" and big["sha256"] == sources[0].sha256


def test_files_sharing_a_long_run_with_an_evaluation_text_are_dropped(tmp_path: Path):
    solution = ("def below_zero(operations):\n    balance = 0\n    for op in operations:\n"
                "        balance += op\n        if balance < 0:\n            return True\n"
                "    return False\n")
    index = ContaminationIndex.build({"eval": [solution]}, n=24)
    assert index.matches("import os\n\n" + solution + "\nprint(1)\n") == ["eval:0"]
    assert index.matches(CODE) == []
    leaked = _sdist(tmp_path / "leak-1.0.tar.gz", {"leak-1.0/l/a.py": solution,
                                                   "leak-1.0/l/b.py": CODE})
    manifest = build(tmp_path / "c", tmp_path / "d", [_pinned(leaked, "leak")], index,
                     stdlib=False)
    assert manifest["contamination"]["files_dropped"] == 1
    assert manifest["files"]["train"] == 1


def test_evaluation_sets_include_humaneval_and_the_obvious_lines():
    sets = evaluation_texts()
    assert len(sets["obvious"]) == len(load_cases()) >= 60
    if "humaneval" in sets:  # needs ../shared/data
        assert len(sets["humaneval"]) == 164


def test_obvious_cases_parse_with_one_line_each():
    cases = parse_cases("# header\n\n### a\nx = ⟦1⟧\nprint(x)\n### b\nfoo(⟦a, b)⟧\n")
    assert [(c.name, c.prefix, c.middle, c.suffix) for c in cases] == [
        ("a", "x = ", "1", "\nprint(x)\n"), ("b", "foo(", "a, b)", "\n")]
    with pytest.raises(ValueError):
        parse_cases("### c\nx = ⟦1\n2⟧\n")
    names = [c.name for c in load_cases()]
    assert len(names) == len(set(names))
