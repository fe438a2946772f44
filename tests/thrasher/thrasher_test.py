#!/usr/bin/python3
"""ringstore-thrash, the verifying load of tools/bench --cluster, passes against a real
node and catches a store that breaks its contract.

1. Against a real `ringstore serve`: exit 0, cycles done, no errors, no mismatches.
2. Against a small HTTP store that keeps a deleted value (a resurrection bug): exit 1,
   mismatches counted, and the failure named on stderr.
3. `--cycle mkv` (PUT, GET, DELETE: three requests a cycle) passes against the real node
   and still catches the store that keeps deleted values, after the timed part. An
   unknown cycle is a usage error (exit 2).

Usage: thrasher_test.py PATH_TO_RINGSTORE PATH_TO_RINGSTORE_THRASH
"""
import hashlib
import http.server
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from ringstore_nodes import SingleNode  # noqa: E402


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def result(out):
    for line in out.splitlines():
        if line.startswith("THRASHRESULT "):
            return dict(kv.split("=", 1) for kv in line.split()[1:])
    fail("no THRASHRESULT line in: " + out)


def thrash(thrasher, urls, seconds="1.5", extra=()):
    p = subprocess.run([thrasher, "--duration", seconds, "--workers", "4", *extra, *urls],
                       capture_output=True, text=True, timeout=120)
    return p.returncode, result(p.stdout), p.stderr


class KeepsDeleted(http.server.BaseHTTPRequestHandler):
    """Answers like a store, except that DELETE forgets nothing."""
    protocol_version = "HTTP/1.1"
    values = {}
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", etag=None):
        self.send_response(status)
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            self.values[self.path] = body
        self.answer(201, etag='"%s"' % hashlib.md5(body).hexdigest())

    def do_GET(self):
        with self.lock:
            body = self.values.get(self.path)
        self.answer(404) if body is None else self.answer(200, body)

    def do_DELETE(self):
        self.answer(204)


def main():
    binary, thrasher = sys.argv[1], sys.argv[2]

    with SingleNode(binary, "ringstore-thrash.") as port:
        url = "http://127.0.0.1:%d" % port
        rc, r, err = thrash(thrasher, [url])
        if rc != 0 or int(r["cycles"]) == 0 or r["errors"] != "0" or r["mismatches"] != "0":
            fail("against a real node: exit %d, %s\n%s" % (rc, r, err))
        if int(r["final_checked"]) == 0:
            fail("no deleted key was checked after the run: %s" % r)
        if int(r["requests"]) != 4 * int(r["cycles"]):
            fail("a full cycle is four requests: %s" % r)
        print("real node: %s cycles, exit 0" % r["cycles"])
        rc, r, err = thrash(thrasher, [url], "1", ("--cycle", "mkv"))
        if rc != 0 or int(r["cycles"]) == 0 or r["errors"] != "0" or r["mismatches"] != "0":
            fail("--cycle mkv against a real node: exit %d, %s\n%s" % (rc, r, err))
        if int(r["requests"]) != 3 * int(r["cycles"]):
            fail("an mkv cycle is three requests: %s" % r)
        print("real node, mkv cycle: %s cycles, exit 0" % r["cycles"])
        p = subprocess.run([thrasher, "--cycle", "nope", url], capture_output=True, text=True,
                           timeout=60)
        if p.returncode != 2 or "--cycle" not in p.stderr:
            fail("an unknown cycle: exit %d, %s" % (p.returncode, p.stderr))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeepsDeleted)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = "http://127.0.0.1:%d" % server.server_address[1]
        rc, r, err = thrash(thrasher, [url], "0.5")
        rc2, r2, err2 = thrash(thrasher, [url], "0.5", ("--cycle", "mkv"))
    finally:
        server.shutdown()
    if rc != 1 or int(r["mismatches"]) == 0 or "after DELETE" not in err:
        fail("a store that keeps deleted values: exit %d, %s\n%s" % (rc, r, err))
    print("store that keeps deleted values: %s mismatches, exit 1" % r["mismatches"])
    if (rc2 != 1 or int(r2["mismatches"]) == 0 or r2["final_mismatches"] == "0" or
            "after the run" not in err2):
        fail("--cycle mkv, a store that keeps deleted values: exit %d, %s\n%s" % (rc2, r2, err2))
    print("store that keeps deleted values, mkv cycle: %s mismatches after the run, exit 1"
          % r2["final_mismatches"])
    print("PASS")


if __name__ == "__main__":
    main()
