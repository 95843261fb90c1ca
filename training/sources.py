"""Pinned PyPI sources for the training corpus: licence check, pinning and verified download.

``training/corpus_sources.json`` lists every package the corpus is built from, pinned to one
file (an sdist, or a pure-Python wheel) with its version, licence, URL and sha256. Packages
are pinned once from PyPI's JSON API; a package whose licence is not permissive (MIT, BSD,
Apache, PSF, ISC, Zlib, ...) is refused. Downloads are checked against the pinned digest.

    python -m training.sources pin tornado alembic ...          # add packages to the list
    python -m training.sources pin --heldout openpyxl ...        # held out as whole packages
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import re
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

SOURCES_FILE = Path(__file__).with_name("corpus_sources.json")
PYPI_JSON = "https://pypi.org/pypi/{name}/json"
FILES_HOST = "https://files.pythonhosted.org/packages/"
MAX_SDIST_BYTES = 60_000_000  # beyond this the (smaller) wheel is taken instead

# Licence words; a copyleft word anywhere wins over a permissive one ("BSD OR GPL" is refused
# too: we only take what every reading allows).
PERMISSIVE = ("MIT", "BSD", "APACHE", "PSF", "PYTHON SOFTWARE FOUNDATION", "ISC", "ZLIB",
              "0BSD", "UNLICENSE", "CC0", "HPND", "ZPL", "ZOPE PUBLIC", "PUBLIC DOMAIN")
COPYLEFT = ("GPL", "MPL", "MOZILLA", "EPL", "ECLIPSE", "EUPL", "CDDL", "AFFERO", "COMMONS CLAUSE",
            "PROPRIETARY", "SSPL", "BUSL")


@dataclass
class PinnedSource:
    """One package of the corpus, pinned to one distribution file."""

    name: str
    version: str
    filename: str
    url: str
    sha256: str
    license: str
    split: str = "train"  # "heldout": the whole package is kept out of training

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def licence_of(info: dict) -> str:
    """The licence a PyPI project declares: SPDX expression, else classifiers, else text."""
    if info.get("license_expression"):
        return info["license_expression"]
    classifiers = [c.split("::")[-1].strip() for c in info.get("classifiers", [])
                   if c.startswith("License ::")]
    if classifiers:
        return " AND ".join(classifiers)
    return (info.get("license") or "").strip().splitlines()[0][:80] if info.get("license") else ""


def is_permissive(licence: str) -> bool:
    """True when `licence` names a permissive licence and nothing copyleft."""
    text = licence.upper()
    if not text or any(word in text for word in COPYLEFT):
        return False
    return any(word in text for word in PERMISSIVE)


def canonical_url(url: str) -> str:
    """PyPI file URLs as files.pythonhosted.org addresses (mirrors may answer relative ones)."""
    if "packages/packages/" in url:
        return FILES_HOST + url.split("packages/packages/", 1)[1]
    if url.startswith("../") or url.startswith("/"):
        return FILES_HOST + url.split("packages/", 1)[1]
    return url


def choose_file(files: list[dict]) -> dict | None:
    """The sdist (it carries tests and examples) unless it is huge, else a pure wheel."""
    sdists = [f for f in files if f["packagetype"] == "sdist"]
    wheels = [f for f in files if re.search(r"-py(2\.)?py3-none-any\.whl$|-py3-none-any\.whl$",
                                            f["filename"])]
    if sdists and sdists[0]["size"] <= MAX_SDIST_BYTES:
        return sdists[0]
    return wheels[0] if wheels else (sdists[0] if sdists else None)


def pin(name: str, split: str = "train") -> PinnedSource | str:
    """Pin the newest release of `name`, or say why it cannot be used."""
    try:
        with urllib.request.urlopen(PYPI_JSON.format(name=name), timeout=60) as resp:
            meta = json.load(resp)
    except OSError as exc:
        return f"{name}: {exc}"
    info = meta["info"]
    licence = licence_of(info)
    if not is_permissive(licence):
        return f"{name}: licence {licence!r} is not permissive"
    chosen = choose_file(meta["urls"])
    if chosen is None:
        return f"{name}: no sdist or pure-Python wheel"
    return PinnedSource(info["name"], info["version"], chosen["filename"],
                        canonical_url(chosen["url"]), chosen["digests"]["sha256"], licence, split)


def load_sources(path: Path = SOURCES_FILE) -> list[PinnedSource]:
    """The pinned sources, in file order."""
    if not path.exists():
        return []
    return [PinnedSource(**row) for row in json.loads(path.read_text())]


def save_sources(sources: list[PinnedSource], path: Path = SOURCES_FILE) -> None:
    path.write_text(json.dumps([asdict(s) for s in sources], indent=1) + "\n")


def download(source: PinnedSource, dest: Path) -> Path:
    """The pinned file under `dest`, downloaded if missing; its sha256 must match the pin."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / source.filename
    if target.exists() and _sha256(target) == source.sha256:
        return target
    partial = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(source.url, timeout=300) as resp, open(partial, "wb") as f:
        while chunk := resp.read(1 << 20):
            f.write(chunk)
    digest = _sha256(partial)
    if digest != source.sha256:
        partial.unlink()
        raise ValueError(f"{source.filename}: sha256 {digest} does not match the pinned "
                         f"{source.sha256}")
    partial.rename(target)
    return target


def download_all(sources: list[PinnedSource], dest: Path, workers: int = 8) -> list[Path]:
    """Every pinned file, fetched in parallel (network-bound, not CPU-bound)."""
    with cf.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda s: download(s, dest), sources))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pin", help="pin the newest release of each package")
    p.add_argument("names", nargs="+")
    p.add_argument("--heldout", action="store_true", help="hold these packages out whole")
    args = ap.parse_args(argv)
    sources = load_sources()
    known = {s.name.lower() for s in sources}
    names = [n for n in args.names if n.lower() not in known]
    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda n: pin(n, "heldout" if args.heldout else "train"), names))
    for result in results:
        if isinstance(result, str):
            print("refused", result)
        elif result.name.lower() not in known:
            known.add(result.name.lower())
            sources.append(result)
            print("pinned", result.requirement, result.filename, result.license)
    save_sources(sources)


if __name__ == "__main__":
    main()
