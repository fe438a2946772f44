#!/usr/bin/env bash
# Cluster mode of tools/bench (tools/bench --cluster ...): starts a local
# cluster, drives every node at once with wrk and with a verifying thrasher,
# and prints a summary table. With --peer URL it drives an already running
# store at URL with the same client, in turns with the cluster, and prints both
# side by side. Run tools/bench --cluster --help for the options.
#
# Everything lives in a temporary directory that is removed on exit; the nodes
# listen on free ports of 127.0.0.1 and no traffic goes anywhere else (but to
# the --peer URL, if one is given).
set -euo pipefail
args=("$@")

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
lua_script="$here/workload.lua"
util="$here/cluster_util.py"

usage() {
  cat <<EOF
Usage: tools/bench --cluster [options]

Starts a cluster of local nodes (each with two disks, sharing one generated
secret; the server's defaults of N=3 R=2 W=2 apply), loads all of them at once
and prints a summary table. With --peer URL, another store that is already
running is measured in the same run by the same client, side by side.

Options:
  --nodes N              nodes in the cluster (default 3)
  --duration SECONDS     length of each run (default 10)
  --runs K               runs per workload (default 3); the workloads take
                         turns (put1k, get1k, thrash, put1k, ...)
  --connections C        connections in all for put1k, get1k and delete1k
                         (default 100): wrk's, split evenly over the nodes
                         loaded, or the thrasher's workers
  --threads T            threads of each node's wrk process (default 1)
  --workers W            thrasher workers for thrash and thrash-mkv (default
                         16), each with its own connection
  --binary PATH          ringstore binary (default build/ringstore)
  --thrasher PATH        verifying load generator (default: ringstore-thrash
                         next to the ringstore binary)
  --workloads LIST       comma-separated subset of put1k,put1k-idle,get1k,
                         delete1k,thrash,thrash-mkv (default: put1k,get1k,
                         thrash,thrash-mkv; with --peer put1k-idle,put1k,
                         get1k,delete1k,thrash-mkv)
  --sync MODE            the nodes' --sync: always (default; a write is synced
                         before it is acknowledged) or periodic (synced every
                         second, as minikeyvalue, Cassandra's periodic commit
                         log or Garage without data_fsync)
  --markdown             print the table as Markdown (for BENCHMARKS.md)
  --peer URL[,URL...]    also run every workload against the store already
                         listening at URL, http://HOST:PORT with an IPv4 HOST
                         or localhost (started by you: the harness never
                         builds, starts or stops it), in turns with the
                         cluster, and print both side by side (see below)
  --peer-name NAME       the peer's name in the table (default: peer)
  --one-endpoint         send all of the cluster's load through node 1, as a
                         client of a store with one endpoint would (the
                         default with --peer, which has one endpoint)
  --all-endpoints        spread the cluster's load over all nodes (the default
                         without --peer)
  -h, --help             show this help

Workloads:
  put1k   PUT 1 KiB bodies to random keys among 10,000 names (wrk; with
          --peer ringstore-thrash --op put, fresh keys)
  get1k   GET random keys among 1,000 objects of 1 KiB, PUT beforehand (wrk;
          with --peer ringstore-thrash --op get, which checks the bytes)
  delete1k  ringstore-thrash --op delete: PUT fresh 1 KiB keys for the run's
          duration (untimed), then time only their DELETEs; when one worker
          has deleted all it wrote, all stop, write more (untimed) and go on,
          in rounds, until the duration of DELETEs was timed. A store that
          deletes much faster than it writes takes several times the duration
  put1k-idle  ringstore-thrash --op put with one worker: one PUT of a fresh 1 KiB
          key at a time over one keep-alive connection, so that each write has
          the store to itself; its p50 is the latency of an idle PUT
  thrash  ringstore-thrash (tools/thrasher): each worker repeats, on fresh keys of
          its own, PUT random value (1..1024 bytes), GET and compare, DELETE,
          GET expecting 404, each request through the next node in turn;
          any wrong answer is a mismatch, any failed request an error
  thrash-mkv  the same without the GET after DELETE (ringstore-thrash --cycle
          mkv): PUT, GET, DELETE, the cycle of minikeyvalue's thrasher; the
          last deleted keys are still read through every node loaded after
          each run

How the load is spread: without --one-endpoint, put1k and get1k run one wrk
process per node, all at once, with C/N connections each (the first C mod N
nodes get one more); a run's req/s is the sum of the nodes' rates, its p50 and
p99 the highest of the nodes' percentiles (an upper bound of the cluster-wide
figure), its errors the sum; the thrasher sends each worker's requests to the
nodes in turn. Every node coordinates the requests it receives, so the load
reaches the replicas through the cluster's internal API as it would in
production. With --one-endpoint one wrk (or the thrasher) sends all of it to
node 1, which coordinates every request, as minikeyvalue's master does.

Errors are socket errors, timeouts and HTTP statuses >= 400 as wrk counts
them, and for the thrasher failed requests and mismatches; a workload with
any of them is flagged with "!!". After wrk's PUT runs, keys are read in
order through every node until 20 are found; the nodes must agree on each.

Side by side with another store (--peer URL): every workload runs through
ringstore-thrash, the one client for both (wrk cannot follow the redirect that
minikeyvalue answers a GET with), alternately against the cluster and the peer:
ringstore run 1, peer run 1, ringstore run 2, peer run 2, and so on, so that
noise hits both alike. put1k PUTs fresh keys (a store such as minikeyvalue
refuses to overwrite one), get1k PUTs its 1,000 objects before each run
(untimed) and follows redirects, delete1k as above, thrash-mkv the mkv cycle;
put1k, get1k and delete1k with --connections workers (connections), the
thrash workloads with --workers. ringstore-thrash --peer accepts the peer's
codes (PUT 201 or 204, DELETE 204 or 200, a deleted GET 404 or 410) and does
not check its ETag; the bytes of every GET are checked on both. The table
shows for each side the median req/s over runs (min-max), the ratio of
ringstore to the peer as the median of the per-run-pair ratios (min-max), p50
and p99 (medians over runs) and errors. Keys are unique to each run (time and
pid), so repeated benches against one peer never collide; the keys stay in
the peer. The cluster starts empty, the peer holds what it held before.

A run starts at least a minute after the previous run removed its data dir
(BENCH_SETTLE_SECONDS, default 60; 0: no wait): on ext4 without a journal the
inodes freed in that minute slow down every file the next run writes.

Exit status: 0 on success, 1 if a workload had errors or mismatches (on
either side with --peer) or a node failed, 2 on bad usage.
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
workloads=""
sync_mode=always
markdown=0
peer=""
peer_name=peer
endpoints=""   # one or all; empty: one with --peer, all without

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
    --markdown|--one-endpoint|--all-endpoints)
      ((has_val)) && die_usage "option $opt takes no value"
      case $opt in
        --markdown) markdown=1 ;;
        --one-endpoint) endpoints=one ;;
        --all-endpoints) endpoints=all ;;
      esac
      shift
      continue ;;
    --nodes|--duration|--runs|--connections|--threads|--workers|--binary|--thrasher|--workloads|--sync|--peer|--peer-name)
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
    --peer)
      # The thrasher takes http://HOST:PORT with an IPv4 HOST or localhost.
      IFS=, read -r -a peer_urls <<<"$val"
      ((${#peer_urls[@]})) || die_usage "--peer needs a URL"
      for u in "${peer_urls[@]}"; do
        [[ $u =~ ^http://[A-Za-z0-9.]+:[0-9]+/?$ ]] || die_usage "--peer wants http://HOST:PORT URLs, got '$u'"
      done
      peer=$val
      continue ;;
    --peer-name)
      [[ $val =~ ^[A-Za-z0-9._-]{1,32}$ ]] || die_usage "--peer-name must be 1..32 of [A-Za-z0-9._-], got '$val'"
      peer_name=$val
      continue ;;
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

[[ -n $endpoints ]] || endpoints=$([[ -n $peer ]] && echo one || echo all)
((nodes <= 64)) || die_usage "--nodes must be at most 64"
# The nodes that take the cluster's load: all, or node 1 alone.
load_nodes=$([[ $endpoints == one ]] && echo 1 || echo "$nodes")
((connections >= load_nodes)) || die_usage "--connections ($connections) must be at least the nodes loaded ($load_nodes)"
((threads <= connections / load_nodes)) ||
  die_usage "--threads ($threads) must not exceed the connections per node ($((connections / load_nodes)))"

# W_LABEL: the table's name; W_METHOD ... W_WIDTH: the requests of the workloads that wrk
# runs without --peer (W_WRK); W_OP: what the thrasher runs otherwise, an --op or the
# --cycle of --op cycle
declare -A W_LABEL W_METHOD W_PREFIX W_KEYS W_WIDTH W_WRK W_OP
W_LABEL[put1k]="PUT 1 KiB"; W_WRK[put1k]=1; W_OP[put1k]=put
W_METHOD[put1k]=PUT; W_PREFIX[put1k]=p1k-; W_KEYS[put1k]=10000; W_WIDTH[put1k]=5
W_LABEL[get1k]="GET 1 KiB"; W_WRK[get1k]=1; W_OP[get1k]=get
W_METHOD[get1k]=GET; W_PREFIX[get1k]=g1k-; W_KEYS[get1k]=1000; W_WIDTH[get1k]=4
W_LABEL[delete1k]="DELETE 1 KiB"; W_OP[delete1k]=delete
W_LABEL[put1k-idle]="PUT 1 KiB, one client"; W_OP[put1k-idle]=put-idle
W_LABEL[thrash]="Thrasher"; W_OP[thrash]=full
W_LABEL[thrash-mkv]="Thrasher, mkv cycle"; W_OP[thrash-mkv]=mkv

# What runs workload $1: "" for wrk, else the thrasher's op (put, get, delete) or cycle.
mode_of() {
  if [[ -z $peer && -n ${W_WRK[$1]+x} ]]; then echo ""; else echo "${W_OP[$1]}"; fi
}

if [[ -z $workloads ]]; then
  workloads=$([[ -n $peer ]] && echo put1k-idle,put1k,get1k,delete1k,thrash-mkv || echo put1k,get1k,thrash,thrash-mkv)
fi
selected=()
IFS=, read -r -a wanted <<<"$workloads"
((${#wanted[@]})) || die_usage "--workloads is empty"
for w in "${wanted[@]}"; do
  [[ -n ${W_LABEL[$w]+x} ]] || die_usage "unknown workload '$w' (known: put1k,put1k-idle,get1k,delete1k,thrash,thrash-mkv)"
  [[ " ${selected[*]} " == *" $w "* ]] || selected+=("$w")
done
uses_wrk=0
for w in "${selected[@]}"; do [[ -n $(mode_of "$w") ]] || uses_wrk=1; done

tools=(python3 curl)
((uses_wrk)) && tools+=(wrk)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "tools/bench: $tool not found" >&2; exit 1; }
done
[[ $binary == /* ]] || binary="$PWD/$binary"
[[ -x $binary ]] || { echo "tools/bench: no executable at $binary (build it first, or pass --binary)" >&2; exit 1; }
[[ -n $thrasher ]] || thrasher="$(dirname "$binary")/ringstore-thrash"
[[ $thrasher == /* ]] || thrasher="$PWD/$thrasher"
[[ -x $thrasher ]] || { echo "tools/bench: no executable at $thrasher (build it first, or pass --thrasher)" >&2; exit 1; }

log() { echo "bench: $*" >&2; }
loadavg=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# The peer must already answer: any HTTP status will do (minikeyvalue answers / with 404).
if [[ -n $peer ]]; then
  for u in "${peer_urls[@]}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${u%/}/" 2>/dev/null || true)
    if [[ -z $code || $code == 000 ]]; then
      echo "tools/bench: no HTTP answer from the peer at $u; start it first (the harness does not)" >&2
      exit 1
    fi
  done
fi

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
load_urls=("${urls[@]:0:load_nodes}")   # what the load generators are given

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

if [[ " ${selected[*]} " == *" get1k "* && -z $(mode_of get1k) ]]; then
  log "preloading 1,000 x 1 KiB objects through all nodes"
  python3 "$util" preload g1k- 1000 4 1024 "${urls[@]}" || { nodes_alive; exit 1; }
  nodes_alive || exit 1
fi

# --- runs ------------------------------------------------------------------------

results="$tmp/results.txt"         # the cluster's runs
results_peer="$tmp/results-peer.txt"   # the peer's runs
: >"$results"
: >"$results_peer"

conns_for() { # node index (0-based) -> connections of its wrk
  local base=$((connections / load_nodes)) extra=$((connections % load_nodes))
  echo $((base + ($1 < extra ? 1 : 0)))
}

run_wrk() { # workload run
  local w=$1 run=$2 i rc line out
  local -a outs=() rcs=()
  load_pids=()
  for ((i = 0; i < load_nodes; i++)); do
    out="$tmp/wrk-$w-$run-n$((i + 1)).log"
    outs+=("$out")
    BENCH_METHOD=${W_METHOD[$w]} BENCH_PREFIX=${W_PREFIX[$w]} BENCH_KEYS=${W_KEYS[$w]} \
      BENCH_WIDTH=${W_WIDTH[$w]} BENCH_SIZE=1024 \
      wrk -t "$threads" -c "$(conns_for "$i")" -d "${duration}s" --timeout 10s \
      --latency -s "$lua_script" "${urls[i]}/" >"$out" 2>&1 &
    load_pids+=($!)
  done
  # wait (unlike a foreground command) returns at once when a signal arrives.
  for ((i = 0; i < load_nodes; i++)); do
    rc=0
    wait "${load_pids[i]}" || rc=$?
    rcs+=("$rc")
  done
  load_pids=()
  for ((i = 0; i < load_nodes; i++)); do
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

run_thrash() { # workload run target (ringstore or peer)
  local w=$1 run=$2 target=$3 rc=0 line mode
  local out="$tmp/$w-$run-$target.log" err="$tmp/$w-$run-$target.err"
  local -a opts
  mode=$(mode_of "$w")
  case $mode in
    full|mkv) opts=(--op cycle --cycle "$mode" --workers "$workers") ;;
    get) opts=(--op get --keys 1000 --size 1024 --workers "$connections") ;;
    put-idle) opts=(--op put --size 1024 --workers 1) ;;
    *) opts=(--op "$mode" --size 1024 --workers "$connections") ;;
  esac
  if [[ $target == peer ]]; then
    opts+=(--peer "$peer")
  else
    opts+=("${load_urls[@]}")
  fi
  "$thrasher" --duration "$duration" --run-id "$w$run" "${opts[@]}" >"$out" 2>"$err" &
  load_pids=($!)
  wait "${load_pids[0]}" || rc=$?
  load_pids=()
  line=$(grep -m1 '^THRASHRESULT ' "$out" || true)
  if [[ -z $line ]] || ((rc > 1)); then
    log "the thrasher failed against $target (exit $rc)"
    show_log "$err" "thrasher output"
    line="THRASHRESULT failed=1"
  elif [[ -s $err ]]; then
    show_log "$err" "thrasher failures against $target, run $run"
  fi
  if [[ $target == peer ]]; then
    echo "$w $run 0 ${line#THRASHRESULT }" >>"$results_peer"
  else
    echo "$w $run 0 ${line#THRASHRESULT }" >>"$results"
  fi
  python3 - "$line" "$w" "$run" "$runs" "$([[ $target == peer ]] && echo "$peer_name" || echo ringstore)" <<'PY' >&2
import sys
line, w, run, runs, target = sys.argv[1:]
f = dict(kv.split("=", 1) for kv in line.split()[1:])
if "failed" in f:
    sys.exit(0)
d = float(f["duration_us"]) / 1e6
bad = int(f["errors"]) + int(f["mismatches"])
print("bench: %s run %s/%s %s %8.0f req/s %6.0f cycles/s  p50 %.1fms p99 %.1fms  "
      "errors %s mismatches %s%s"
      % (w, run, runs, target, int(f["requests"]) / d, int(f["cycles"]) / d,
         float(f["p50_us"]) / 1e3, float(f["p99_us"]) / 1e3, f["errors"], f["mismatches"],
         "  !!" if bad else ""))
PY
}

for ((run = 1; run <= runs; run++)); do
  for w in "${selected[@]}"; do
    nodes_alive || exit 1
    if [[ -n $(mode_of "$w") ]]; then
      run_thrash "$w" "$run" ringstore
    else
      run_wrk "$w" "$run"
    fi
    # The peer's run right after the cluster's, so that both see the same moment.
    [[ -z $peer ]] || run_thrash "$w" "$run" peer
  done
done
nodes_alive || exit 1

check_failed=""
if [[ " ${selected[*]} " == *" put1k "* && -z $(mode_of put1k) ]]; then
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
for ((i = 0; i < load_nodes; i++)); do per_node+="${per_node:+/}$(conns_for "$i")"; done
for w in "${selected[@]}"; do
  mode=$(mode_of "$w")
  case $mode in
    full|mkv) shown="$workers" ;;
    put-idle) shown=1 ;;
    *) shown="$connections" ;;
  esac
  echo "$w|${W_LABEL[$w]}|$shown|$mode"
done >"$spec"

cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo "no commit")
dirty=$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null | head -1 || true)
[[ -n $dirty ]] && rev+="+dirty"
loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
# The command as typed, with the environment variables that change what it does.
shell_word() { # $1 as the shell reads it back: plain, or in single quotes
  if [[ $1 =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}
command="tools/bench"
[[ " ${args[*]} " == *" --cluster "* ]] || command+=" --cluster"
for a in "${args[@]}"; do command+=" $(shell_word "$a")"; done
[[ -n ${BENCH_SETTLE_SECONDS+x} ]] && command="BENCH_SETTLE_SECONDS=$(shell_word "$BENCH_SETTLE_SECONDS") $command"
header="command: $command"
header+=$'\n'"$(date -u +%Y-%m-%dT%H:%MZ), ringstore $rev, nproc $(nproc) (${cpu:-unknown}), $(uname -sr); load average before the start: $loadavg, at the end: $loadavg_end"
if [[ $endpoints == one ]]; then
  spread="all load through node 1 (--one-endpoint)"
else
  spread="load spread over all $nodes nodes"
fi
header+=$'\n'"cluster of $nodes nodes on 127.0.0.1 (2 disks each, server defaults N=3 R=2 W=2, --sync $sync_mode), $spread; load generators on the same CPUs"
if [[ -n $peer ]]; then
  header+=$'\n'"$peer_name: the store already running at $peer (not started by the harness); each workload alternates ringstore and $peer_name runs, one client: ringstore-thrash"
  header+=$'\n'"put1k, get1k, delete1k: $connections connections, 1 KiB values; thrasher cycles: $workers workers, values of 1..1024 bytes; ${duration}s x $runs runs on each side"
else
  header+=$'\n'"PUT/GET: one wrk per node loaded, -t$threads -c$per_node ($connections in all); thrasher: $workers workers, values of 1..1024 bytes; ${duration}s x $runs runs"
fi

rc=0
if [[ -n $peer ]]; then
  python3 "$util" report-peer "$spec" "$results" "$results_peer" "$markdown" "$header" "$peer_name" || rc=$?
else
  python3 "$util" report "$spec" "$results" "$markdown" "$header" "$check_failed" || rc=$?
fi
exit "$rc"
