#!/usr/bin/env python3
"""Where writes spend their time: the per-stage breakdown of ringstore's writes.

    tools/bench.d/stages.py URL[,URL...] -- COMMAND [ARG...]

Reads ringstore_write_stage_seconds from /_/metrics of every node URL, runs COMMAND
(a load generator: wrk, ringstore-thrash, curl in a loop, ...), reads them again and
prints, per stage, the observations COMMAND caused summed over the nodes: count, mean,
and p50/p90/p99 estimated from the histogram buckets (linear within a bucket, as
Prometheus' histogram_quantile does). Exit status: COMMAND's, or 2 on bad usage.

    tools/bench.d/stages.py --markdown ...   prints the table as Markdown.
"""
import re
import subprocess
import sys
import urllib.request

STAGES = [
    ("receive", "coordinator: the request's first byte to its last"),
    ("decide", "coordinator: the write's start to its answer being decided"),
    ("replica", "coordinator: an internal write to another node, sent to answered"),
    ("queue", "local commit: submitted to the start of its batch"),
    ("log_sync", "per batch: commit log append + fdatasync"),
    ("file_sync", "per batch: files synced in place (syncfs/fsync)"),
    ("index_commit", "per batch: SQLite COMMIT"),
    ("batch", "per batch: the whole group commit"),
    ("ack", "local commit: batch finished to callback on the loop"),
    ("local", "local commit: submitted to callback"),
]
LINE = re.compile(r'^ringstore_write_stage_seconds_(bucket|sum|count)\{stage="([a-z_]+)"(?:,le="([^"]+)")?\} (\S+)$')


def snapshot(url):
    with urllib.request.urlopen(url.rstrip("/") + "/_/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        kind, stage, le, val = m.groups()
        s = out.setdefault(stage, {"buckets": {}, "sum": 0.0, "count": 0.0})
        if kind == "bucket":
            s["buckets"][float("inf") if le == "+Inf" else float(le)] = float(val)
        else:
            s[kind] = float(val)
    return out


def add(total, snap, sign):
    for stage, s in snap.items():
        t = total.setdefault(stage, {"buckets": {}, "sum": 0.0, "count": 0.0})
        for le, v in s["buckets"].items():
            t["buckets"][le] = t["buckets"].get(le, 0.0) + sign * v
        t["sum"] += sign * s["sum"]
        t["count"] += sign * s["count"]


def quantile(buckets, count, q):
    if count <= 0:
        return None
    rank = q * count
    prev_le, prev_n = 0.0, 0.0
    for le in sorted(buckets):
        n = buckets[le]
        if n >= rank:
            if le == float("inf"):
                return prev_le
            if n == prev_n:
                return le
            return prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n)
        prev_le, prev_n = le, n
    return prev_le


def ms(v):
    return "-" if v is None else "%.3f" % (v * 1000)


def main(argv):
    markdown = False
    if argv and argv[0] == "--markdown":
        markdown, argv = True, argv[1:]
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__.strip(), file=sys.stderr)
        return 2
    urls = [u for u in argv[0].split(",") if u]
    before = [snapshot(u) for u in urls]
    rc = subprocess.call(argv[2:])
    after = [snapshot(u) for u in urls]
    delta = {}
    for b, a in zip(before, after):
        add(delta, a, 1)
        add(delta, b, -1)
    rows = []
    for stage, what in STAGES:
        d = delta.get(stage, {"buckets": {}, "sum": 0.0, "count": 0.0})
        n = d["count"]
        mean = d["sum"] / n if n > 0 else None
        rows.append((stage, "%d" % n, ms(mean), ms(quantile(d["buckets"], n, 0.5)),
                     ms(quantile(d["buckets"], n, 0.9)), ms(quantile(d["buckets"], n, 0.99)), what))
    head = ("stage", "count", "mean ms", "p50 ms", "p90 ms", "p99 ms", "what")
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        print("%-13s %8s %9s %8s %8s %8s  %s" % head)
        for r in rows:
            print("%-13s %8s %9s %8s %8s %8s  %s" % r)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
