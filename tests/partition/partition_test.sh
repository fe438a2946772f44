#!/usr/bin/env bash
# Network partition test in a private network namespace that holds only `lo`: three
# nodes on 127.0.0.11-13 inside it, one cut off from the other two by iptables rules
# inside that namespace (partition_test.py does the cluster part, run in the namespace).
#
#   tests/partition/partition_test.sh PATH_TO_RINGSTORE
#
# Needs root, ip (iproute2) and iptables; tools/setup installs both. Without root it
# prints why and exits 77 (ctest: skipped); anything else that keeps the namespace from
# being made fails the test. The namespace is named after this shell's pid, removed at
# the start when a stale one by that name exists, and removed on exit by a trap with
# every process left in it. No traffic leaves 127.0.0.0/8: the namespace has no other
# interface, and partition_test.py refuses to run outside it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binary=${1:?usage: partition_test.sh PATH_TO_RINGSTORE}
ns=ringstore-part-$$

fail() { echo "partition test: FAIL: $*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  echo "partition test: SKIP: needs root to create a network namespace and iptables rules"
  exit 77
fi
for tool in ip iptables; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (tools/setup installs iproute2 and iptables)"
done
[ -x "$binary" ] || fail "no ringstore binary at $binary"

child=
cleanup() {
  local pids
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; fi
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  # Only processes inside this test's own namespace: the nodes it started.
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
  echo "partition test: removing a stale namespace $ns"
  ip netns del "$ns" || fail "cannot remove the stale namespace $ns"
fi
ip netns add "$ns" || fail "cannot create the network namespace $ns (ip netns add)"
ip -n "$ns" link set lo up || fail "cannot bring up lo in $ns"
links=$(ip -n "$ns" -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')
[ "$links" = "lo " ] || fail "namespace $ns holds more than lo: $links"
ip netns exec "$ns" iptables -S >/dev/null || fail "iptables does not work inside $ns"

# In the background with `wait`, so that a signal runs the traps at once (bash defers
# them until a foreground child exits).
ip netns exec "$ns" /usr/bin/python3 "$here/partition_test.py" "$binary" "$ns" &
child=$!
rc=0
wait "$child" || rc=$?
child=
exit "$rc"
