#!/usr/bin/env python3
"""Cluster-wide listing benchmark: writes KEYS tiny values through every node of a
running cluster (tools/cluster up 5), then lists them in pages of PAGE through each
node in turn and prints, per pass, the total time, the wall time per page and the
internal /_/internal/list requests per page (from the listing node's /_/metrics).
Every pass must return every key exactly once, in byte order.

  RINGSTORE_CLUSTER_DIR=/dev/shm/rs-list tools/cluster up 5
  RINGSTORE_CLUSTER_DIR=/dev/shm/rs-list tools/bench.d/list_bench.py --keys 100000
  RINGSTORE_CLUSTER_DIR=/dev/shm/rs-list tools/cluster down --purge

Only 127.0.0.1 is ever contacted.
"""
import argparse
import glob
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse


def ports(cluster_dir):
    out = []
    for d in sorted(glob.glob(os.path.join(cluster_dir, "n*")), key=lambda p: int(p.rsplit("n", 1)[1])):
        with open(os.path.join(d, "port")) as f:
            out.append(int(f.read().strip()))
    return out


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read()


def wait_converged(node_ports, deadline_s=60):
    t0 = time.time()
    while time.time() - t0 < deadline_s:
        ok = True
        for p in node_ports:
            try:
                c = http.client.HTTPConnection("127.0.0.1", p, timeout=3)
                st, body = get(c, "/_/status")
                c.close()
                s = json.loads(body)
                members = s["members"]
                if st != 200 or len(members) != len(node_ports) or any(
                        not m["alive"] or m.get("state", "normal") != "normal" for m in members):
                    ok = False
            except (OSError, ValueError, KeyError):
                ok = False
        if ok:
            return True
        time.sleep(0.5)
    return False


def load(node_ports, keys, prefix, value, threads):
    errors = []
    done = [0]
    lock = threading.Lock()

    def worker(t):
        conn = http.client.HTTPConnection("127.0.0.1", node_ports[t % len(node_ports)], timeout=30)
        for i in range(t, keys, threads):
            path = "/" + prefix + "%07d" % i
            for attempt in range(5):
                try:
                    conn.request("PUT", path, body=value)
                    r = conn.getresponse()
                    r.read()
                    if r.status == 201:
                        break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", node_ports[t % len(node_ports)], timeout=30)
                time.sleep(0.05 * (attempt + 1))
            else:
                with lock:
                    errors.append(path)
            with lock:
                done[0] += 1

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.time() - t0, errors


def peer_requests(conn):
    st, body = get(conn, "/_/metrics")
    for line in body.decode().splitlines():
        if line.startswith("ringstore_list_peer_requests_total "):
            return int(line.split()[1])
    raise SystemExit("no ringstore_list_peer_requests_total in /_/metrics: an older binary?")


def list_pass(port, prefix, page):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    before = peer_requests(conn)
    keys, page_ms, start = [], [], ""
    t0 = time.time()
    while True:
        q = "?list&limit=%d" % page
        if start:
            q += "&start=" + urllib.parse.quote(start, safe="")
        p0 = time.time()
        st, body = get(conn, "/" + urllib.parse.quote(prefix) + q)
        page_ms.append((time.time() - p0) * 1000)
        if st != 200:
            raise SystemExit("page %d through :%d answered %d: %s" % (len(page_ms), port, st, body[:300]))
        j = json.loads(body)
        keys.extend(j["keys"])
        start = j["next"]
        if not start:
            break
    total_s = time.time() - t0
    asked = peer_requests(conn) - before
    conn.close()
    return keys, total_s, page_ms, asked


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cluster-dir", default=os.environ.get("RINGSTORE_CLUSTER_DIR", "/tmp/ringstore-cluster"))
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--page", type=int, default=1000)
    ap.add_argument("--prefix", default="lb/")
    ap.add_argument("--value-bytes", type=int, default=1)
    ap.add_argument("--threads", type=int, default=40)
    ap.add_argument("--skip-load", action="store_true")
    a = ap.parse_args()
    node_ports = ports(a.cluster_dir)
    if not node_ports:
        raise SystemExit("no cluster in %s (tools/cluster up 5)" % a.cluster_dir)
    if not wait_converged(node_ports):
        raise SystemExit("the cluster did not converge")
    if not a.skip_load:
        secs, errors = load(node_ports, a.keys, a.prefix, b"v" * a.value_bytes, a.threads)
        print("wrote %d keys of %d byte(s) through %d nodes in %.1f s (%.0f PUT/s), %d failed"
              % (a.keys, a.value_bytes, len(node_ports), secs, a.keys / secs, len(errors)))
        if errors:
            raise SystemExit("writes failed: %s ..." % errors[:5])
    expected = [a.prefix + "%07d" % i for i in range(a.keys)]
    print("| through | pages | total s | ms/page p50 | mean | p90 | max | internal requests/page |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for n, port in enumerate(node_ports):
        keys, total_s, page_ms, asked = list_pass(port, a.prefix, a.page)
        if keys != expected:
            missing = len(set(expected) - set(keys))
            raise SystemExit("through node %d: %d keys listed, %d missing, in order: %s"
                             % (n + 1, len(keys), missing, keys == sorted(keys)))
        pm = sorted(page_ms)
        print("| node %d | %d | %.2f | %.1f | %.1f | %.1f | %.1f | %.2f |" % (
            n + 1, len(page_ms), total_s, statistics.median(pm), statistics.mean(pm),
            pm[int(0.9 * (len(pm) - 1))], pm[-1], asked / len(page_ms)))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
