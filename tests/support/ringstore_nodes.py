"""Real `ringstore serve` processes for the fault tests (tests/chaos, tests/partition).

A Node is one child process on a fixed HOST:PORT with its own data dir and two disks
under a caller-owned directory, so that kill -9 and a restart bring it back at the same
address (as an operator's restart would). Children die with the test (PR_SET_PDEATHSIG).
Every wait has a deadline, and every HTTP call has a timeout: a misbehaving node fails
a test, never hangs it. Standard library only (Debian's /usr/bin/python3).
"""

import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse

PR_SET_PDEATHSIG = 1


def _die_with_parent():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def faketime_env(offset_s):
    """The environment for a node whose wall clock runs offset_s seconds off (Debian's
    faketime); its monotonic clock is left alone."""
    if not os.path.exists(LIBFAKETIME):
        raise RuntimeError("libfaketime is missing (%s): tools/setup installs faketime" % LIBFAKETIME)
    env = dict(os.environ)
    env.update({"LD_PRELOAD": LIBFAKETIME, "FAKETIME": "%+ds" % offset_s,
                "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_DONT_RESET": "1"})
    # Under ASan the preloaded library comes before ASan's runtime: say that it is meant.
    asan = env.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    return env


def free_port(ip):
    """A port free for both TCP and UDP on `ip` (gossip shares the HTTP port)."""
    for _ in range(100):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind((ip, 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((ip, port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free TCP+UDP port on " + ip)


class Node:
    # client_ip: the address this test's requests to the node come from (None: the
    # kernel's choice), so that firewall rules between nodes leave the test's own
    # traffic alone.
    def __init__(self, binary, root, name, ip, port, seeds, extra_args=(), client_ip=None):
        self.binary = binary
        self.client_ip = client_ip
        self.name = name
        self.ip = ip
        self.port = port
        self.dir = os.path.join(root, name)
        self.seeds = seeds
        self.extra_args = list(extra_args)
        self.proc = None
        self.starts = 0
        self.killed = False  # stopped by the test, not by itself
        os.makedirs(self.dir, exist_ok=True)

    @property
    def addr(self):
        return "%s:%d" % (self.ip, self.port)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, deadline_s=15, env=None):
        """env: the child's environment (None: ours), e.g. faketime_env() for a skewed clock."""
        assert not self.running()
        args = [self.binary, "serve", "--listen", self.addr, "--data", self.dir + "/data",
                "--disk", self.dir + "/disk1", "--disk", self.dir + "/disk2"]
        if self.seeds:
            args += ["--seeds", ",".join(self.seeds)]
        args += self.extra_args
        log = open(self.dir + "/log", "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, env=env,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        log.close()
        self.starts += 1
        self.killed = False
        # The node prints "ringstore listening on HOST:PORT" once it accepts connections.
        until = time.monotonic() + deadline_s
        line = self.proc.stdout.readline().decode(errors="replace")
        if "listening on" in line:
            return
        self.proc.wait(timeout=max(1, until - time.monotonic()))
        raise RuntimeError("%s did not start (%r); log tail:\n%s" % (self.name, line, self.log_tail()))

    def crashed(self):
        """The exit status when the process ended without the test stopping it, else None."""
        if self.proc is None or self.killed or self.proc.poll() is None:
            return None
        return self.proc.returncode

    def kill9(self):
        self.killed = True
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close_pipe()

    def terminate(self, deadline_s=20):
        self.killed = True
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None
        finally:
            self._close_pipe()

    def _close_pipe(self):
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def log_tail(self, lines=15):
        try:
            with open(self.dir + "/log", "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode(errors="replace")
        except OSError:
            return "(no log)"

    # ---- HTTP ----

    def call(self, method, path, body=None, timeout=10, headers=None):
        """(status, headers with lower-case names, body). Raises OSError/HTTPException."""
        return http_call(self.ip, self.port, method, path, body, timeout, headers, self.client_ip)

    def status(self, timeout=3):
        """The node's /_/status as a dict, or None when it does not answer."""
        try:
            st, _, body = self.call("GET", "/_/status", timeout=timeout)
        except (OSError, http.client.HTTPException):
            return None
        if st != 200:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None


def http_call(ip, port, method, path, body=None, timeout=10, headers=None, source_ip=None):
    c = http.client.HTTPConnection(ip, port, timeout=timeout,
                                   source_address=(source_ip, 0) if source_ip else None)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def quote(key):
    return "/" + urllib.parse.quote(key)


def alive_view(node):
    """(alive, dead) member counts in `node`'s view, or None when it does not answer."""
    s = node.status()
    if s is None:
        return None
    alive = sum(1 for m in s["members"] if m["alive"])
    return alive, len(s["members"]) - alive


def all_agree(nodes, alive, dead=0):
    for n in nodes:
        if alive_view(n) != (alive, dead):
            return False
    return True


def wait_for(cond, deadline_s, interval_s=0.1):
    """Seconds until cond() held, or None at the deadline."""
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 >= deadline_s:
            return None
        time.sleep(interval_s)


class SingleNode:
    """`with SingleNode(binary, prefix) as port:` one insecure `ringstore serve` on a
    free port of 127.0.0.1 with two disks in a temporary directory; stopped and removed
    on exit. Raises RuntimeError when the node does not start."""

    def __init__(self, binary, prefix):
        self.binary = binary
        self.prefix = prefix
        self.proc = None
        self.tmp = None

    def __enter__(self):
        import tempfile
        self.tmp = tempfile.mkdtemp(prefix=self.prefix)
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", "127.0.0.1:0", "--data", self.tmp + "/data",
             "--disk", self.tmp + "/d1", "--disk", self.tmp + "/d2", "--insecure"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            preexec_fn=_die_with_parent)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.__exit__(None, None, None)
            raise RuntimeError("node did not start: " + line)
        return int(line.strip().rsplit(":", 1)[1])

    def __exit__(self, *exc):
        import shutil
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False
