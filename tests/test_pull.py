"""`dlm-lsp pull` against a fake hub on loopback: allowed files only, progress, resume,
nothing fetched twice, a disk-space check before downloading."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from dlm_lsp.model.checkpoint import load_checkpoint, resolve_model_path

from fake_hub import FakeHub

REPO = "tiny-org/dream-tiny"
EXTRA = {"pytorch_model.bin": b"pickle!" * 100, "modeling_dream.py": b"import os\n",
         "README.md": b"# tiny\n", "nested/config.json": b"{}"}


@pytest.fixture()
def hub(parrot_checkpoint: Path):
    fake = FakeHub()
    fake.add_checkpoint(REPO, parrot_checkpoint, EXTRA)
    yield fake
    fake.close()


def _env(hub: FakeHub, cache: Path) -> dict[str, str]:
    return {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache),
            "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def _pull(hub: FakeHub, cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlm_lsp", "pull", *args],
                          env=_env(hub, cache), capture_output=True, text=True, timeout=120)


def test_pull_fetches_only_what_the_loader_reads_then_nothing_again(hub, tmp_path,
                                                                    monkeypatch):
    cache = tmp_path / "cache"
    first = _pull(hub, cache, REPO)
    assert first.returncode == 0, first.stderr
    got = sorted(hub.downloads())
    assert "model.safetensors" in got and "config.json" in got and "dlm.json" in got
    assert not any(f.endswith((".bin", ".py", ".md")) or "/" in f for f in got)
    assert "not fetched" in first.stdout and "pytorch_model.bin" in first.stdout
    assert "%|" in first.stderr  # tqdm's bar
    assert "fetched" in first.stdout and REPO in first.stdout
    before = len(hub.downloads())
    again = _pull(hub, cache, REPO)
    assert again.returncode == 0 and len(hub.downloads()) == before
    assert "0 to fetch" in again.stdout
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert load_checkpoint(resolve_model_path(REPO)).denoiser is not None


def test_an_interrupted_download_resumes_where_it_stopped(parrot_checkpoint, tmp_path):
    # 12 MiB of weights (padded safetensors metadata), stalled after 11 MiB
    ckpt = tmp_path / "ckpt"
    shutil.copytree(parrot_checkpoint, ckpt)
    tensors = load_file(ckpt / "model.safetensors")
    save_file(tensors, ckpt / "model.safetensors", metadata={"pad": "x" * (12 << 20)})
    hub = FakeHub()
    hub.add_checkpoint(REPO, ckpt, {})
    hub.stall["model.safetensors"] = 11 << 20
    cache = tmp_path / "cache"
    try:
        proc = subprocess.Popen([sys.executable, "-m", "dlm_lsp", "pull", REPO],
                                env=_env(hub, cache), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert hub.stalled.wait(120)
        partial = cache / ("models--" + REPO.replace("/", "--")) / "blobs"
        deadline = time.monotonic() + 60
        while not any(f.name.endswith(".incomplete") and f.stat().st_size >= 1 << 20
                      for f in partial.glob("*")):
            assert time.monotonic() < deadline, "no partial download appeared"
            time.sleep(0.05)
        proc.kill()  # the user gives up (or the machine sleeps) mid-download
        proc.wait(30)
        have = next(partial.glob("*.incomplete")).stat().st_size
        hub.release.set()
        second = _pull(hub, cache, REPO)
        assert second.returncode == 0, second.stderr
        ranges = [r for m, p, r in hub.log if m == "GET" and p.endswith("model.safetensors")]
        assert ranges[-1] == f"bytes={have}-"
        assert load_file(next(partial.parent.glob("snapshots/*/model.safetensors"))).keys() \
            == tensors.keys()
    finally:
        hub.release.set()
        hub.close()


def test_pull_refuses_before_downloading_when_the_disk_is_too_small(hub, tmp_path):
    hub.add("tiny-org/huge", {"config.json": b"{}", "model.safetensors": b"x"},
            sizes={"model.safetensors": 10**15})
    out = _pull(hub, tmp_path / "cache", "tiny-org/huge")
    assert out.returncode == 1 and "needs 1.1 PB" not in out.stderr
    assert "free" in out.stderr and "HF_HUB_CACHE" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not [d for d in hub.downloads() if d.endswith(".safetensors")]


def test_unknown_repositories_and_an_unreachable_hub_are_one_line_errors(hub, tmp_path):
    missing = _pull(hub, tmp_path / "c", "tiny-org/nope")
    assert missing.returncode == 1 and "not found" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    env = {**_env(hub, tmp_path / "c"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    offline = subprocess.run([sys.executable, "-m", "dlm_lsp", "pull", REPO], env=env,
                             capture_output=True, text=True, timeout=120)
    assert offline.returncode == 1 and "cannot be reached" in offline.stderr


async def test_the_server_offers_to_download_a_hub_model_and_loads_it(hub, tmp_path):
    from lsprotocol import types
    from pytest_lsp import client_capabilities, make_test_lsp_client

    from lsp_helpers import status, wait_for_status

    client = make_test_lsp_client()
    asked: list[types.ShowMessageRequestParams] = []

    @client.feature(types.WINDOW_SHOW_MESSAGE_REQUEST)
    def answer(params: types.ShowMessageRequestParams) -> types.MessageActionItem:
        asked.append(params)
        return types.MessageActionItem(title="Download")

    await client.start_io(sys.executable, "-m", "dlm_lsp", env=_env(hub, tmp_path / "cache"))
    try:
        await client.initialize_session(types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            initialization_options={"model": REPO}))
        st = await wait_for_status(client, lambda s: s["state"] == "ready", timeout=120)
        assert len(asked) == 1 and REPO in asked[0].message and "kB" in asked[0].message
        assert [a.title for a in asked[0].actions] == ["Download", "Not now"]
        assert st["model"].endswith(str(Path("snapshots") / hub.repos[REPO]["sha"]))
        reports = [r for token, rs in client.progress_reports.items()
                   if str(token).startswith("dlm-pull") for r in rs]
        assert reports[0].title.startswith("dlm: downloading") and reports[-1].kind == "end"
        assert any(getattr(r, "percentage", None) == 100 for r in reports)
        assert (await status(client))["error"] is None
    finally:
        await client.shutdown_session()


async def test_offline_the_server_says_how_to_pull_instead_of_asking(tmp_path):
    from lsprotocol import types
    from pytest_lsp import client_capabilities, make_test_lsp_client

    from lsp_helpers import wait_for_status

    client = make_test_lsp_client()
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path)}
    await client.start_io(sys.executable, "-m", "dlm_lsp", env=env)
    try:
        await client.initialize_session(types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            initialization_options={"model": REPO}))
        await wait_for_status(client, lambda s: s["state"] == "error", timeout=120)
        deadline = asyncio.get_running_loop().time() + 60
        while not any("dlm-lsp pull" in m.message for m in client.messages):
            assert asyncio.get_running_loop().time() < deadline, client.messages
            await asyncio.sleep(0.05)
    finally:
        await client.shutdown_session()
