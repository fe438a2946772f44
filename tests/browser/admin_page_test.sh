#!/usr/bin/env bash
# The admin page (GET /_/admin) in a real headless Chromium: starts a 5-node cluster on
# loopback, writes a few keys, then admin_page_test.mjs (playwright-core) checks that the
# page shows every member alive, the ring with a tick path per node, a key lookup with
# its preference list and versions, live refresh, and that no script error is logged.
#
#   tests/browser/admin_page_test.sh [SCREENSHOT.png]   (default: a temporary file)
#
# Needs chromium (/usr/bin/chromium, or $CHROMIUM), node >= 18 and, the first time, npm:
# playwright-core (pinned in package.json) is installed into tests/browser/node_modules.
# The node binary is $RINGSTORE_BINARY, else build/ringstore.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
chromium=${CHROMIUM:-/usr/bin/chromium}
binary=${RINGSTORE_BINARY:-$root/build/ringstore}
members=5
key=photos/cat.jpg
start=$SECONDS

fail() { echo "admin page test: FAIL: $*" >&2; exit 1; }

[ -x "$chromium" ] || fail "no Chromium at $chromium (Debian: apt-get install chromium; or set CHROMIUM)"
command -v node >/dev/null || fail "node is not installed (Debian: apt-get install nodejs npm)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 18)) || fail "node $(node --version) is too old: playwright-core needs 18 or newer"
for c in curl python3; do command -v "$c" >/dev/null || fail "$c is not installed"; done
[ -x "$binary" ] || fail "no ringstore binary at $binary (cmake --build build --target ringstore)"

want=$(node -p 'require(process.argv[1]).dependencies["playwright-core"]' "$here/package.json")
have=$(node -p 'try { require(process.argv[1]).version } catch (e) { "" }' \
  "$here/node_modules/playwright-core/package.json")
if [ "$have" != "$want" ]; then
  command -v npm >/dev/null || fail "playwright-core $want is not installed and npm is missing (apt-get install npm)"
  echo "installing playwright-core $want into $here/node_modules"
  npm install --prefix "$here" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    || fail "npm install of playwright-core $want failed"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ringstore-admin-test.XXXXXX")
export RINGSTORE_CLUSTER_DIR=$tmp/cluster RINGSTORE_BINARY=$binary
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    for log in "$RINGSTORE_CLUSTER_DIR"/n*/log; do
      [ -f "$log" ] && { echo "--- last lines of $log"; tail -n 5 "$log"; }
    done
  fi
  "$root/tools/cluster" down --purge >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

shot=${1:-$tmp/admin.png}
mkdir -p "$(dirname "$shot")"
shot=$(cd "$(dirname "$shot")" && pwd)/$(basename "$shot")

"$root/tools/cluster" up "$members" >"$tmp/cluster.out" 2>&1 || { cat "$tmp/cluster.out"; fail "the cluster did not start"; }
base="http://127.0.0.1:$(cat "$RINGSTORE_CLUSTER_DIR/n1/port")"

# Every node must see every member alive and done joining (state normal) before the
# keys go in, so that they land on their preference lists and N is the cluster's.
all_alive() {
  local d
  for d in "$RINGSTORE_CLUSTER_DIR"/n*; do
    curl -fsS --max-time 2 "http://127.0.0.1:$(cat "$d/port")/_/status" 2>/dev/null |
      python3 -c 'import json, sys
m = json.load(sys.stdin)["members"]
sys.exit(0 if len(m) == int(sys.argv[1]) and all(x["alive"] and x["state"] == "normal" for x in m) else 1)' "$members" || return 1
  done
}
for _ in $(seq 1 150); do all_alive && break; sleep 0.2; done
all_alive || fail "the $members nodes did not all see each other alive and normal within 30 s"

for k in "$key" docs/readme.txt logs/2026/app.log hello; do
  curl -fsS -X PUT -H "Accept: application/json" --data-binary "admin page test: $k" "$base/$k" >"$tmp/put.json" || fail "PUT $k failed"
  [ "$k" = "$key" ] && cp "$tmp/put.json" "$tmp/put-key.json"
done
version=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$tmp/put-key.json")

curl -fsS "$base/_/admin" -o "$tmp/served.html" || fail "GET /_/admin failed"
cmp -s "$tmp/served.html" "$root/node/admin/index.html" ||
  fail "$binary serves a different page from node/admin/index.html (rebuild: cmake --build build --target ringstore)"

rc=0
(cd "$here" && timeout 120 node admin_page_test.mjs --url "$base/_/admin" --members "$members" \
  --key "$key" --version "$version" --screenshot "$shot" --chromium "$chromium") || rc=$?
((rc == 0)) || fail "the browser checks failed (exit $rc)"
[ -n "${1:-}" ] && echo "screenshot: $shot"
echo "admin page test: passed in $((SECONDS - start)) s"
