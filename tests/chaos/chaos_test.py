#!/usr/bin/python3
"""Chaos test: five real nodes, writers running, kill -9 and restart of random nodes.

For --seconds (default 60) writer threads PUT and DELETE keys through random nodes while
a seeded monkey kill -9s a random node and restarts a dead one every 0.5-3 s (at most
two down at once, so that every key keeps W=2 reachable nodes among its replicas and
stand-ins); half of the restarts give the node a wall clock 30 s behind, 15 s behind or
15 or 25 s ahead (libfaketime), so coordinators up to 55 s apart write the same keys. Then every node is restarted, the cluster settles (all members alive in
every view, no hints left anywhere, two anti-entropy passes done on every node with
nothing in flight), and the test checks, in this order:

  copies   /_/locate of every key ever written: each of its N=3 replicas holds the
           newest version (tombstones included); and the sum of the nodes' /_/status
           key counts is N x the live keys (no extra or missing copies); no hints left.
           Checked before any read, so read repair cannot hide a missing copy.
  values   a GET of every key through a random node answers the state of its last
           acknowledged write (201 PUT: that value; 204 DELETE: 404), or the state of a
           write issued after it whose answer never came or was not a success (such a
           write may have landed). Anything else is a lost write.

Outcomes of a write: "acked" (201/204), "failed" (any other status: 503 may still have
landed on some replicas), "unknown" (no answer: the coordinator was killed). A refused
connection never reached a node and is retried on another one.

The seed comes from CHAOS_SEED (or --seed), else it is random; it is printed, and a
failing run is repeated with CHAOS_SEED=<seed> (node timing still varies between runs).
--runs R runs R seeds in a row (seed, seed+1, ...). Prints one CHAOSRESULT line per run.
Exit status 0 when every run passed.

Usage: chaos_test.py [--seconds S] [--seed X] [--runs R] PATH_TO_RINGSTORE
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from ringstore_nodes import Node, all_agree, faketime_env, free_port, quote, wait_for  # noqa: E402

NODE_COUNT = 5
N = 3                      # the nodes' default replica count
DOWN_MAX = 2               # nodes down at once: with N=3, W=2 still has live stand-ins
WRITERS = 6
KEYS_PER_WRITER = 40       # 240 keys: overwrites and deletes of the same keys are common
DELETE_SHARE = 0.15
VALUE_BYTES_MAX = 2048
CLIENT_TIMEOUT_S = 15      # past the worst write: two 2 s replica timeouts in a row
SETTLE_DEADLINE_S = 120
# Anti-entropy runs a pass this often on the test nodes, so that settling takes seconds.
AE_INTERVAL_MS = 1000
SECRET = "chaos-test-secret"
# Clock offsets a restarted node may get (seconds): pairs stay within the nodes' 60 s
# version drift, and the widest pair is 55 s apart.
SKEWS_S = (-30, -15, 15, 25)

ACKED, FAILED, UNKNOWN = "acked", "failed", "unknown"
ABSENT = None              # the state of a key that reads 404
T0 = [0.0]


class Op:
    __slots__ = ("kind", "value", "outcome", "status", "node", "version", "t0")

    def __init__(self, kind, value, node):
        self.kind, self.value, self.node = kind, value, node
        self.outcome, self.status, self.version = None, 0, None
        self.t0 = time.monotonic()

    def state(self):
        return ABSENT if self.kind == "delete" else self.value


class Writer(threading.Thread):
    """Owns KEYS_PER_WRITER keys; one write at a time, so each key's history is ordered."""

    def __init__(self, index, nodes, seed, stop, report):
        super().__init__(daemon=True)
        self.nodes, self.stop, self.report = nodes, stop, report
        self.rng = random.Random("%d/writer/%d" % (seed, index))
        self.keys = ["chaos/%d/w%d/k%02d" % (seed, index, k) for k in range(KEYS_PER_WRITER)]
        self.history = {k: [] for k in self.keys}
        self.unexpected = 0
        self.refused = 0
        self.hung = 0         # no answer within CLIENT_TIMEOUT_S from a live node
        self.latency_max_s = 0.0
        self.seq = 0

    def run(self):
        while not self.stop.is_set():
            key = self.rng.choice(self.keys)
            self.seq += 1
            if self.rng.random() < DELETE_SHARE:
                self.issue(key, "delete", None)
            else:
                size = self.rng.randint(0, VALUE_BYTES_MAX)
                value = ("%s#%d#" % (key, self.seq)).encode() + self.rng.randbytes(size)
                self.issue(key, "put", value)

    def issue(self, key, kind, value):
        order = list(range(len(self.nodes)))
        self.rng.shuffle(order)
        for i in order:
            op = Op(kind, value, i)
            method = "PUT" if kind == "put" else "DELETE"
            try:
                st, hdrs, body = self.nodes[i].call(method, quote(key), body=value,
                                                    timeout=CLIENT_TIMEOUT_S)
            except ConnectionRefusedError:
                self.refused += 1  # nothing reached the node: try another
                continue
            except TimeoutError:
                # kill -9 resets connections at once: silence this long is a hang.
                op.outcome = UNKNOWN
                self.history[key].append(op)
                self.hung += 1
                self.report("%s /%s via n%d: no answer in %d s" % (method, key, i + 1, CLIENT_TIMEOUT_S))
                return
            except (OSError, http.client.HTTPException):
                op.outcome = UNKNOWN  # the request may have been sent
                self.history[key].append(op)
                return
            finally:
                self.latency_max_s = max(self.latency_max_s, time.monotonic() - op.t0)
            op.status = st
            op.version = hdrs.get("x-ringstore-version")
            if (kind == "put" and st == 201) or (kind == "delete" and st == 204):
                op.outcome = ACKED
                if kind == "put" and hdrs.get("etag") != '"%s"' % hashlib.md5(value).hexdigest():
                    self.unexpected += 1
                    self.report("PUT /%s via n%d: ETag %s does not match the value"
                                % (key, i + 1, hdrs.get("etag")))
            else:
                op.outcome = FAILED
                if st != 503:
                    self.unexpected += 1
                    self.report("%s /%s via n%d: unexpected %d %r" % (method, key, i + 1, st, body[:200]))
            self.history[key].append(op)
            return
        time.sleep(0.05)  # every node refused: all restarting at once


class Reporter:
    MAX = 30

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0

    def __call__(self, msg):
        with self.lock:
            self.count += 1
            if self.count <= self.MAX:
                print("chaos: " + msg, file=sys.stderr, flush=True)
            elif self.count == self.MAX + 1:
                print("chaos: (further messages not shown)", file=sys.stderr, flush=True)


def monkey(nodes, rng, seconds, t0, events):
    """kill -9 a random live node or restart a dead one, every 0.5-3 s, until the end."""
    end = t0 + seconds
    crashed = set()  # left down for the report: restarting would hide the crash
    while True:
        pause = rng.uniform(0.5, 3.0)
        if time.monotonic() + pause >= end:
            time.sleep(max(0, end - time.monotonic()))
            return
        time.sleep(pause)
        t = time.monotonic() - t0
        for i, n in enumerate(nodes):
            if n.crashed() is not None and i not in crashed:
                crashed.add(i)
                print("  %5.1f s  n%d exited by itself (status %s)" % (t, i + 1, n.crashed()), flush=True)
        down = [i for i, n in enumerate(nodes) if not n.running() and i not in crashed]
        up = [i for i, n in enumerate(nodes) if n.running()]
        if not down and len(crashed) >= DOWN_MAX:
            continue  # a crash already took the nodes this run may lose
        if down and (len(down) + len(crashed) >= DOWN_MAX or rng.random() < 0.5):
            i = rng.choice(down)
            skew = rng.choice(SKEWS_S) if rng.random() < 0.5 else 0
            nodes[i].start(env=faketime_env(skew) if skew else None)
            events.append((t, "restart" if not skew else "restart %+ds" % skew, i))
        else:
            i = rng.choice(up)
            nodes[i].kill9()
            events.append((t, "kill -9", i))
        print("  %5.1f s  %-8s n%d" % (t, events[-1][1], i + 1), flush=True)


def ae_idle_passes(nodes):
    """Each node's completed anti-entropy passes, or None while any node has transfers
    queued or in flight (or does not answer)."""
    out = []
    for n in nodes:
        s = n.status()
        if s is None or "anti_entropy" not in s:
            return None
        ae = s["anti_entropy"]
        if ae["queued"] or ae["in_flight"]:
            return None
        out.append(ae["passes"])
    return out


def status_sums(nodes):
    keys = hints = 0
    for n in nodes:
        s = n.status()
        if s is None:
            return None
        keys += s["keys"]
        hints += s["hints"]
    return keys, hints


def locate(nodes, key, rng):
    """Replica entries of `key` from /_/locate through some node; None if none answers."""
    for _ in range(10):
        n = rng.choice(nodes)
        try:
            st, _, body = n.call("GET", "/_/locate?key=" + quote(key)[1:], timeout=10)
        except (OSError, http.client.HTTPException):
            continue
        if st == 200:
            return json.loads(body)["replicas"]
        time.sleep(0.2)
    return None


def read(nodes, key, rng):
    """(status, body, version) of a client GET through some node, retrying a 503."""
    for _ in range(10):
        n = rng.choice(nodes)
        try:
            st, hdrs, body = n.call("GET", quote(key), timeout=10)
        except (OSError, http.client.HTTPException):
            continue
        if st in (200, 404):
            return st, body, hdrs.get("x-ringstore-version")
        time.sleep(0.2)
    return None


def allowed_states(ops):
    """The states a key may end in, and whether an acknowledged write bounds them."""
    last = max((i for i, op in enumerate(ops) if op.outcome == ACKED), default=-1)
    states = [ABSENT] if last < 0 else [ops[last].state()]
    states += [op.state() for op in ops[last + 1:]]
    return states, last >= 0


def describe(ops):
    return ", ".join("%s%s:%s@n%d(%.1fs)" % (op.kind, "" if op.value is None else "(%dB)" % len(op.value),
                                      op.outcome if op.outcome != FAILED else str(op.status),
                                      op.node + 1, op.t0 - T0[0]) for op in ops[-6:])


def describe_replicas(reps):
    return " ".join("%s=%s%s%s" % (e["addr"].rsplit(":", 1)[1], (e["version"] or "none")[:16],
                                   "(tombstone)" if e["tombstone"] else "",
                                   "" if "error" not in e else "(%s)" % e["error"]) for e in reps)


def verify(nodes, writers, seed, report):
    rng = random.Random(seed ^ 0x5EED)
    history = {}
    for w in writers:
        history.update({k: ops for k, ops in w.history.items() if ops})
    r = dict(keys=len(history), lost=0, phantom=0, unreadable=0, under_replicated=0,
             under_acked=0, under_maybe=0, stale_reads=0, live=0)
    # Copies first: a GET's read repair would mend what this is meant to find.
    located = {k: locate(nodes, k, rng) for k in history}
    sums = status_sums(nodes)
    for key, ops in history.items():
        reps = located[key]
        if reps is None:
            r["unreadable"] += 1
            report("%s: /_/locate did not answer" % key)
            continue
        versions = [e["version"] for e in reps]
        newest = max((v for v in versions if v), default=None)
        if newest is not None:
            copies = versions.count(newest)
            if copies != N or len(reps) != N:
                r["under_replicated"] += 1
                # Did an acknowledged write make the newest version, or one with no answer?
                by_ack = any(op.outcome == ACKED and op.version == newest for op in ops)
                r["under_acked" if by_ack else "under_maybe"] += 1
                report("%s: %d of %d replicas hold the newest version %s (%s); replicas: %s; "
                       "history: %s" % (key, copies, len(reps), newest, "written by an acknowledged "
                                        "write" if by_ack else "written by a write without an "
                                        "answer: no hint can exist, only anti-entropy restores it",
                                        describe_replicas(reps), describe(ops)))
            if not any(e["tombstone"] for e in reps if e["version"] == newest):
                r["live"] += 1
        got = read(nodes, key, rng)
        if got is None:
            r["unreadable"] += 1
            report("%s: no GET answered 200 or 404" % key)
            continue
        st, body, version = got
        state = body if st == 200 else ABSENT
        if newest is not None and version != newest and not (st == 404 and version is None):
            r["stale_reads"] += 1
        states, bounded = allowed_states(ops)
        if state in states:
            continue
        issued = any(op.state() == state for op in ops) or state is ABSENT
        if bounded and issued:
            r["lost"] += 1
            report("LOST %s: reads %s; history: %s"
                   % (key, "404" if state is ABSENT else "%d bytes of an older write" % len(state),
                      describe(ops)))
        else:
            r["phantom"] += 1
            report("PHANTOM %s: reads %s that no write of it issued; history: %s"
                   % (key, "404" if state is ABSENT else "%d bytes" % len(state), describe(ops)))
    r["keys_sum"], r["hints"] = sums if sums else (-1, -1)
    if sums and r["keys_sum"] != N * r["live"]:
        # Which node holds more (or fewer) live copies than /_/locate shows it owning?
        seen = {}
        for reps in located.values():
            for e in reps or []:
                if e["version"] and not e["tombstone"]:
                    seen[e["addr"]] = seen.get(e["addr"], 0) + 1
        for n in nodes:
            s = n.status()
            report("%s (%s): %s live keys, %d live copies in its preference lists"
                   % (n.name, n.addr, s["keys"] if s else "?", seen.get(n.addr, 0)))
    return r


def run_once(binary, seed, seconds):
    root = tempfile.mkdtemp(prefix="ringstore-chaos.")
    report = Reporter()
    nodes = []
    try:
        ports = [free_port("127.0.0.1") for _ in range(NODE_COUNT)]
        seeds = ["127.0.0.1:%d" % p for p in ports[:2]]
        os.environ["RINGSTORE_SECRET"] = SECRET
        for i, p in enumerate(ports):
            nodes.append(Node(binary, root, "n%d" % (i + 1), "127.0.0.1", p, seeds,
                              extra_args=["--anti-entropy-interval-ms", str(AE_INTERVAL_MS)]))
        for n in nodes:
            n.start()
        if wait_for(lambda: all_agree(nodes, NODE_COUNT), 20) is None:
            print("FAIL: the %d nodes did not see each other alive within 20 s" % NODE_COUNT)
            return False, None

        print("chaos seed=%d: %d nodes, %d writers, %d s of kill -9 and restarts"
              % (seed, NODE_COUNT, WRITERS, seconds), flush=True)
        stop = threading.Event()
        writers = [Writer(i, nodes, seed, stop, report) for i in range(WRITERS)]
        for w in writers:
            w.start()
        events = []
        t0 = time.monotonic()
        T0[0] = t0
        print("ports: " + " ".join("n%d=%d" % (i + 1, n.port) for i, n in enumerate(nodes)))
        monkey(nodes, random.Random(seed), seconds, t0, events)
        stop.set()
        for w in writers:
            w.join(CLIENT_TIMEOUT_S + 5)

        # Settle: everyone back, every view agrees, every hint delivered.
        t_end = time.monotonic()
        crashes = [(n.name, n.crashed()) for n in nodes if n.crashed() is not None]
        for name, code in crashes:
            report("%s exited by itself (status %s); log tail:\n%s"
                   % (name, code, nodes[int(name[1:]) - 1].log_tail(20)))
        for n in nodes:
            if not n.running():
                n.start()
        agree_s = wait_for(lambda: all_agree(nodes, NODE_COUNT), 30)
        drained_s = wait_for(lambda: status_sums(nodes) is not None and status_sums(nodes)[1] == 0,
                             SETTLE_DEADLINE_S, 0.25)
        # Anti-entropy heals what no hint covers (a coordinator killed between the remote
        # copies and its own) and hands stray copies to their owners: settled means two
        # whole passes on every node since the restarts, with nothing left in flight.
        start = None
        while start is None and time.monotonic() - t_end < SETTLE_DEADLINE_S:
            start = ae_idle_passes(nodes)
            time.sleep(0.25)
        if start is not None:
            wait_for(lambda: (lambda p: p is not None and all(a >= b + 2 for a, b in zip(p, start)))(
                ae_idle_passes(nodes)), SETTLE_DEADLINE_S, 0.25)
        settle_s = time.monotonic() - t_end
        r = verify(nodes, writers, seed, report)

        ops = [op for w in writers for h in w.history.values() for op in h]
        count = lambda kind, outcome: sum(1 for op in ops if op.kind == kind and op.outcome == outcome)
        unexpected = sum(w.unexpected for w in writers)
        hung = sum(w.hung for w in writers)
        latency_max_s = max(w.latency_max_s for w in writers)
        kills = sum(1 for e in events if e[1] == "kill -9")
        ok = (not crashes and agree_s is not None and drained_s is not None and r["lost"] == 0 and
              r["phantom"] == 0 and r["unreadable"] == 0 and r["under_replicated"] == 0 and
              r["keys_sum"] == N * r["live"] and r["hints"] == 0 and unexpected == 0 and hung == 0 and
              count("put", ACKED) > 0)
        print("CHAOSRESULT seed=%d seconds=%d kills=%d writes=%d acked=%d acked_puts=%d "
              "acked_deletes=%d failed=%d unknown=%d lost=%d phantom=%d unreadable=%d "
              "keys=%d live=%d under_replicated=%d (acked_version=%d unanswered_version=%d) "
              "stale_reads=%d keys_sum=%d expected_sum=%d hints=%d settle_s=%s unexpected=%d "
              "hung=%d latency_max_s=%.1f %s"
              % (seed, seconds, kills, len(ops), count("put", ACKED) + count("delete", ACKED),
                 count("put", ACKED), count("delete", ACKED),
                 count("put", FAILED) + count("delete", FAILED),
                 count("put", UNKNOWN) + count("delete", UNKNOWN), r["lost"], r["phantom"],
                 r["unreadable"], r["keys"], r["live"], r["under_replicated"], r["under_acked"],
                 r["under_maybe"], r["stale_reads"], r["keys_sum"], N * r["live"], r["hints"],
                 "%.1f" % settle_s if drained_s is not None else "never", unexpected, hung,
                 latency_max_s,
                 "PASS" if ok else "FAIL"), flush=True)
        if not ok:
            for n in nodes:
                print("--- %s log tail\n%s" % (n.name, n.log_tail(8)), file=sys.stderr)
        return ok, r
    finally:
        for n in nodes:
            n.kill9()
        if os.environ.get("CHAOS_KEEP"):
            print("chaos: kept %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("CHAOS_SECONDS", "60")))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--runs", type=int, default=int(os.environ.get("CHAOS_RUNS", "1")))
    ap.add_argument("binary")
    a = ap.parse_args()
    seed = a.seed
    if seed is None and os.environ.get("CHAOS_SEED"):
        seed = int(os.environ["CHAOS_SEED"])
    if seed is None:
        seed = random.SystemRandom().randrange(1, 1 << 31)
    print("chaos: base seed %d (rerun with CHAOS_SEED=%d)" % (seed, seed), flush=True)
    failed = []
    for k in range(a.runs):
        ok, _ = run_once(a.binary, seed + k, a.seconds)
        if not ok:
            failed.append(seed + k)
    if failed:
        print("FAIL: seeds %s (rerun one with CHAOS_SEED=<seed>)" % failed)
        return 1
    return 0


if __name__ == "__main__":
    # SIGTERM (ctest's timeout, the wrapper's trap) unwinds like an error, so that the
    # nodes are killed and the temp dirs removed by the finally clauses.
    signal.signal(signal.SIGTERM, lambda signo, frame: sys.exit(128 + signo))
    sys.exit(main())
