#!/usr/bin/python3
"""ringstore-thrash, the verifying load of tools/bench --cluster, passes against a real
node and catches a store that breaks its contract.

1. Against a real `ringstore serve`: exit 0, cycles done, no errors, no mismatches.
2. Against a small HTTP store that keeps a deleted value (a resurrection bug): exit 1,
   mismatches counted, and the failure named on stderr.
3. `--cycle mkv` (PUT, GET, DELETE: three requests a cycle) passes against the real node
   and still catches the store that keeps deleted values, after the timed part. An
   unknown cycle is a usage error (exit 2).
4. `--op put`, `--op get` and `--op delete` pass against the real node (delete times the
   whole duration, writing more keys in rounds as needed); an unknown op is a usage
   error.
5. Through a front that answers like minikeyvalue (GET: a 302 to the real node, named
   localhost; PUT: 201 without an ETag, 403 for a key it has seen), `--peer` passes with
   every GET redirected (so it fails if redirects were not followed), and passes again
   with another store's codes (PUT 204, DELETE 200, deleted GET 410). Without `--peer`
   the missing ETag is a mismatch. Two runs with the same --run-id do not collide.
6. A front whose redirect leads to other bytes is caught (the bytes are checked after
   the redirect), and one that redirects to itself is an error, not a hang.

Usage: thrasher_test.py PATH_TO_RINGSTORE PATH_TO_RINGSTORE_THRASH
"""
import hashlib
import http.server
import os
import subprocess
import sys
import threading
import urllib.parse

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


def serve(handler):
    """A threaded server on a free port of 127.0.0.1, and its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, "http://127.0.0.1:%d" % server.server_address[1]


class Front(http.server.BaseHTTPRequestHandler):
    """Answers like minikeyvalue in front of a real node: a GET of a stored key is a 302
    to the node, a PUT answers without an ETag and refuses a key it has seen. The codes
    are class attributes so that a subclass can answer like another store."""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out apart: no 40 ms ACK wait
    node_port = 0
    put_status, delete_status, gone_status = 201, 204, 404
    seen = set()
    lock = threading.Lock()
    local = threading.local()

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", location=None):
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def node(self, method, body=None):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.node_port,
                                                             timeout=30)
        c.request(method, self.path, body=body)
        r = c.getresponse()
        r.read()
        return r.status

    def location(self):
        return "http://localhost:%d%s" % (self.node_port, self.path)

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            if self.path in self.seen:
                return self.answer(403)
            self.seen.add(self.path)
        status = self.node("PUT", body)
        self.answer(self.put_status if status == 201 else 500)

    def do_GET(self):
        status = self.node("GET")
        if status == 404:
            return self.answer(self.gone_status)
        self.answer(302, location=self.location()) if status == 200 else self.answer(500)

    def do_DELETE(self):
        status = self.node("DELETE")
        self.answer(self.delete_status if status == 204 else 500)


class OtherCodes(Front):
    put_status, delete_status, gone_status = 204, 200, 410


class WrongBytes(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b"not the value that was written"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def expect_pass(what, rc, r, err):
    if rc != 0 or int(r["cycles"]) == 0 or r["errors"] != "0" or r["mismatches"] != "0":
        fail("%s: exit %d, %s\n%s" % (what, rc, r, err))


def test_ops(thrasher, url):
    rc, r, err = thrash(thrasher, [url], "1", ("--op", "put", "--size", "2000"))
    expect_pass("--op put against a real node", rc, r, err)
    if r["requests"] != r["cycles"] or int(r["final_checked"]) == 0:
        fail("--op put: one request a PUT, written keys read back after the run: %s" % r)
    rc, r, err = thrash(thrasher, [url], "1", ("--op", "get", "--keys", "50"))
    expect_pass("--op get against a real node", rc, r, err)
    if r["prefilled"] != "50" or r["redirects"] != "0" or int(r["get_p50_us"]) == 0:
        fail("--op get: 50 keys written first, then GETs, no redirect: %s" % r)
    rc, r, err = thrash(thrasher, [url], "0.5", ("--op", "delete"))
    expect_pass("--op delete against a real node", rc, r, err)
    if int(r["requests"]) > int(r["prefilled"]) or int(r["delete_p50_us"]) == 0:
        fail("--op delete: only keys written in the prefill are deleted: %s" % r)
    if r["exhausted"] == "0" and int(r["duration_us"]) < 0.99 * 500000:
        fail("--op delete: more rounds of keys until the duration is timed: %s" % r)
    print("real node: put, get and delete ops, exit 0")
    p = subprocess.run([thrasher, "--op", "nope", url], capture_output=True, text=True,
                       timeout=60)
    if p.returncode != 2 or "--op" not in p.stderr:
        fail("an unknown op: exit %d, %s" % (p.returncode, p.stderr))


def test_front(thrasher, node_port):
    Front.node_port = node_port
    front, url = serve(Front)
    other, other_url = serve(OtherCodes)
    try:
        rc, r, err = thrash(thrasher, [url], "1", ("--peer", "--op", "get", "--keys", "40"))
        expect_pass("--peer --op get through a redirecting front", rc, r, err)
        if r["redirects"] != r["requests"]:
            fail("every GET through the front is one redirect: %s" % r)
        rc, r, err = thrash(thrasher, [url], "1", ("--peer", "--cycle", "mkv"))
        expect_pass("--peer --cycle mkv through the front", rc, r, err)
        if r["redirects"] != r["cycles"] or int(r["final_checked"]) == 0:
            fail("--cycle mkv: one redirected GET a cycle, deletes checked after: %s" % r)
        for n in (1, 2):
            rc, r, err = thrash(thrasher, [url], "0.5", ("--peer", "--op", "put",
                                                        "--run-id", "same"))
            expect_pass("--peer --op put, run %d with the same --run-id" % n, rc, r, err)
        print("front like minikeyvalue: get, mkv cycle and two put runs, exit 0")
        rc, r, err = thrash(thrasher, [other_url], "1", ("--peer",))
        expect_pass("--peer, full cycle, PUT 204, DELETE 200, deleted GET 410", rc, r, err)
        rc, r, err = thrash(thrasher, [other_url], "0.5", ("--peer", "--op", "delete"))
        expect_pass("--peer --op delete, DELETE 200", rc, r, err)
        print("front with other codes (204, 200, 410): full cycle and delete, exit 0")
        rc, r, err = thrash(thrasher, [url], "0.5", ("--cycle", "mkv"))
        if rc != 1 or int(r["mismatches"]) == 0 or "ETag" not in err:
            fail("without --peer, a PUT without an ETag: exit %d, %s\n%s" % (rc, r, err))
        print("front without --peer: %s ETag mismatches, exit 1" % r["mismatches"])
    finally:
        front.shutdown()
        other.shutdown()


def test_bad_redirects(thrasher, node_port):
    wrong, wrong_url = serve(WrongBytes)
    wrong_port = wrong.server_address[1]

    class ToWrongBytes(Front):
        def location(self):
            return "http://127.0.0.1:%d%s" % (wrong_port, self.path)

    class ToItself(Front):
        def location(self):
            return "http://127.0.0.1:%d%s" % (self.server.server_address[1], self.path)

    ToWrongBytes.node_port = ToItself.node_port = node_port
    liar, liar_url = serve(ToWrongBytes)
    loop, loop_url = serve(ToItself)
    try:
        rc, r, err = thrash(thrasher, [liar_url], "0.5", ("--peer", "--op", "get",
                                                          "--keys", "20"))
        rc2, r2, err2 = thrash(thrasher, [loop_url], "0.5", ("--peer", "--op", "get",
                                                            "--keys", "20"))
    finally:
        for s in (wrong, liar, loop):
            s.shutdown()
    if rc != 1 or int(r["mismatches"]) == 0 or "differ" not in err:
        fail("a redirect to other bytes: exit %d, %s\n%s" % (rc, r, err))
    print("redirect to other bytes: %s mismatches, exit 1" % r["mismatches"])
    if rc2 != 1 or int(r2["errors"]) == 0 or "redirects" not in err2:
        fail("a redirect loop: exit %d, %s\n%s" % (rc2, r2, err2))
    print("redirect loop: %s errors, exit 1" % r2["errors"])


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
        test_ops(thrasher, url)
        test_front(thrasher, port)
        test_bad_redirects(thrasher, port)

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
