#!/usr/bin/env bash
# Cluster mode of tools/bench (tools/bench --cluster ...): starts a local
# cluster, drives every node at once with wrk and with a verifying thrasher,
# and prints a summary table. Run tools/bench --cluster --help for the options.
#
# Everything lives in a temporary directory that is removed on exit; the nodes
# listen on free ports of 127.0.0.1 and no traffic goes anywhere else.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
lua_script="$here/workload.lua"
util="$here/cluster_util.py"

usage() {
  cat <<EOF
Usage: tools/bench --cluster [options]

Starts a cluster of local nodes (each with two disks, sharing one generated
secret; the server's defaults of N=3 R=2 W=2 apply), loads all of them at once
and prints a summary table.

Options:
  --nodes N              nodes in the cluster (default 3)
  --duration SECONDS     length of each run (default 10)
  --runs K               runs per workload (default 3); the workloads take
                         turns (put1k, get1k, thrash, put1k, ...)
  --connections C        wrk connections in all for put1k and get1k (default
                         100), split evenly over the nodes
  --threads T            threads of each node's wrk process (default 1)
  --workers W            thrasher workers (default 16)
  --binary PATH          ringstore binary (default build/ringstore)
  --thrasher PATH        verifying load generator (default: ringstore-thrash
                         next to the ringstore binary)
  --workloads LIST       comma-separated subset of put1k,get1k,thrash,
                         thrash-mkv (default: all)
  --sync MODE            the nodes' --sync: always (default; a write is synced
                         before it is acknowledged) or periodic (synced every
                         second, as minikeyvalue, Cassandra's periodic commit
                         log or Garage without data_fsync)
  --markdown             print the table as Markdown (for BENCHMARKS.md)
  -h, --help             show this help

Workloads:
  put1k   PUT 1 KiB bodies to random keys among 10,000 names
  get1k   GET random keys among 1,000 objects of 1 KiB, PUT beforehand
  thrash  ringstore-thrash (tools/thrasher): each worker repeats, on fresh keys of
          its own, PUT random value (1..1024 bytes), GET and compare, DELETE,
          GET expecting 404, each request through the next node in turn;
          any wrong answer is a mismatch, any failed request an error
  thrash-mkv  the same without the GET after DELETE (ringstore-thrash --cycle
          mkv): PUT, GET, DELETE, the cycle of minikeyvalue's thrasher; the
          last deleted keys are still read through every node after each run

How the load is spread: put1k and get1k run one wrk process per node, all at
once, with C/N connections each (the first C mod N nodes get one more); a
run's req/s is the sum of the nodes' rates, its p50 and p99 the highest of the
nodes' percentiles (an upper bound of the cluster-wide figure), its errors the
sum. Every node coordinates the requests it receives, so the load reaches the
replicas through the cluster's internal API as it would in production.

Errors are socket errors, timeouts and HTTP statuses >= 400 as wrk counts
them, and for the thrasher failed requests and mismatches; a workload with
any of them is flagged with "!!". After the PUT runs, keys are read in order
through every node until 20 are found; the nodes must agree on each.

A run starts at least a minute after the previous run removed its data dir
(BENCH_SETTLE_SECONDS, default 60; 0: no wait): on ext4 without a journal the
inodes freed in that minute slow down every file the next run writes.

Exit status: 0 on success, 1 if a workload had errors or mismatches or a node
failed, 2 on bad usage.
EOF
}

die_usage() {
  echo "tools/bench: $*" >&2
  echo "Try 'tools/bench --cluster --help'." >&2
  exit 2
}

nodes=3
duration=10
runs=3
connections=100
threads=1
workers=16
binary="$repo/build/ringstore"
thrasher=""
workloads="put1k,get1k,thrash,thrash-mkv"
sync_mode=always
markdown=0

while (($#)); do
  opt=$1
  val=""
  has_val=0
  case $opt in
    --*=*) val=${opt#*=}; opt=${opt%%=*}; has_val=1 ;;
  esac
  case $opt in
    -h|--help) usage; exit 0 ;;
    --cluster) shift; continue ;;
    --markdown)
      ((has_val)) && die_usage "option $opt takes no value"
      markdown=1
      shift
      continue ;;
    --nodes|--duration|--runs|--connections|--threads|--workers|--binary|--thrasher|--workloads|--sync)
      if ((!has_val)); then
        (($# >= 2)) || die_usage "option $opt needs a value"
        val=$2
        shift
      fi
      shift ;;
    --big-connections|--nginx-only) die_usage "$opt does not apply to --cluster" ;;
    *) die_usage "unknown option: $opt" ;;
  esac
  case $opt in
    --binary) binary=$val; continue ;;
    --thrasher) thrasher=$val; continue ;;
    --workloads) workloads=$val; continue ;;
    --sync)
      [[ $val == always || $val == periodic ]] || die_usage "--sync must be always or periodic, got '$val'"
      sync_mode=$val
      continue ;;
  esac
  [[ $val =~ ^[0-9]+$ ]] && ((10#$val > 0)) || die_usage "$opt needs a positive integer, got '$val'"
  val=$((10#$val))
  case $opt in
    --nodes) nodes=$val ;;
    --duration) duration=$val ;;
    --runs) runs=$val ;;
    --connections) connections=$val ;;
    --threads) threads=$val ;;
    --workers) workers=$val ;;
  esac
done

((nodes <= 64)) || die_usage "--nodes must be at most 64"
((connections >= nodes)) || die_usage "--connections ($connections) must be at least --nodes ($nodes)"
((threads <= connections / nodes)) ||
  die_usage "--threads ($threads) must not exceed the connections per node ($((connections / nodes)))"

# W_LABEL: the table's name; W_METHOD ... W_WIDTH: the wrk workloads' requests;
# W_CYCLE: the thrasher's --cycle for the thrasher workloads (wrk runs the others)
declare -A W_LABEL W_METHOD W_PREFIX W_KEYS W_WIDTH W_CYCLE
W_LABEL[put1k]="PUT 1 KiB"
W_METHOD[put1k]=PUT; W_PREFIX[put1k]=p1k-; W_KEYS[put1k]=10000; W_WIDTH[put1k]=5
W_LABEL[get1k]="GET 1 KiB"
W_METHOD[get1k]=GET; W_PREFIX[get1k]=g1k-; W_KEYS[get1k]=1000; W_WIDTH[get1k]=4
W_LABEL[thrash]="Thrasher"; W_CYCLE[thrash]=full
W_LABEL[thrash-mkv]="Thrasher, mkv cycle"; W_CYCLE[thrash-mkv]=mkv

selected=()
IFS=, read -r -a wanted <<<"$workloads"
((${#wanted[@]})) || die_usage "--workloads is empty"
for w in "${wanted[@]}"; do
  [[ -n ${W_LABEL[$w]+x} ]] || die_usage "unknown workload '$w' (known: put1k,get1k,thrash,thrash-mkv)"
  [[ " ${selected[*]} " == *" $w "* ]] || selected+=("$w")
done

for tool in wrk python3 curl; do
  command -v "$tool" >/dev/null || { echo "tools/bench: $tool not found" >&2; exit 1; }
done
[[ $binary == /* ]] || binary="$PWD/$binary"
[[ -x $binary ]] || { echo "tools/bench: no executable at $binary (build it first, or pass --binary)" >&2; exit 1; }
[[ -n $thrasher ]] || thrasher="$(dirname "$binary")/ringstore-thrash"
[[ $thrasher == /* ]] || thrasher="$PWD/$thrasher"
[[ -x $thrasher ]] || { echo "tools/bench: no executable at $thrasher (build it first, or pass --thrasher)" >&2; exit 1; }

log() { echo "bench: $*" >&2; }
loadavg=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# --- temp dir, processes, cleanup -------------------------------------------

. "$(dirname "${BASH_SOURCE[0]}")/settle.sh"
settle_wait
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ringstore-bench.XXXXXX")
node_pids=()
load_pids=()   # wrk processes or the thrasher of the current run

stop_all() { # signal name seconds pid...: signal them all, then wait for all
  local sig=$1 name=$2 secs=$3 i pid left
  shift 3
  for pid in "$@"; do
    kill "-$sig" "$pid" 2>/dev/null || true
  done
  for ((i = 0; i < secs * 10; i++)); do
    left=0
    for pid in "$@"; do
      kill -0 "$pid" 2>/dev/null && left=1
    done
    ((left)) || break
    sleep 0.1
  done
  for pid in "$@"; do
    if kill -0 "$pid" 2>/dev/null; then
      log "$name $pid did not stop within ${secs}s of SIG$sig; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    local st=0
    wait "$pid" 2>/dev/null || st=$?
    # A node stopped by SIGTERM must exit 0: anything else (an abort at exit) fails the run.
    if [[ $name == node && $sig == TERM && $st != 0 ]]; then
      log "node $pid exited with status $st after SIGTERM"
      bad_exit=1
    fi
  done
}
bad_exit=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  ((${#load_pids[@]})) && stop_all TERM "load generator" 5 "${load_pids[@]}"
  # A node drains requests in flight for up to 10s after SIGTERM.
  ((${#node_pids[@]})) && stop_all TERM node 20 "${node_pids[@]}"
  if ((bad_exit)); then
    for f in "$tmp"/n*/log; do show_log "$f" "${f#"$tmp"/} (tail)"; done
    ((rc)) || rc=1
  fi
  settle_remove "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_log() { # file title
  [[ -s $1 ]] || return 0
  echo "---- $2 (last 30 lines) ----" >&2
  tail -n 30 "$1" >&2
  echo "----" >&2
}

read -r -a ports < <(python3 - "$nodes" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
PY
)
urls=()
for p in "${ports[@]}"; do urls+=("http://127.0.0.1:$p"); done

# --- the cluster ---------------------------------------------------------------
# The command line of tools/cluster: the first two nodes are the seeds.

(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/secret")
seeds="127.0.0.1:${ports[0]}"
((nodes > 1)) && seeds+=",127.0.0.1:${ports[1]}"
for ((i = 1; i <= nodes; i++)); do
  d="$tmp/n$i"
  mkdir -p "$d/data" "$d/disk1" "$d/disk2"
  "$binary" serve --listen "127.0.0.1:${ports[i - 1]}" --data "$d/data" \
    --disk "$d/disk1" --disk "$d/disk2" --seeds "$seeds" --secret-file "$tmp/secret" \
    --sync "$sync_mode" >"$d/log" 2>&1 </dev/null &
  node_pids+=($!)
done

nodes_alive() {
  local i ok=0
  for ((i = 1; i <= nodes; i++)); do
    if ! kill -0 "${node_pids[i - 1]}" 2>/dev/null; then
      log "node $i (pid ${node_pids[i - 1]}, ${urls[i - 1]}) has died"
      show_log "$tmp/n$i/log" "node $i log"
      ok=1
    fi
  done
  return "$ok"
}

for ((i = 1; i <= nodes; i++)); do
  for ((t = 0; ; t++)); do
    nodes_alive || { log "a node exited during startup"; exit 1; }
    curl -fsS -o /dev/null --max-time 2 "${urls[i - 1]}/_/status" 2>/dev/null && break
    if ((t >= 300)); then
      log "node $i not answering after 30s (${urls[i - 1]})"
      show_log "$tmp/n$i/log" "node $i log"
      exit 1
    fi
    sleep 0.1
  done
done
formed_start=$(date +%s.%N)
python3 "$util" wait "$nodes" 30 "${urls[@]}" || { nodes_alive; exit 1; }
log "$nodes nodes up, every one sees $nodes alive members ($(python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$formed_start" "$(date +%s.%N)")s after the last answered): ${urls[*]}"

# --- preload -------------------------------------------------------------------

if [[ " ${selected[*]} " == *" get1k "* ]]; then
  log "preloading 1,000 x 1 KiB objects through all nodes"
  python3 "$util" preload g1k- 1000 4 1024 "${urls[@]}" || { nodes_alive; exit 1; }
  nodes_alive || exit 1
fi

# --- runs ------------------------------------------------------------------------

results="$tmp/results.txt"
: >"$results"

conns_for() { # node index (0-based) -> connections of its wrk
  local base=$((connections / nodes)) extra=$((connections % nodes))
  echo $((base + ($1 < extra ? 1 : 0)))
}

run_wrk() { # workload run
  local w=$1 run=$2 i rc line out
  local -a outs=() rcs=()
  load_pids=()
  for ((i = 0; i < nodes; i++)); do
    out="$tmp/wrk-$w-$run-n$((i + 1)).log"
    outs+=("$out")
    BENCH_METHOD=${W_METHOD[$w]} BENCH_PREFIX=${W_PREFIX[$w]} BENCH_KEYS=${W_KEYS[$w]} \
      BENCH_WIDTH=${W_WIDTH[$w]} BENCH_SIZE=1024 \
      wrk -t "$threads" -c "$(conns_for "$i")" -d "${duration}s" --timeout 10s \
      --latency -s "$lua_script" "${urls[i]}/" >"$out" 2>&1 &
    load_pids+=($!)
  done
  # wait (unlike a foreground command) returns at once when a signal arrives.
  for ((i = 0; i < nodes; i++)); do
    rc=0
    wait "${load_pids[i]}" || rc=$?
    rcs+=("$rc")
  done
  load_pids=()
  for ((i = 0; i < nodes; i++)); do
    line=$(grep -m1 '^BENCHRESULT ' "${outs[i]}" || true)
    if ((rcs[i] != 0)) || [[ -z $line ]]; then
      log "wrk failed for $w against node $((i + 1)) (exit ${rcs[i]})"
      show_log "${outs[i]}" "wrk output"
      line="BENCHRESULT failed=1"
    fi
    echo "$w $run $((i + 1)) ${line#BENCHRESULT }" >>"$results"
  done
  python3 - "$results" "$w" "$run" "$runs" <<'PY' >&2
import sys
path, w, run, runs = sys.argv[1:]
nodes = []
for line in open(path):
    p = line.split()
    if p[0] == w and p[1] == run:
        nodes.append((p[2], dict(kv.split("=", 1) for kv in p[3:])))
if any("failed" in f for _, f in nodes):
    sys.exit(0)
keys = ("connect", "read", "write", "status", "timeout")
total = errs = 0
per = []
for n, f in nodes:
    rps = float(f["requests"]) / (float(f["duration_us"]) / 1e6)
    total += rps
    errs += sum(int(f[k]) for k in keys)
    per.append("n%s %.0f/s p50 %.1fms p99 %.1fms" % (n, rps, float(f["p50_us"]) / 1e3,
                                                  float(f["p99_us"]) / 1e3))
print("bench: %-6s run %s/%s %8.0f req/s  (%s)%s"
      % (w, run, runs, total, "; ".join(per), "  !! %d errors" % errs if errs else ""))
PY
}

run_thrash() { # workload run
  local w=$1 run=$2 rc=0 line
  local out="$tmp/$w-$run.log" err="$tmp/$w-$run.err"
  "$thrasher" --duration "$duration" --workers "$workers" --run-id "$w$run" \
    --cycle "${W_CYCLE[$w]}" "${urls[@]}" >"$out" 2>"$err" &
  load_pids=($!)
  wait "${load_pids[0]}" || rc=$?
  load_pids=()
  line=$(grep -m1 '^THRASHRESULT ' "$out" || true)
  if [[ -z $line ]] || ((rc > 1)); then
    log "the thrasher failed (exit $rc)"
    show_log "$err" "thrasher output"
    line="THRASHRESULT failed=1"
  elif [[ -s $err ]]; then
    show_log "$err" "thrasher failures, run $run"
  fi
  echo "$w $run 0 ${line#THRASHRESULT }" >>"$results"
  python3 - "$line" "$w" "$run" "$runs" <<'PY' >&2
import sys
line, w, run, runs = sys.argv[1:]
f = dict(kv.split("=", 1) for kv in line.split()[1:])
if "failed" in f:
    sys.exit(0)
d = float(f["duration_us"]) / 1e6
bad = int(f["errors"]) + int(f["mismatches"])
print("bench: %s run %s/%s %8.0f req/s %6.0f cycles/s  p50 %.1fms p99 %.1fms  "
      "errors %s mismatches %s%s"
      % (w, run, runs, int(f["requests"]) / d, int(f["cycles"]) / d, float(f["p50_us"]) / 1e3,
         float(f["p99_us"]) / 1e3, f["errors"], f["mismatches"], "  !!" if bad else ""))
PY
}

for ((run = 1; run <= runs; run++)); do
  for w in "${selected[@]}"; do
    nodes_alive || exit 1
    if [[ -n ${W_CYCLE[$w]+x} ]]; then
      run_thrash "$w" "$run"
    else
      run_wrk "$w" "$run"
    fi
  done
done
nodes_alive || exit 1

check_failed=""
if [[ " ${selected[*]} " == *" put1k "* ]]; then
  python3 "$util" check-puts p1k- 10000 5 1024 "${urls[@]}" || check_failed+=" put1k"
fi
nodes_alive || exit 1

usage_line=""
for ((i = 1; i <= nodes; i++)); do
  usage_line+=" n$i $(du -sh "$tmp/n$i" 2>/dev/null | cut -f1)"
done
log "node data after the runs:$usage_line"

# --- report ------------------------------------------------------------------------

spec="$tmp/spec.txt"
per_node=""
for ((i = 0; i < nodes; i++)); do per_node+="${per_node:+/}$(conns_for "$i")"; done
for w in "${selected[@]}"; do
  if [[ -n ${W_CYCLE[$w]+x} ]]; then
    shown="$workers"
  else
    shown="$connections"
  fi
  echo "$w|${W_LABEL[$w]}|$shown|${W_CYCLE[$w]:-}"
done >"$spec"

cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo "no commit")
dirty=$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null | head -1 || true)
[[ -n $dirty ]] && rev+="+dirty"
header="$(date -u +%Y-%m-%dT%H:%MZ), ringstore $rev, $(nproc) CPUs (${cpu:-unknown}), $(uname -sr)"
header+=$'\n'"cluster of $nodes nodes on 127.0.0.1 (2 disks each, server defaults N=3 R=2 W=2, --sync $sync_mode), load generators on the same CPUs; load average before the start: $loadavg"
header+=$'\n'"PUT/GET: one wrk per node, -t$threads -c$per_node ($connections in all); thrasher: $workers workers, values of 1..1024 bytes; ${duration}s x $runs runs"

rc=0
python3 "$util" report "$spec" "$results" "$markdown" "$header" "$check_failed" || rc=$?
exit "$rc"
