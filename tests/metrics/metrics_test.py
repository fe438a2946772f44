#!/usr/bin/python3
"""/_/metrics parses with the Prometheus client's own parser, and its counters move.

Usage: metrics_test.py PATH_TO_RINGSTORE
"""
import http.client
import os
import sys
import time

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from ringstore_nodes import SingleNode  # noqa: E402


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def fetch(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def samples(port):
    status, text = fetch(port, "GET", "/_/metrics")
    if status != 200:
        fail(f"/_/metrics answered {status}")
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def main():
    binary = sys.argv[1]
    with SingleNode(binary, "ringstore-metrics.") as port:
        before = samples(port)
        for i in range(20):
            if fetch(port, "PUT", f"/m{i}", b"x" * 1000)[0] != 201:
                fail("PUT failed")
        for i in range(30):
            fetch(port, "GET", f"/m{i}")  # 20 hits, 10 misses
        after = samples(port)

        puts = value(after, "ringstore_http_requests_total", method="PUT", status="201") - \
            value(before, "ringstore_http_requests_total", method="PUT", status="201")
        # The GET of /_/metrics that produced `before` is counted after it: one more 200.
        gets = value(after, "ringstore_http_requests_total", method="GET", status="200") - \
            value(before, "ringstore_http_requests_total", method="GET", status="200") - 1
        misses = value(after, "ringstore_http_requests_total", method="GET", status="404")
        checks = [
            (puts == 20, f"PUT 201 counter moved by {puts}, expected 20"),
            (gets == 20, f"GET 200 counter is {gets}, expected 20"),
            (misses == 10, f"GET 404 counter is {misses}, expected 10"),
            (value(after, "ringstore_http_request_duration_seconds_count", method="PUT") >= 20,
             "PUT latency histogram did not count"),
            (value(after, "ringstore_http_received_bytes_total") >= 20000 +
             value(before, "ringstore_http_received_bytes_total"), "bytes in did not move"),
            (value(after, "ringstore_http_sent_bytes_total") >
             value(before, "ringstore_http_sent_bytes_total") + 20000, "bytes out did not move"),
            *[(value(after, "ringstore_write_stage_seconds_count", stage=st) >=
               value(before, "ringstore_write_stage_seconds_count", stage=st) + 20,
               f"write stage histogram {st} did not count 20 PUTs")
              for st in ("receive", "decide", "queue", "ack", "local")],
            (value(after, "ringstore_write_stage_seconds_count", stage="index_commit") >
             value(before, "ringstore_write_stage_seconds_count", stage="index_commit"),
             "index commit stage did not move"),
            (value(after, "ringstore_write_stage_seconds_count", stage="log_sync") >
             value(before, "ringstore_write_stage_seconds_count", stage="log_sync"),
             "commit log stage did not move"),
            (value(after, "ringstore_keys") == 20, "keys gauge is not 20"),
            (value(after, "ringstore_members", state="alive") == 1, "members alive is not 1"),
            (any(k[0] == "ringstore_disk_bytes" for k in after), "no disk gauges"),
            (any(k[0] == "ringstore_gossip_datagrams_total" for k in after), "no gossip counters"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            fail("; ".join(bad))
        print(f"metrics ok: {len(after)} samples parsed")


if __name__ == "__main__":
    main()
