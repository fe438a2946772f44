# Sourced by tools/bench and tools/bench.d/cluster.sh: keeps one run's clean-up out of
# the next run's write figures.
#
# ext4 without a journal skips, when it makes a file or a directory, every inode freed
# in the last minute (five while the inode table is still dirty), with a buffer lookup
# for each. Right after a run removes its data dir (tens of thousands of files), write
# throughput falls by half or more for that minute. So a run syncs after it removes its
# data, leaves the time in a stamp file, and the next run waits until a minute has passed.
# BENCH_SETTLE_SECONDS sets the wait (default 60; 0: no wait).

settle_stamp="${TMPDIR:-/tmp}/ringstore-bench.removed-at"

settle_wait() {
  local want=${BENCH_SETTLE_SECONDS:-60} then now left
  [[ $want =~ ^[0-9]+$ ]] || { echo "tools/bench: BENCH_SETTLE_SECONDS must be a whole number of seconds" >&2; exit 2; }
  ((want > 0)) && [[ -r $settle_stamp ]] || return 0
  then=$(cat "$settle_stamp" 2>/dev/null || echo 0)
  [[ $then =~ ^[0-9]+$ ]] || return 0
  now=$(date +%s)
  left=$((then + want - now))
  ((left > 0 && left <= want)) || return 0
  echo "bench: a previous run removed its data $((now - then))s ago; waiting ${left}s so that the inodes it freed do not slow this run's writes (BENCH_SETTLE_SECONDS=0: no wait)" >&2
  sleep "$left"
}

settle_remove() { # dir
  rm -rf "$1"
  sync
  date +%s >"$settle_stamp" 2>/dev/null || true
}
