#!/usr/bin/python3
"""The cluster part of the partition test; partition_test.sh runs it inside a private
network namespace that holds only `lo`.

Three nodes listen on 127.0.0.11, .12 and .13. After a baseline of writes, iptables
rules in the namespace drop every packet between .13 and the other two (both ways, TCP
and UDP), for CUT_SECONDS. Meanwhile:
  - a writer PUTs fresh keys through .11 and .12 in turn: every one must get 201
    (the majority keeps taking writes); its rate is printed;
  - once a second a PUT goes to .13: each must answer 503 within 5 s (never hang).
The test's own requests come from 127.0.0.1, which the rules leave alone. Then the
rules go (the heal), and .13 must hold every write it missed, with its value, read
from .13 alone (GET ?r=1 asks only the local copy): the time until it does is printed.

Prints one PARTITIONRESULT line. Usage: partition_test.py PATH_TO_RINGSTORE NAMESPACE
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from ringstore_nodes import Node, all_agree, free_port, quote, wait_for  # noqa: E402

IPS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
CLIENT_IP = "127.0.0.1"
CUT_SECONDS = 20
BEFORE_SECONDS = 5
BASELINE_KEYS = 50
PROBE_INTERVAL_S = 1.0
MINORITY_ANSWER_S_MAX = 5.0
PROBE_TIMEOUT_S = 15         # a hang shows as a probe well past MINORITY_ANSWER_S_MAX
HEAL_DEADLINE_S = 60
SECRET = "partition-test-secret"


def fail(msg):
    print("partition test: FAIL: " + msg, flush=True)
    sys.exit(1)


def check_namespace(ns):
    """Never touch iptables outside the test's own namespace, which must hold only lo."""
    here = subprocess.run(["ip", "netns", "identify", str(os.getpid())],
                          capture_output=True, text=True).stdout.split()
    if here != [ns]:
        fail("not running inside the namespace %s (ip netns identify says %r)" % (ns, here))
    links = sorted(os.listdir("/sys/class/net"))
    if links != ["lo"]:
        fail("the namespace holds more than lo: %s" % links)


def iptables(*args):
    r = subprocess.run(["iptables"] + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        fail("iptables %s: %s" % (" ".join(args), r.stderr.strip()))


def cut(ip, others):
    for o in others:
        iptables("-A", "INPUT", "-s", ip, "-d", o, "-j", "DROP")
        iptables("-A", "INPUT", "-s", o, "-d", ip, "-j", "DROP")


def heal():
    iptables("-F", "INPUT")


def reachable(src, dst, port, timeout_s=1.0):
    s = socket.socket()
    s.settimeout(timeout_s)
    try:
        s.bind((src, 0))
        s.connect((dst, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class MajorityWriter(threading.Thread):
    """PUTs fresh keys through .11 and .12 in turn, one at a time, until stopped."""

    def __init__(self, nodes, stop, prefix):
        super().__init__(daemon=True)
        self.nodes, self.stop, self.prefix = nodes, stop, prefix
        self.acked = {}        # key -> value
        self.failures = []     # (key, node, status or error)
        self.latencies = []

    def run(self):
        seq = 0
        while not self.stop.is_set():
            node = self.nodes[seq % 2]
            key = "partition/%s/%06d" % (self.prefix, seq)
            value = ("%s via %s" % (key, node.name)).encode() * (1 + seq % 7)
            t0 = time.monotonic()
            try:
                st, _, body = node.call("PUT", quote(key), body=value, timeout=10)
            except (OSError, http.client.HTTPException) as e:
                st, body = None, repr(e).encode()
            self.latencies.append(time.monotonic() - t0)
            if st == 201:
                self.acked[key] = value
            else:
                self.failures.append((key, node.name, st, body[:200]))
            seq += 1


def probe_minority(node, stop_at):
    """PUTs to the cut-off node once a second until stop_at: [(status, seconds)]."""
    probes = []
    k = 0
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        try:
            st, _, _ = node.call("PUT", quote("partition/minority/%03d" % k), body=b"x",
                                 timeout=PROBE_TIMEOUT_S)
        except (OSError, http.client.HTTPException) as e:
            st = type(e).__name__
        probes.append((st, time.monotonic() - t0))
        k += 1
        time.sleep(max(0, PROBE_INTERVAL_S - (time.monotonic() - t0)))
    return probes


def missing_on(node, expected):
    """Keys of `expected` that `node` does not hold locally with the expected value.
    One keep-alive connection for the pass (a new one after an error): a connection per
    key made a pass over ~12,000 keys take 30-40 s of the heal's deadline."""
    missing = []
    conn = None
    for key, value in expected.items():
        try:
            if conn is None:
                conn = http.client.HTTPConnection(
                    node.ip, node.port, timeout=5,
                    source_address=(node.client_ip, 0) if node.client_ip else None)
            conn.request("GET", quote(key) + "?r=1")
            r = conn.getresponse()
            st, body = r.status, r.read()
        except (OSError, http.client.HTTPException):
            st, body = None, b""
            if conn is not None:
                conn.close()
                conn = None
        if st != 200 or body != value:
            missing.append(key)
    if conn is not None:
        conn.close()
    return missing


def explain_missing(nodes, missing, before_acked):
    """Prints where the keys .13 lacks are: which writes they were, what each replica
    holds, and the counters of the paths that deliver or drop copies."""
    order = {k: i for i, k in enumerate(before_acked)}
    seqs = sorted(order[k] for k in missing if k in order)
    print("missing: %d of the %d keys written before the cut, positions %s; %d baseline"
          % (len(seqs), len(before_acked), seqs[:5] + ["..."] + seqs[-5:] if len(seqs) > 10 else seqs,
             len(missing) - len(seqs)), file=sys.stderr)
    for key in missing[:3] + missing[3:][-3:]:  # no key twice when few are missing
        try:
            st, _, body = nodes[0].call("GET", "/_/locate?key=" + quote(key), timeout=5)
            print("locate %s: %s %s" % (key, st, body.decode(errors="replace")), file=sys.stderr)
        except (OSError, http.client.HTTPException) as e:
            print("locate %s: %r" % (key, e), file=sys.stderr)
    for n in nodes:
        s = n.status() or {}
        print("%s: keys=%s hints=%s" % (n.name, s.get("keys"), s.get("hints")), file=sys.stderr)
        try:
            _, _, body = n.call("GET", "/_/metrics", timeout=5)
            for line in body.decode(errors="replace").splitlines():
                if not line.startswith("#") and any(w in line for w in (
                        "hint", "purge", "damaged", "handoff", "replica_errors", "repair")):
                    print("  %s" % line, file=sys.stderr)
        except (OSError, http.client.HTTPException) as e:
            print("  metrics: %r" % e, file=sys.stderr)


def main():
    binary, ns = sys.argv[1], sys.argv[2]
    check_namespace(ns)
    root = tempfile.mkdtemp(prefix="ringstore-partition.")
    nodes = []
    try:
        os.environ["RINGSTORE_SECRET"] = SECRET
        ports = [free_port(ip) for ip in IPS]
        seeds = ["%s:%d" % (IPS[i], ports[i]) for i in range(2)]
        for i, ip in enumerate(IPS):
            nodes.append(Node(binary, root, "n%d" % (i + 1), ip, ports[i], seeds, client_ip=CLIENT_IP))
        for n in nodes:
            n.start()
        if wait_for(lambda: all_agree(nodes, 3), 20) is None:
            fail("the three nodes did not see each other alive within 20 s")
        n1, n2, n3 = nodes

        baseline = {}
        for k in range(BASELINE_KEYS):
            key, value = "partition/baseline/%03d" % k, b"baseline %d" % k
            st, _, body = nodes[k % 3].call("PUT", quote(key), body=value)
            if st != 201:
                fail("baseline PUT %s answered %d %r" % (key, st, body))
            baseline[key] = value

        # The same writer for a few seconds before the cut: the rate to compare with.
        stop = threading.Event()
        before = MajorityWriter(nodes[:2], stop, "before")
        before.start()
        time.sleep(BEFORE_SECONDS)
        stop.set()
        before.join(15)
        if before.failures:
            fail("a PUT before the cut failed: %r" % (before.failures[0],))
        baseline.update(before.acked)
        rate_before = len(before.acked) / BEFORE_SECONDS

        cut(IPS[2], IPS[:2])
        t_cut = time.monotonic()
        if reachable(IPS[0], IPS[2], ports[2]) or reachable(IPS[2], IPS[1], ports[1]):
            fail("the iptables rules did not cut 127.0.0.13 off")
        if not reachable(CLIENT_IP, IPS[2], ports[2]):
            fail("the rules cut the test's own address off too")
        print("partition: 127.0.0.13 cut off from .11 and .12 for %d s" % CUT_SECONDS, flush=True)
        stop = threading.Event()
        writer = MajorityWriter(nodes[:2], stop, "majority")
        writer.start()
        convicted = {}
        watcher_stop = threading.Event()

        def watch():  # when the majority marks .13 down (for the figures only)
            while not watcher_stop.is_set() and len(convicted) < 2:
                for n in nodes[:2]:
                    s = n.status()
                    if n.name not in convicted and s and any(
                            m["addr"] == n3.addr and not m["alive"] for m in s["members"]):
                        convicted[n.name] = time.monotonic() - t_cut
                time.sleep(0.2)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        probes = probe_minority(n3, t_cut + CUT_SECONDS)
        stop.set()
        writer.join(15)
        watcher_stop.set()
        watcher.join(5)
        cut_s = time.monotonic() - t_cut

        heal()
        t_heal = time.monotonic()
        # The majority's records of what .13 missed drain when it holds them durably;
        # then every one is read back from .13's own copy.
        def majority_hints():
            counts = [n.status() for n in nodes[:2]]
            return None if None in counts else sum(c["hints"] for c in counts)
        alive_s = wait_for(lambda: all_agree(nodes, 3), HEAL_DEADLINE_S, 0.1)
        drained_s = wait_for(lambda: majority_hints() == 0, HEAL_DEADLINE_S, 0.1)
        drained_s = drained_s + alive_s if drained_s is not None and alive_s is not None else None
        expected = dict(writer.acked)
        pending = dict(expected)
        while pending and time.monotonic() - t_heal < HEAL_DEADLINE_S:
            pending = {k: expected[k] for k in missing_on(n3, pending)}
            if pending:
                time.sleep(0.5)
        heal_s = time.monotonic() - t_heal
        still_missing = len(pending)
        baseline_missing = missing_on(n3, baseline)

        lat = sorted(p[1] for p in probes)
        bad_probes = [p for p in probes if p[0] != 503 or p[1] >= MINORITY_ANSWER_S_MAX]
        rate = len(writer.acked) / cut_s
        wl = sorted(writer.latencies)
        print("PARTITIONRESULT cut_s=%.1f rate_before_per_s=%.0f majority_acked=%d majority_failed=%d "
              "majority_rate_per_s=%.0f majority_put_p50_ms=%.1f majority_put_max_ms=%.0f "
              "minority_probes=%d minority_503=%d minority_503_p50_s=%.2f minority_503_max_s=%.2f "
              "convicted_s=%s alive_again_s=%s hints_drained_s=%s held_all_s=%s missed_writes=%d still_missing=%d"
              % (cut_s, rate_before, len(writer.acked), len(writer.failures), rate,
                 1000 * wl[len(wl) // 2] if wl else 0, 1000 * wl[-1] if wl else 0,
                 len(probes), sum(1 for p in probes if p[0] == 503),
                 lat[len(lat) // 2] if lat else 0, lat[-1] if lat else 0,
                 "/".join("%.1f" % convicted[k] for k in sorted(convicted)) or "none",
                 "%.1f" % alive_s if alive_s is not None else "never",
                 "%.1f" % drained_s if drained_s is not None else "never",
                 "%.1f" % heal_s if not still_missing else "never", len(expected), still_missing),
              flush=True)
        problems = []
        if not writer.acked:
            problems.append("the majority took no writes")
        for key, name, st, body in writer.failures[:5]:
            problems.append("majority PUT %s via %s answered %s %r" % (key, name, st, body))
        if not probes:
            problems.append("no write reached the cut-off node")
        for st, s in bad_probes[:5]:
            problems.append("a PUT to the cut-off node answered %s after %.2f s "
                            "(want 503 within %.0f s)" % (st, s, MINORITY_ANSWER_S_MAX))
        if still_missing:
            problems.append("%d of the %d writes 127.0.0.13 missed were not there %d s after the heal"
                            % (still_missing, len(expected), HEAL_DEADLINE_S))
        if baseline_missing:
            problems.append("127.0.0.13 lost %d baseline keys" % len(baseline_missing))
            explain_missing(nodes, baseline_missing, before.acked)
        if problems:
            for n in nodes:
                print("--- %s log tail\n%s" % (n.name, n.log_tail(30)), file=sys.stderr)
            fail("; ".join(problems))
        for n in nodes:
            if n.terminate() != 0:
                fail("%s did not exit cleanly on SIGTERM" % n.name)
        print("partition test: PASS")
    finally:
        for n in nodes:
            n.kill9()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    # SIGTERM (ctest's timeout, the wrapper's trap) unwinds like an error, so that the
    # nodes are killed and the temp dirs removed by the finally clauses.
    signal.signal(signal.SIGTERM, lambda signo, frame: sys.exit(128 + signo))
    main()
