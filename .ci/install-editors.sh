#!/usr/bin/env bash
# Editors for the client tests (tests/test_editors.py): Emacs 30 with eglot 1.17 from
# bookworm-backports, Neovim 0.12 unpacked from Debian unstable's .debs, and the VS Code
# extension's npm packages (then the .vsix is packaged). Nothing here is cached by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! emacs --version 2>/dev/null | grep -qE "GNU Emacs (29|3[0-9])"; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" |
        $SUDO tee /etc/apt/sources.list.d/dlm-lsp-backports.list >/dev/null
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports \
        emacs-nox >/dev/null
fi
emacs --version | head -1

bash editors/tools/install-neovim.sh .editors/neovim

(cd editors/vscode && npm ci --no-audit --no-fund --loglevel=error && npm run --silent package)
ls -la editors/vscode/dlm-lsp.vsix
