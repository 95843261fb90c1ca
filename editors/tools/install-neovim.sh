#!/usr/bin/env bash
# Neovim 0.12 for the headless plugin tests. Debian stable ships 0.7, so this unpacks the
# unstable suite's neovim .debs (and the newer libc and libraries they link) with `dpkg -x`
# into DEST and writes DEST/bin/nvim, which starts nvim through that libc's own loader.
# Nothing is installed system-wide. Usage: install-neovim.sh [DEST]   (default .editors/neovim)
set -euo pipefail
DEST=$(realpath -m "${1:-.editors/neovim}")
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PKGS="neovim neovim-runtime libc6 libluajit-5.1-2 libtree-sitter0.26 libunibilium4
      libutf8proc3 libuv1t64 lua-lpeg lua-luv libgcc-s1 libmsgpack-c2"
if [ -x "$DEST/bin/nvim" ] && "$DEST/bin/nvim" --version >/dev/null 2>&1; then
    exit 0
fi
mkdir -p "$DEST/debs" "$DEST/root" "$DEST/bin"
curl -fsSL "$MIRROR/dists/unstable/main/binary-amd64/Packages.xz" | xz -dc > "$DEST/Packages"
for pkg in $PKGS; do
    file=$(awk -v p="$pkg" '$1=="Package:" {hit=($2==p)} hit && $1=="Filename:" {print $2; exit}' \
        "$DEST/Packages")
    if [ -z "$file" ]; then
        echo "install-neovim: $pkg is not in unstable, skipped" >&2
        continue
    fi
    curl -fsSL -o "$DEST/debs/$(basename "$file")" "$MIRROR/$file"
    dpkg -x "$DEST/debs/$(basename "$file")" "$DEST/root"
done
R="$DEST/root"
LIBS="$R/usr/lib/x86_64-linux-gnu:$R/lib/x86_64-linux-gnu"
cat > "$DEST/bin/nvim" <<WRAP
#!/bin/sh
export VIMRUNTIME="$R/usr/share/nvim/runtime"
exec "$R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$LIBS" "$R/usr/bin/nvim" "\$@"
WRAP
chmod +x "$DEST/bin/nvim"
"$DEST/bin/nvim" --version | head -1
