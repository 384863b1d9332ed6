#!/usr/bin/env bash
# A plain (non-editable) install works outside the checkout: build the wheel, install it with
# --no-deps into a fresh venv that borrows the dependencies of the project venv (a .pth file,
# whose own .pth files, such as the editable install's finder, are not run), then create a
# store, index a tiny manifest and search it from a folder that is not the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${VENV:-.venv}/bin
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

"$BIN/pip" wheel --quiet --no-deps -w "$TMP/dist" .
"$(readlink -f "$BIN/python")" -m venv "$TMP/venv"   # the interpreter of the project venv
SITE=$("$BIN/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
NEW_SITE=$("$TMP/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$SITE" > "$NEW_SITE/project-deps.pth"
"$TMP/venv/bin/pip" install --quiet --no-deps "$TMP"/dist/mmgen-*.whl

cd "$TMP"
WHERE=$("$TMP/venv/bin/python" -c 'import mmgen, sys; print(mmgen.__file__)')
case "$WHERE" in "$NEW_SITE"/*) ;; *) echo "mmgen imported from $WHERE, not the wheel"; exit 1;; esac
if "$TMP/venv/bin/python" -c 'import cli' 2>/dev/null; then echo "the wheel installs a global module named cli"; exit 1; fi
printf '%s\n' '{"id": "a", "text": "a red fox in the snow"}' '{"id": "b", "text": "a school bus on a road"}' \
  '{"id": "c", "text": "a bowl of hot soup"}' > tiny.jsonl
M="$TMP/venv/bin/mmgen"
"$M" db upgrade --workspace ws
"$M" index tiny.jsonl --workspace ws --encoder st:all-MiniLM-L6-v2 --quiet
OUT=$("$M" search "school bus" --workspace ws -k 1 --json)
echo "$OUT"
echo "$OUT" | "$TMP/venv/bin/python" -c 'import json, sys; hit = json.loads(sys.stdin.read())["hits"][0]; assert hit["key"] == "b", hit'
echo "wheel check: ok (installed at $WHERE)"
