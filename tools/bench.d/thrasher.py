#!/usr/bin/env python3
"""Verifying load generator for a ringstore cluster.

Each worker thread owns a private key space and repeats one cycle per fresh
key, for the given duration:

    PUT  random value        expect 201 and ETag = MD5(value)
    GET                      expect 200 with exactly that value
    DELETE                   expect 204
    GET                      expect 404

The four requests of a cycle go to different nodes in turn (worker w sends
request j of its run to node (w + j) mod N over a keep-alive connection per
node), so every read is checked against a write coordinated elsewhere.
After the timed part, a sample of the deleted keys of every worker is read
again through every node and must still answer 404 (nothing resurrected).

This is the cycle of minikeyvalue's tools/thrasher.go (PUT, GET and compare,
DELETE) with one more GET that checks the delete.

Failures fall in two classes:
  errors      the request did not get a usable answer: connection failures,
              timeouts, 5xx and other unexpected statuses
  mismatches  the cluster answered but broke its contract: a GET after an
              acknowledged PUT returning 404 or other bytes, a GET after an
              acknowledged DELETE returning 200, a wrong ETag
After an error the cycle is abandoned and the worker moves to a new key.

Prints one line "THRASHRESULT key=value ..." on stdout; details of the first
failures go to stderr.  Exit status 0 when nothing failed, 1 otherwise.

Usage: thrasher.py [--duration S] [--workers W] [--max-size B] URL [URL ...]
"""

import argparse
import hashlib
import http.client
import random
import sys
import threading
import time
import urllib.parse

TIMEOUT_S = 10
FINAL_CHECK_PER_WORKER = 20
MAX_REPORTED = 20


class Shared:
    def __init__(self):
        self.lock = threading.Lock()
        self.reported = 0

    def report(self, msg):
        with self.lock:
            self.reported += 1
            if self.reported <= MAX_REPORTED:
                print("thrasher: " + msg, file=sys.stderr, flush=True)
            elif self.reported == MAX_REPORTED + 1:
                print("thrasher: (further failures not shown)", file=sys.stderr, flush=True)


class Failed(Exception):
    """Ends the current cycle; the counter has already been bumped."""


class Worker(threading.Thread):
    def __init__(self, index, nodes, run_id, max_size, deadline, shared):
        super().__init__(daemon=True)
        self.index = index
        self.nodes = nodes
        self.run_id = run_id
        self.max_size = max_size
        self.deadline = deadline
        self.shared = shared
        self.rng = random.Random("%s/%d" % (run_id, index))
        self.conns = [None] * len(nodes)
        self.turn = index
        self.requests = 0
        self.cycles = 0
        self.errors = 0
        self.mismatches = 0
        self.lat = []        # seconds per request
        self.cycle_lat = []  # seconds per complete cycle
        self.deleted = []    # keys whose DELETE was acknowledged and checked
        self.by_kind = {"put": [], "get": [], "delete": []}  # seconds, per method

    # --- HTTP ---------------------------------------------------------------

    def conn(self, n):
        c = self.conns[n]
        if c is None:
            host, port = self.nodes[n]
            c = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
            self.conns[n] = c
        return c

    def drop(self, n):
        c = self.conns[n]
        self.conns[n] = None
        if c is not None:
            try:
                c.close()
            except OSError:
                pass

    def call(self, method, key, body=None, node=None, timed=True):
        """One request; returns (status, headers, body, node). Raises Failed."""
        if node is None:
            node = self.turn % len(self.nodes)
            self.turn += 1
        headers = {}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        path = "/" + urllib.parse.quote(key)
        t0 = time.perf_counter()
        try:
            c = self.conn(node)
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            if r.will_close:
                self.drop(node)
        except (OSError, http.client.HTTPException) as e:
            self.drop(node)
            self.errors += 1
            self.shared.report("%s %s via node %d: %s: %s"
                               % (method, path, node + 1, type(e).__name__, e))
            raise Failed()
        if timed:
            dt = time.perf_counter() - t0
            self.lat.append(dt)
            self.by_kind[method.lower()].append(dt)
            self.requests += 1
        return r.status, hdrs, data, node

    def unexpected(self, what, key, node, status, data):
        self.errors += 1
        self.shared.report("%s /%s via node %d: unexpected status %d: %r"
                           % (what, key, node + 1, status, data[:200]))
        raise Failed()

    def mismatch(self, msg):
        self.mismatches += 1
        self.shared.report("MISMATCH " + msg)
        raise Failed()

    # --- the cycle ------------------------------------------------------------

    def cycle(self, seq):
        key = "thrash/%s/w%02d/%08d" % (self.run_id, self.index, seq)
        value = self.rng.randbytes(self.rng.randint(1, self.max_size))
        etag = '"%s"' % hashlib.md5(value).hexdigest()
        t0 = time.perf_counter()

        status, hdrs, data, node = self.call("PUT", key, value)
        if status != 201:
            self.unexpected("PUT", key, node, status, data)
        if hdrs.get("etag") != etag:
            self.mismatch("PUT /%s via node %d: ETag %s, expected %s"
                          % (key, node + 1, hdrs.get("etag"), etag))
        put_node = node

        status, hdrs, data, node = self.call("GET", key)
        if status == 200:
            if data != value:
                self.mismatch("GET /%s via node %d after PUT via node %d: %d bytes "
                              "that differ from the %d written"
                              % (key, node + 1, put_node + 1, len(data), len(value)))
        elif status == 404:
            self.mismatch("GET /%s via node %d after PUT via node %d answered 404"
                          % (key, node + 1, put_node + 1))
        else:
            self.unexpected("GET", key, node, status, data)

        status, hdrs, data, node = self.call("DELETE", key)
        if status != 204:
            self.unexpected("DELETE", key, node, status, data)
        del_node = node

        status, hdrs, data, node = self.call("GET", key)
        if status == 200:
            same = "the deleted value" if data == value else "%d other bytes" % len(data)
            self.mismatch("GET /%s via node %d after DELETE via node %d answered 200 "
                          "with %s" % (key, node + 1, del_node + 1, same))
        elif status != 404:
            self.unexpected("GET", key, node, status, data)

        self.cycle_lat.append(time.perf_counter() - t0)
        self.cycles += 1
        self.deleted.append(key)

    def run(self):
        seq = 0
        while time.monotonic() < self.deadline:
            try:
                self.cycle(seq)
            except Failed:
                pass
            except Exception as e:  # a bug here must not look like a clean run
                self.errors += 1
                self.shared.report("worker %d: %s: %s" % (self.index, type(e).__name__, e))
            seq += 1

    def final_check(self):
        """Deleted keys must still be gone, seen from every node."""
        sample = self.deleted[-FINAL_CHECK_PER_WORKER:]
        for key in sample:
            for n in range(len(self.nodes)):
                try:
                    status, _, data, _ = self.call("GET", key, node=n, timed=False)
                except Failed:
                    continue
                if status == 200:
                    self.mismatches += 1
                    self.shared.report("MISMATCH after the run, GET /%s via node %d "
                                       "answered 200 with %d bytes; it was deleted"
                                       % (key, n + 1, len(data)))
                elif status != 404:
                    self.errors += 1
                    self.shared.report("after the run, GET /%s via node %d: status %d"
                                       % (key, n + 1, status))
        for n in range(len(self.nodes)):
            self.drop(n)


def percentile(sorted_xs, p):
    if not sorted_xs:
        return 0.0
    i = max(0, min(len(sorted_xs) - 1, int(round(p / 100.0 * len(sorted_xs) + 0.5)) - 1))
    return sorted_xs[i]


def main():
    ap = argparse.ArgumentParser(description="Verifying PUT/GET/DELETE load on ringstore nodes.")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    ap.add_argument("--workers", type=int, default=16, help="concurrent workers (default 16)")
    ap.add_argument("--max-size", type=int, default=1024,
                    help="values are 1..B random bytes (default 1024)")
    ap.add_argument("--run-id", default=None, help="key namespace (default: random)")
    ap.add_argument("urls", nargs="+", metavar="URL", help="node base URL, e.g. http://127.0.0.1:3000")
    a = ap.parse_args()
    if a.workers < 1 or a.duration <= 0 or a.max_size < 1:
        ap.error("--workers, --duration and --max-size must be positive")

    nodes = []
    for url in a.urls:
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname or not u.port:
            ap.error("not an http://HOST:PORT URL: %s" % url)
        nodes.append((u.hostname, u.port))

    run_id = a.run_id or "%08x" % random.SystemRandom().getrandbits(32)
    shared = Shared()
    start = time.monotonic()
    workers = [Worker(i, nodes, run_id, a.max_size, start + a.duration, shared)
               for i in range(a.workers)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0

    timed_errors = sum(w.errors for w in workers)
    timed_mismatches = sum(w.mismatches for w in workers)
    checked = 0
    for w in workers:
        checked += min(len(w.deleted), FINAL_CHECK_PER_WORKER)
        w.final_check()

    lat = sorted(x for w in workers for x in w.lat)
    clat = sorted(x for w in workers for x in w.cycle_lat)
    errors = sum(w.errors for w in workers)
    mismatches = sum(w.mismatches for w in workers)
    us = lambda s: s * 1e6
    kinds = ""
    for kind in ("put", "get", "delete"):
        xs = sorted(x for w in workers for x in w.by_kind[kind])
        kinds += " %s_p50_us=%.0f %s_p99_us=%.0f" % (kind, us(percentile(xs, 50)),
                                                      kind, us(percentile(xs, 99)))
    print("THRASHRESULT requests=%d cycles=%d duration_us=%.0f workers=%d nodes=%d "
          "p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f "
          "cycle_p50_us=%.0f cycle_p99_us=%.0f errors=%d mismatches=%d "
          "final_errors=%d final_mismatches=%d final_checked=%d%s"
          % (len(lat), len(clat), us(elapsed), a.workers, len(nodes),
             us(percentile(lat, 50)), us(percentile(lat, 90)), us(percentile(lat, 99)),
             us(lat[-1] if lat else 0), us(percentile(clat, 50)), us(percentile(clat, 99)),
             errors, mismatches, errors - timed_errors, mismatches - timed_mismatches,
             checked, kinds), flush=True)
    return 1 if errors or mismatches or not clat else 0


if __name__ == "__main__":
    sys.exit(main())
