"""The editor clients, each in its real client against the real server (tiny parrot model).

Neovim 0.12 runs the plugin headless, Emacs 30 runs the package's ERT tests in batch mode, and
Node runs the VS Code extension's real LanguageClient in a mocked `vscode` module. The tools
come from `.ci/install-editors.sh`; without them these tests skip, unless
DLM_REQUIRE_EDITORS=1 (set by CI) makes a missing tool a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EDITORS = ROOT / "editors"
REQUIRED = os.environ.get("DLM_REQUIRE_EDITORS") == "1"


def _require(path: str | None, what: str) -> str:
    if path is None:
        if REQUIRED:
            pytest.fail(f"{what} is not installed (run .ci/install-editors.sh)")
        pytest.skip(f"{what} is not installed (run .ci/install-editors.sh)")
    return path


def _version_ok(cmd: list[str], pattern: str) -> bool:
    try:
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return re.search(pattern, out.stdout) is not None


def _env(model: Path) -> dict[str, str]:
    return {**os.environ, "DLM_TEST_MODEL": str(model), "DLM_TEST_PYTHON": sys.executable,
            "DLM_TEST_CMD": f"{sys.executable} -m dlm_lsp"}


def _run(cmd: list[str], model: Path, cwd: Path = ROOT, timeout: int = 300):
    proc = subprocess.run(cmd, cwd=cwd, env=_env(model), capture_output=True, text=True,
                          timeout=timeout)
    print(proc.stdout[-6000:], proc.stderr[-3000:], sep="\n")
    return proc


def _nvim() -> str:
    local = ROOT / ".editors" / "neovim" / "bin" / "nvim"
    candidates = [str(local)] if local.exists() else []
    candidates += [p for p in [shutil.which("nvim")] if p]
    nvim = next((c for c in candidates if _version_ok([c], r"NVIM v0\.(1[2-9]|[2-9]\d)")), None)
    return _require(nvim, "Neovim 0.12+")


def test_neovim_lazy_nvim_spec_defines_commands_help_and_checkhealth(parrot_checkpoint):
    proc = _run([_nvim(), "--headless", "-u", "NONE", "-i", "NONE", "-c",
                 "luafile editors/neovim/tests/test_lazy_spec.lua"], parrot_checkpoint)
    assert proc.returncode == 0 and "0 failed" in proc.stdout, "lazy spec checks failed"


def test_neovim_lazy_nvim_own_loader_runs_the_readme_spec(parrot_checkpoint):
    """lazy.nvim itself cannot be installed from the registries CI reaches: this runs where
    DLM_LAZY_NVIM names a lazy.nvim checkout (a user's, or one copied in by hand)."""
    lazy = os.environ.get("DLM_LAZY_NVIM")
    if not lazy or not (Path(lazy) / "lua" / "lazy" / "init.lua").is_file():
        pytest.skip("DLM_LAZY_NVIM does not name a lazy.nvim checkout")
    proc = _run([_nvim(), "--headless", "-i", "NONE", "-u",
                 "editors/neovim/tests/lazy_init.lua"], parrot_checkpoint)
    assert "lazy.nvim loaded dlm-lsp: true" in proc.stdout
    assert proc.returncode == 0 and "0 failed" in proc.stdout, "lazy.nvim loader checks failed"


def test_neovim_help_tags_are_committed_and_current(tmp_path):
    doc = tmp_path / "doc"
    shutil.copytree(EDITORS / "neovim" / "doc", doc)
    (doc / "tags").unlink()
    subprocess.run([_nvim(), "--headless", "-u", "NONE", "-i", "NONE", "-c",
                    f"helptags {doc}", "-c", "qall!"], check=True, timeout=60)
    assert (doc / "tags").read_text() == (EDITORS / "neovim" / "doc" / "tags").read_text()


def test_neovim_plugin_completes_shows_and_accepts_ghost_text_and_fills_holes(parrot_checkpoint):
    nvim = _nvim()
    proc = _run([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-c",
                 "luafile editors/neovim/tests/test_dlm_lsp.lua"], parrot_checkpoint)
    assert proc.returncode == 0, "the Neovim checks failed (output above)"
    assert "0 failed" in proc.stdout and "FAIL" not in proc.stdout


def test_emacs_package_byte_compiles_cleanly_and_its_eglot_and_ghost_tests_pass(
        parrot_checkpoint, tmp_path):
    emacs = shutil.which("emacs")
    emacs = _require(emacs if emacs and _version_ok([emacs], r"GNU Emacs (29|3\d)") else None,
                     "Emacs 29+")
    shutil.copy(EDITORS / "emacs" / "dlm-lsp.el", tmp_path / "dlm-lsp.el")
    compiled = _run([emacs, "--batch", "-Q", "--eval", "(setq byte-compile-error-on-warn t)",
                     "-f", "batch-byte-compile", str(tmp_path / "dlm-lsp.el")], parrot_checkpoint)
    assert compiled.returncode == 0, "byte-compilation warned or failed"
    proc = _run([emacs, "--batch", "-Q", "-L", "editors/emacs", "-l",
                 "editors/emacs/test/dlm-lsp-test.el", "-f", "ert-run-tests-batch-and-exit"],
                parrot_checkpoint)
    assert proc.returncode == 0, "the ERT tests failed (output above)"
    assert re.search(r"Ran 7 tests, 7 results as expected", proc.stdout + proc.stderr)


def test_vscode_extension_real_language_client_gets_server_results(parrot_checkpoint):
    node = shutil.which("node")
    modules = EDITORS / "vscode" / "node_modules"
    _require(node if node and modules.is_dir() else None,
             "node with editors/vscode/node_modules (npm ci)")
    proc = _run(["npm", "test", "--silent"], parrot_checkpoint, cwd=EDITORS / "vscode")
    assert proc.returncode == 0, "the extension tests failed (output above)"
    assert re.search(r"^# fail 0$", proc.stdout, re.M)


def test_the_vsix_ships_no_dotfiles_and_no_links_out_of_the_extension(tmp_path):
    import zipfile

    vsix = EDITORS / "vscode" / "dlm-lsp.vsix"
    _require(str(vsix) if vsix.is_file() else None, "the packaged .vsix (npm run package)")
    with zipfile.ZipFile(vsix) as zf:
        names = zf.namelist()
        readme = zf.read("extension/readme.md" if "extension/readme.md" in names
                         else "extension/README.md").decode()
    assert not [n for n in names if n.rsplit("/", 1)[-1].startswith(".")], names
    assert "../" not in readme and "blob/HEAD/.." not in readme


def test_vscode_settings_mirror_the_server_settings_and_defaults():
    import json

    from dlm_lsp.config import settings_schema

    props = json.loads((EDITORS / "vscode" / "package.json").read_text())[
        "contributes"]["configuration"]["properties"]
    for key, default in settings_schema().items():
        assert props[f"dlm.{key}"]["default"] == default, key
        assert props[f"dlm.{key}"]["description"], key
    extension_only = {"dlm.serverPath", "dlm.serverArgs"}
    assert set(props) - extension_only == {f"dlm.{k}" for k in settings_schema()}


def test_vscode_settings_that_send_data_off_the_machine_are_user_only():
    pkg = json.loads((EDITORS / "vscode" / "package.json").read_text())
    props = pkg["contributes"]["configuration"]["properties"]
    restricted = {"dlm.serverPath", "dlm.serverArgs", "dlm.backend", "dlm.remote.url",
                  "dlm.remote.apiKeyEnv", "dlm.trustRemoteCode"}
    assert {k for k, v in props.items() if v.get("scope") in ("machine", "application")} \
        >= restricted
    untrusted = pkg["capabilities"]["untrustedWorkspaces"]
    assert untrusted["supported"] == "limited"
    assert set(untrusted["restrictedConfigurations"]) >= restricted
