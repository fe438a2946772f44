#!/usr/bin/env python3
"""Helpers for the cluster mode of tools/bench (tools/bench.d/cluster.sh).

  cluster_util.py wait N TIMEOUT_S URL...
      until every node's GET /_/status lists N members, all "alive": true and
      "state": "normal" (a fresh cluster forms through joins)
  cluster_util.py preload PREFIX COUNT WIDTH SIZE URL...
      PUT COUNT random objects of SIZE bytes, spread over the nodes, then read
      a sample back through every node
  cluster_util.py check-puts PREFIX COUNT WIDTH SIZE URL...
      after a PUT workload: keys read in order through every node must answer
      SIZE bytes (or 404 if never written), every node giving the same ETag
  cluster_util.py report SPEC RESULTS MARKDOWN HEADER CHECK_FAILED
      print the summary table
  cluster_util.py report-peer SPEC RESULTS PEER_RESULTS MARKDOWN HEADER PEER_NAME
      print the table of the cluster's and the peer's thrasher runs side by side
"""

import http.client
import json
import os
import random
import statistics
import sys
import textwrap
import threading
import time
import urllib.parse


def say(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def connect(url, timeout=30):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def key_name(prefix, width, i):
    return "%s%0*d" % (prefix, width, i)


# --- wait ------------------------------------------------------------------

def cmd_wait(n, timeout_s, urls):
    n, deadline = int(n), time.monotonic() + float(timeout_s)
    views = {}
    while True:
        ready = 0
        for i, url in enumerate(urls):
            try:
                c = connect(url, timeout=2)
                c.request("GET", "/_/status")
                r = c.getresponse()
                body = r.read()
                c.close()
                members = json.loads(body).get("members", []) if r.status == 200 else []
            except (OSError, http.client.HTTPException, ValueError):
                members = []
            alive = sum(1 for m in members if m.get("alive") is True)
            normal = sum(1 for m in members if m.get("state") == "normal")
            views[i] = "%d members, %d alive, %d normal" % (len(members), alive, normal)
            if len(members) == n and alive == n and normal == n:
                ready += 1
        if ready == len(urls):
            return 0
        if time.monotonic() > deadline:
            say("cluster not formed after %ss: %s" % (timeout_s, "; ".join(
                "node %d sees %s" % (i + 1, v) for i, v in sorted(views.items()))))
            return 1
        time.sleep(0.1)


# --- preload -----------------------------------------------------------------

def cmd_preload(prefix, count, width, size, urls):
    count, width, size = int(count), int(width), int(size)
    data = {i: os.urandom(size) for i in range(count)}
    failures = []
    lock = threading.Lock()
    threads_n = min(8, count)

    def put_part(t):
        conns = {}
        for i in range(t, count, threads_n):
            node = i % len(urls)
            c = conns.get(node) or connect(urls[node])
            conns[node] = c
            key = key_name(prefix, width, i)
            try:
                c.request("PUT", "/" + key, body=data[i],
                          headers={"Content-Type": "application/octet-stream"})
                r = c.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException) as e:
                conns.pop(node, None)
                status = "%s: %s" % (type(e).__name__, e)
            if status != 201:
                with lock:
                    failures.append("PUT /%s via node %d: %s, expected 201" % (key, node + 1, status))
                return

    threads = [threading.Thread(target=put_part, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        for f in failures[:10]:
            say("preload: " + f)
        return 1

    rng = random.Random(1)
    sample = rng.sample(range(count), min(20, count)) + [0, count - 1]
    for n, url in enumerate(urls):
        c = connect(url)
        for i in sample:
            key = key_name(prefix, width, i)
            c.request("GET", "/" + key)
            r = c.getresponse()
            body = r.read()
            if r.status != 200 or body != data[i]:
                say("preload: GET /%s via node %d answered %d with %d bytes; expected 200 "
                    "with the %d bytes stored" % (key, n + 1, r.status, len(body), size))
                return 1
    return 0


# --- check-puts ----------------------------------------------------------------

def cmd_check_puts(prefix, count, width, size, urls):
    """Reads keys in order through every node until 20 were found (or 2,000
    tried): each must answer the same through all nodes."""
    count, width, size = int(count), int(width), int(size)
    conns = [connect(u) for u in urls]
    found = bad = tried = 0
    for i in range(min(count, 2000)):
        if found >= 20:
            break
        tried += 1
        key = key_name(prefix, width, i)
        seen = []
        for n, c in enumerate(conns):
            c.request("GET", "/" + key)
            r = c.getresponse()
            body = r.read()
            if r.status == 200 and len(body) == size:
                seen.append(r.getheader("ETag"))
            elif r.status == 404:
                seen.append(None)
            else:
                bad += 1
                say("after PUTs, GET /%s via node %d answered %d with %d bytes "
                    "(expected 200 with %d, or 404)" % (key, n + 1, r.status, len(body), size))
                seen.append("bad")
        if len(set(seen)) > 1:
            bad += 1
            say("after PUTs, the nodes disagree on /%s: %s" % (key, ", ".join(
                "node %d: %s" % (n + 1, "404" if s is None else s) for n, s in enumerate(seen))))
        elif seen[0] not in (None, "bad"):
            found += 1
    if found == 0:
        say("after PUTs, none of the first %d keys of %s* could be read back" % (tried, prefix))
    return 1 if bad or found == 0 else 0


# --- report --------------------------------------------------------------------

ERR_KEYS = ("connect", "read", "write", "status", "timeout")


def med(xs):
    return statistics.median(xs) if xs else None


def fmt_num(x):
    if x is None:
        return "-"
    if x >= 100:
        return "{:,.0f}".format(x)
    if x >= 10:
        return "{:.1f}".format(x)
    return "{:.2f}".format(x)


def fmt_lat(us):
    if us is None:
        return "-"
    if us < 1000:
        return "%.0fus" % us
    if us < 1e6:
        return ("%.2fms" if us < 10000 else "%.1fms") % (us / 1000)
    return "%.2fs" % (us / 1e6)


def cmd_report(spec_path, results_path, markdown, header, check_failed):
    markdown = markdown == "1"
    check_failed = check_failed.split()

    spec = []  # (name, label, conns_text, thrasher cycle or "" for wrk)
    for line in open(spec_path):
        spec.append(tuple(line.rstrip("\n").split("|")))

    # results: "workload run node key=value ..."; node 0 = the thrasher
    res = {}
    for line in open(results_path):
        parts = line.split()
        w, run, node = parts[0], int(parts[1]), int(parts[2])
        f = dict(kv.split("=", 1) for kv in parts[3:])
        res.setdefault(w, {}).setdefault(run, {})[node] = f

    rows, warnings, notes = [], [], []
    for name, label, conns, cycle in spec:
        per_run = res.get(name, {})
        if cycle:
            ok, flags, _ = side({r: n[0] for r, n in per_run.items()})
            if not per_run:
                flags.remove("no run")
            req = [per_s(f, "requests") for f in ok.values()]
            cyc = [per_s(f, "cycles") for f in ok.values()]
            if flags:
                warnings.append("%s: %s" % (label, "; ".join(flags)))
            err_text = ("!! " + "; ".join(flags)) if flags else "0"
            subs = [("", req, "p50_us", "p99_us")]  # --op put, get, delete: one request each
            if cycle in ("full", "mkv"):
                subs = [(", requests", req, "p50_us", "p99_us"),
                        (", key cycles", cyc, "cycle_p50_us", "cycle_p99_us")]
            for sub, vals, p50k, p99k in subs:
                m = med(vals)
                rows.append({
                    "workload": label + sub, "conns": conns, "rps": fmt_num(m),
                    "range": "%s-%s" % (fmt_num(min(vals)), fmt_num(max(vals))) if vals else "-",
                    "p50": fmt_lat(med([float(f[p50k]) for f in ok.values()])),
                    "p99": fmt_lat(med([float(f[p99k]) for f in ok.values()])),
                    "errors": err_text,
                })
            if req and cycle == "mkv":
                notes.append(
                    "%s: minikeyvalue's thrasher cycle (PUT, GET and compare, DELETE: 3 "
                    "requests); deleted keys are checked after each run only." % label)
            if ok and cycle == "delete":
                notes.append("%s: %s" % (label, delete_note([("", ok)])))
            if ok and cycle in ("full", "mkv"):
                kinds = []
                for k in ("put", "get", "delete"):
                    p50 = med([float(f.get(k + "_p50_us", 0)) for f in ok.values()])
                    p99 = med([float(f.get(k + "_p99_us", 0)) for f in ok.values()])
                    kinds.append("%s p50 %s p99 %s" % (k.upper(), fmt_lat(p50), fmt_lat(p99)))
                checked = sum(int(f.get("final_checked", 0)) for f in ok.values())
                notes.append("%s latency by method (medians over runs): %s. After each run "
                             "%s deleted keys in all were read again through every node loaded."
                             % (label, "; ".join(kinds), "{:,}".format(checked)))
            continue

        # wrk workloads: one wrk per node; a run's rate is the sum over nodes
        rates, p50s, p99s = [], [], []
        errs = {k: 0 for k in ERR_KEYS}
        failed = zero = 0
        for run, nodes in sorted(per_run.items()):
            if any("failed" in f for f in nodes.values()):
                failed += 1
                continue
            rates.append(sum(int(f["requests"]) / (float(f["duration_us"]) / 1e6)
                             for f in nodes.values()))
            p50s.append(max(float(f["p50_us"]) for f in nodes.values()))
            p99s.append(max(float(f["p99_us"]) for f in nodes.values()))
            for f in nodes.values():
                for k in ERR_KEYS:
                    errs[k] += int(f[k])
                if int(f["requests"]) == 0:
                    zero += 1
        flags = []
        total = sum(errs.values())
        if total:
            flags.append("%d errors (%s)" % (total, ", ".join(
                "%s %d" % (k if k != "status" else "HTTP>=400", v)
                for k, v in errs.items() if v)))
        if failed:
            flags.append("%d run(s) failed" % failed)
        if zero:
            flags.append("%d node run(s) with no completed request" % zero)
        if name in check_failed:
            flags.append("read-back check failed")
        if flags:
            warnings.append("%s: %s" % (label, "; ".join(flags)))
        m = med(rates)
        rows.append({
            "workload": label, "conns": conns, "rps": fmt_num(m),
            "range": "%s-%s" % (fmt_num(min(rates)), fmt_num(max(rates))) if rates else "-",
            "p50": fmt_lat(med(p50s)), "p99": fmt_lat(med(p99s)),
            "errors": ("!! " + "; ".join(flags)) if flags else "0",
        })

    cols = [("workload", "Workload"), ("conns", "Conns"), ("rps", "req/s"),
            ("range", "req/s min-max"), ("p50", "p50"), ("p99", "p99"), ("errors", "Errors")]
    right = {"conns", "rps", "range", "p50", "p99"}

    legend = [
        "req/s: median over runs of the cluster-wide rate (the sum over the nodes' wrk "
        "processes), with min-max; for the thrasher rows, requests or key cycles per second. "
        "p50/p99: medians over runs; for wrk workloads each run's figure is the highest of "
        "the nodes' percentiles, an upper bound on the cluster-wide percentile.",
    ] + notes

    return print_table(cols, right, rows, header, legend, warnings, markdown)


def print_header(header, markdown):
    for line in header.splitlines():
        if not markdown:
            print(line)
        elif line.startswith("command: "):
            print("command: `%s`  " % line[len("command: "):])
        else:
            print("_%s_  " % line)
    print()


def print_table(cols, right, rows, header, legend, warnings, markdown):
    """Prints the header, the rows (dicts keyed by the cols' keys), the legend and the
    warnings; 1 when there were warnings."""
    heads = [h for _, h in cols]
    table = [[r[k] for k, _ in cols] for r in rows]
    print_header(header, markdown)
    if markdown:
        print("| " + " | ".join(heads) + " |")
        print("|" + "|".join("---:" if k in right else "---" for k, _ in cols) + "|")
        for t in table:
            print("| " + " | ".join(c.replace("|", "\\|") for c in t) + " |")
        print()
        for line in legend:
            print(line)
            print()
    else:
        widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(heads)]

        def fmt_row(cells):
            return "  ".join(c.rjust(wd) if k in right else c.ljust(wd)
                             for (k, _), c, wd in zip(cols, cells, widths)).rstrip()
        print(fmt_row(heads))
        print(fmt_row(["-" * wd for wd in widths]))
        for t in table:
            print(fmt_row(t))
        print()
        for line in legend:
            print(textwrap.fill(line, 100, break_on_hyphens=False))

    if warnings:
        print()
        for w in warnings:
            print(("- " if markdown else "") + "!! " + w)
        return 1
    return 0


# --- report-peer ------------------------------------------------------------------

def thrash_results(path):
    """{workload: {run: fields}} of a results file of thrasher runs (node 0)."""
    res = {}
    for line in open(path):
        parts = line.split()
        res.setdefault(parts[0], {})[int(parts[1])] = dict(kv.split("=", 1) for kv in parts[3:])
    return res


def per_s(f, what):
    return int(f[what]) / (float(f["duration_us"]) / 1e6)


def side(per_run):
    """The runs with a result, what went wrong in all of them (for the warnings) and the
    count of bad requests and runs (for the table)."""
    ok = {r: f for r, f in per_run.items() if "failed" not in f}
    failed = len(per_run) - len(ok)
    errors = sum(int(f["errors"]) for f in ok.values())
    mism = sum(int(f["mismatches"]) for f in ok.values())
    flags = []
    if mism:
        flags.append("%d mismatches" % mism)
    if errors:
        flags.append("%d errors" % errors)
    if failed:
        flags.append("%d run(s) failed" % failed)
    if not per_run:
        flags.append("no run")
    if any(int(f["cycles"]) == 0 for f in ok.values()):
        flags.append("a run completed nothing")
    return ok, flags, errors + mism + failed


def fmt_spread(xs, fmt, unit=""):
    """The median (min-max) of xs."""
    if not xs:
        return "-"
    return "%s%s (%s-%s)" % (fmt(med(xs)), unit, fmt(min(xs)), fmt(max(xs)))


def delete_note(sides):
    """What --op delete timed, and the rounds it took on each side (name, {run: fields})."""
    parts = []
    for who, runs in sides:
        if runs:
            parts.append("%srounds per run %s, %d of %d runs short of the duration" % (
                who, "/".join(f.get("rounds", "?") for _, f in sorted(runs.items())),
                sum(int(f["exhausted"]) for f in runs.values()), len(runs)))
    return ("only DELETEs of keys written (untimed) just before are timed; when one worker "
            "has deleted all it wrote, all stop, write more untimed and go on, in rounds, "
            "until the duration of DELETEs was timed (%s); a run short of it is rated over "
            "the time measured." % "; ".join(parts))


def peer_notes(spec, rs_res, pe_res, peer_name):
    notes = []
    for name, label, _, mode in spec:
        rs, pe = side(rs_res.get(name, {}))[0], side(pe_res.get(name, {}))[0]
        hops = []
        for who, runs in (("ringstore", rs), (peer_name, pe)):
            per_req = [int(f["redirects"]) / int(f["requests"])
                       for f in runs.values() if int(f["requests"])]
            if per_req and med(per_req) > 0:
                hops.append("%s %.2f" % (who, med(per_req)))
        if hops:
            notes.append("%s: redirects followed per request (median over runs): %s; a "
                         "request and its redirects are one request, with one latency."
                         % (label, ", ".join(hops)))
        if mode == "delete":
            notes.append("%s: %s" % (label, delete_note([("ringstore ", rs),
                                                          (peer_name + " ", pe)])))
        if mode in ("full", "mkv"):
            for who, runs in (("ringstore", rs), (peer_name, pe)):
                if not runs:
                    continue
                kinds = []
                for k in ("put", "get", "delete"):
                    p50 = med([float(f[k + "_p50_us"]) for f in runs.values()])
                    p99 = med([float(f[k + "_p99_us"]) for f in runs.values()])
                    kinds.append("%s p50 %s p99 %s" % (k.upper(), fmt_lat(p50), fmt_lat(p99)))
                notes.append("%s, %s, latency by method (medians over runs): %s."
                             % (label, who, "; ".join(kinds)))
    return notes


def peer_row(label, conns, rs, pe, what, p50k, p99k, rs_bad, pe_bad):
    rs_rate = {r: per_s(f, what) for r, f in rs.items()}
    pe_rate = {r: per_s(f, what) for r, f in pe.items()}
    pairs = [rs_rate[r] / pe_rate[r] for r in sorted(rs_rate) if pe_rate.get(r)]

    def lat(runs, k):
        return fmt_lat(med([float(f[k]) for f in runs.values()]))
    return {
        "workload": label, "conns": conns,
        "rs": fmt_spread(list(rs_rate.values()), fmt_num),
        "pe": fmt_spread(list(pe_rate.values()), fmt_num),
        "ratio": fmt_spread(pairs, lambda x: "%.2f" % x, "x"),
        "p50": "%s / %s" % (lat(rs, p50k), lat(pe, p50k)),
        "p99": "%s / %s" % (lat(rs, p99k), lat(pe, p99k)),
        "errors": ("!! " if rs_bad or pe_bad else "") + "%d / %d" % (rs_bad, pe_bad),
    }


def cmd_report_peer(spec_path, rs_path, pe_path, markdown, header, peer_name):
    markdown = markdown == "1"
    spec = [tuple(line.rstrip("\n").split("|")) for line in open(spec_path)]
    rs_res, pe_res = thrash_results(rs_path), thrash_results(pe_path)
    rows, warnings = [], []
    for name, label, conns, mode in spec:
        rs, rs_flags, rs_bad = side(rs_res.get(name, {}))
        pe, pe_flags, pe_bad = side(pe_res.get(name, {}))
        for who, flags in (("ringstore", rs_flags), (peer_name, pe_flags)):
            if flags:
                warnings.append("%s, %s: %s" % (label, who, "; ".join(flags)))
        subs = [("requests", "p50_us", "p99_us", "")]
        if mode in ("full", "mkv"):
            subs = [("requests", "p50_us", "p99_us", ", requests"),
                    ("cycles", "cycle_p50_us", "cycle_p99_us", ", key cycles")]
        for what, p50k, p99k, suffix in subs:
            rows.append(peer_row(label + suffix, conns, rs, pe, what, p50k, p99k,
                                 rs_bad, pe_bad))

    cols = [("workload", "Workload"), ("conns", "Conns"),
            ("rs", "ringstore req/s (min-max)"), ("pe", "%s req/s (min-max)" % peer_name),
            ("ratio", "ringstore/%s (min-max)" % peer_name),
            ("p50", "p50 ringstore/%s" % peer_name), ("p99", "p99 ringstore/%s" % peer_name),
            ("errors", "Errors ringstore/%s" % peer_name)]
    right = {"conns", "rs", "pe", "ratio", "p50", "p99"}
    legend = [
        "Every workload ran on ringstore and on %s in turns (ringstore run 1, %s run 1, "
        "ringstore run 2, ...), driven alike by one client, ringstore-thrash, with the same "
        "options. req/s: median over runs (min-max); for the key cycle rows, key cycles per "
        "second. ringstore/%s: the median (min-max) of the ratios of run i of ringstore to run i "
        "of %s; above 1 ringstore is the faster. p50/p99: medians over runs of each run's "
        "percentiles over every request of all workers. Errors: failed requests, mismatches "
        "and failed runs." % (peer_name, peer_name, peer_name, peer_name),
    ] + peer_notes(spec, rs_res, pe_res, peer_name)
    return print_table(cols, right, rows, header, legend, warnings, markdown)


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "wait":
        return cmd_wait(args[0], args[1], args[2:])
    if cmd == "preload":
        return cmd_preload(*args[:4], args[4:])
    if cmd == "check-puts":
        return cmd_check_puts(*args[:4], args[4:])
    if cmd == "report":
        return cmd_report(*args)
    if cmd == "report-peer":
        return cmd_report_peer(*args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
