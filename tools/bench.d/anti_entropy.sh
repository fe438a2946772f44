#!/usr/bin/env bash
# Foreground GET latency on a 3-node cluster with anti-entropy off, on with nothing to
# repair, and on while it refills a node whose disks were wiped; prints p50/p99 of each
# and the time the wiped node took to hold all its keys again.
#   tools/bench.d/anti_entropy.sh [KEYS] [SECONDS]     (defaults 10000, 10)
# ROUNDS=K measures the in-step and the refilling steps K times each (default 1), back
# to back, and ends with the median p99 of each and their ratio; a refilling window
# counts only if node 3 was still short of keys when it ended.
# AE_INTERVAL_MS=0 runs the same steps with anti-entropy off throughout: the control for
# the refill step (GETs that find node 3 missing a key read-repair it either way).
# PACE_MS=D paces the foreground: each of the 32 connections waits D ms after every
# answer (the default saturates the two cores, so that any background work shows).
# AE_KEYS_PER_SEC=K sets the nodes' --anti-entropy-keys-per-sec (default: the node's);
# READ_REPAIRS_PER_SEC=K their --read-repairs-per-sec.
# Everything lives in a temporary directory removed on exit; the nodes listen on free
# ports of 127.0.0.1 and no traffic goes anywhere else.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
binary=${BINARY:-$repo/build/ringstore}
keys=${1:-10000}
seconds=${2:-10}
tmp=$(mktemp -d /tmp/ringstore-ae-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
export RINGSTORE_SECRET=ae-bench-secret

read -r -a ports < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')

start_node() {  # index, anti-entropy interval
  local i=$1 d=$tmp/n$1
  mkdir -p "$d"
  "$binary" --log-level warn serve --listen "127.0.0.1:${ports[i]}" --data "$d/data" --disk "$d/d0" --disk "$d/d1" \
    --seeds "127.0.0.1:${ports[0]}" --anti-entropy-interval-ms "$2" \
    ${AE_KEYS_PER_SEC:+--anti-entropy-keys-per-sec "$AE_KEYS_PER_SEC"} \
    ${READ_REPAIRS_PER_SEC:+--read-repairs-per-sec "$READ_REPAIRS_PER_SEC"} \
    2>>"$d/log" >/dev/null &
  pids[i]=$!
}
stop_node() { kill "${pids[$1]}"; wait "${pids[$1]}" 2>/dev/null || true; }
status() { curl -sf "127.0.0.1:${ports[$1]}/_/status"; }
wait_members() {
  for _ in $(seq 1 150); do
    local ok=1
    for i in 0 1 2; do
      [[ $(status "$i" 2>/dev/null | python3 -c 'import json,sys; print(sum(m["alive"] for m in json.load(sys.stdin)["members"]))' 2>/dev/null) == 3 ]] || ok=0
    done
    [[ $ok == 1 ]] && return 0
    sleep 0.2
  done
  echo "cluster did not form" >&2; exit 1
}
# The ringstore_keys gauge: one exact line, no interpreter started per call. Polled once
# a second: while node 3 refills its /_/metrics answer waits ~2.5 ms for the loop, and
# five polls a second (the first version) added ~4 ms to the refill p99 on their own.
node_keys() { curl -sf "127.0.0.1:${ports[$1]}/_/metrics" | awk '$1 == "ringstore_keys" {print $2}'; }
measure() {  # label [file that collects the p99 in ms]
  local out p99
  out=$(BENCH_METHOD=GET BENCH_PREFIX=k BENCH_KEYS=$keys BENCH_WIDTH=6 BENCH_DELAY_MS=${PACE_MS:-} \
        wrk -t2 -c32 -d"${seconds}s" --latency -s "$here/workload.lua" "http://127.0.0.1:${ports[0]}")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  printf '%-34s req/s %8s  p50 %8s  p99 %8s\n' "$1" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" "$(awk '$1 == "50%" {print $2}' <<<"$out")" "$p99"
  if [[ -n ${2:-} ]]; then
    awk '{v = $1 + 0; if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /ms$/) v *= 1; else if ($1 ~ /s$/) v *= 1000; print v}' \
      <<<"$p99" >>"$2"
  fi
}
median() { sort -g "$1" | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
rounds=${ROUNDS:-1}

for i in 0 1 2; do start_node "$i" 0; done
wait_members
python3 - "${ports[0]}" "$keys" <<'PY'
import http.client, os, sys, threading
port, keys = int(sys.argv[1]), int(sys.argv[2])
value = os.urandom(1024)
def load(start):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for k in range(start, keys, 8):
        c.request("PUT", "/k%06d" % k, body=value)
        r = c.getresponse(); r.read()
        if r.status != 201: sys.exit("PUT failed: %d" % r.status)
ts = [threading.Thread(target=load, args=(i,)) for i in range(8)]
for t in ts: t.start()
for t in ts: t.join()
PY
echo "loaded $keys keys of 1 KiB"

measure "anti-entropy off"
on_ms=${AE_INTERVAL_MS:-1000}
for i in 0 1 2; do stop_node "$i"; start_node "$i" "$on_ms"; done
wait_members
sleep 2
for r in $(seq 1 "$rounds"); do measure "anti-entropy on, in step ($r)" "$tmp/p99.step"; done

stop_node 2
# The wiped disks are set aside, not deleted, until the end: this machine's disks are
# directories of one ext4 without a journal, where every inode freed in the last minute
# slows the creation of new ones on the whole filesystem; a replaced disk frees none.
mkdir -p "$tmp/wiped"
mv "$tmp/n2/d0" "$tmp/n2/d1" "$tmp/wiped/"
mkdir -p "$tmp/n2/d0" "$tmp/n2/d1"
"$binary" rebuild --data "$tmp/n2/data" --disk "$tmp/n2/d0" --disk "$tmp/n2/d1" >/dev/null
start_node 2 "$on_ms"
t0=$(date +%s.%N)
# The foreground rounds run one after another while the refill goes on; the first one
# that starts after the refill ended is not run. Each round's p99 counts only when node 3
# was still short of keys after it, so that every counted window lies within the refill.
(
  for r in $(seq 1 "$rounds"); do
    [[ $r == 1 || $on_ms == 0 || $(node_keys 2 2>/dev/null || echo 0) != "$keys" ]] || break
    measure "anti-entropy on, refilling node 3 ($r)" "$tmp/p99.round"
    if [[ $on_ms == 0 || $(node_keys 2 2>/dev/null || echo 0) != "$keys" ]]; then
      cat "$tmp/p99.round" >>"$tmp/p99.refill"
    else
      echo "  (node 3 was full before that window ended: not counted)"
    fi
    rm -f "$tmp/p99.round"
  done
) &
wrk_pid=$!
give_up=$((SECONDS + 300))
until [[ $on_ms == 0 || $(node_keys 2 2>/dev/null || echo 0) == "$keys" ]]; do
  sleep 1
  if ((SECONDS > give_up)); then echo "node 3 did not refill" >&2; break; fi
done
[[ $on_ms == 0 ]] || printf 'node 3 held all %s keys again after %.1f s\n' "$keys" "$(echo "$(date +%s.%N) - $t0" | bc)"
wait "$wrk_pid"
measure "anti-entropy on, after the refill"
# What the refill moved: keys each node pushed and pulled, and the internal writes the
# refilled node received for versions it already held (duplicate offers).
for i in 0 1 2; do
  curl -sf "127.0.0.1:${ports[i]}/_/metrics" | awk -v n=$((i + 1)) '
    $1 == "ringstore_anti_entropy_keys_pushed_total" {pu = $2}
    $1 == "ringstore_anti_entropy_keys_pulled_total" {pl = $2}
    $1 == "ringstore_internal_puts_already_held_total" {ah = $2}
    $1 == "ringstore_anti_entropy_offers_already_held_total" {oh = $2}
    $1 == "ringstore_read_repairs_total" {rr = $2}
    $1 == "ringstore_read_repairs_deferred_total" {rd = $2}
    END {printf "node %d: anti-entropy pushed %d, pulled %d; offers already held %d; internal PUTs already held %d; read repairs %d (deferred %d)\n", n, pu, pl, oh, ah, rr, rd}'
done
step=$(median "$tmp/p99.step")
refill=$([[ -s $tmp/p99.refill ]] && median "$tmp/p99.refill" || echo -)
printf 'median p99: in step %s ms (%s rounds), refilling %s ms (%s rounds), ratio %s\n' "$step" \
  "$(wc -l <"$tmp/p99.step")" "$refill" "$(cat "$tmp/p99.refill" 2>/dev/null | wc -l)" \
  "$([[ $refill == - ]] && echo - || awk -v a="$refill" -v b="$step" 'BEGIN {printf "%.2f", a / b}')"
