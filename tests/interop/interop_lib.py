"""Helpers shared by the interop tests (tests/interop/test_*.py).

  - Proc: a child process (a worker, a client) whose output lines are
    collected by a thread, so a test can wait for a given line with a
    timeout and always kill the process in a finally block.
  - admin_status / wait_workers: read the admin `status` table of a server
    and wait until workers have registered (instead of sleeping).
  - need_program: fails a test clearly when a client tool is missing;
    debian_tool: Debian's gearman and gearadmin, from /usr/bin only.
  - GMCLIENT / need_gmclient: gmclient.c (a libgearman client and worker)
    compiled once per test process into a scratch folder.
  - Stunnel: stunnel4 in client mode in front of a gearmand --ssl, so
    plain-text clients (Debian's tools, libgearman) reach it over TLS.
  - test: gmtest.test, with failure messages made safe for TAP (they often
    quote a client's output, whose "ok - ..." lines must not be read as
    test points).

Only the Python standard library is used.
"""

import atexit
import functools
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gmtest  # noqa: E402
import tlsutil  # noqa: E402
from gmtest import fail  # noqa: E402

# The environment for every client and worker: libgearman adds the servers
# in GEARMAN_SERVERS to every client, and the `gearman` tool lets
# GEARMAN_SERVER override -h/-p, so neither may leak in from the caller.
ENV = {k: v for k, v in os.environ.items() if k not in ("GEARMAN_SERVER", "GEARMAN_SERVERS")}


def test(fn):
    """Registers fn like gmtest.test.  gmtest prints a failure's message
    after "# ", but only its first line; here every further line gets "# "
    too (and NULs are shown as \\0), so quoted output such as gmclient's
    "ok - ..." lines cannot be taken for TAP test points."""
    @functools.wraps(fn)
    def run():
        try:
            fn()
        except AssertionError as e:
            msg = str(e)
            safe = msg.replace("\0", "\\0").replace("\n", "\n# ")
            if safe == msg:
                raise
            raise AssertionError(safe).with_traceback(e.__traceback__) from None
    return gmtest.test(run)


class Proc:
    """A child process whose stdout+stderr lines are collected by a thread."""

    def __init__(self, args, name=None, **kw):
        self.args = list(args)
        self.name = name or " ".join(os.path.basename(a) for a in self.args[:4])
        kw.setdefault("env", ENV)
        self.p = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace", **kw)
        self.lines = []
        self.q = queue.Queue()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self.q.put(line)
        self.q.put(None)

    def output(self):
        return "\n".join(self.lines)

    def wait_line(self, pred, timeout=10.0):
        """Returns the first line not seen by an earlier wait_line for which
        pred(line) is true; fails after `timeout` seconds or if the process
        exits first."""
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                fail("%s: no matching line within %.0fs; output:\n%s"
                     % (self.name, timeout, "\n".join(self.lines[-40:])))
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.q.put(None)
                fail("%s exited (rc %s) before a matching line; output:\n%s"
                     % (self.name, self.p.wait(), "\n".join(self.lines[-40:])))
            if pred(line):
                return line

    def lines_matching(self, pred, n, timeout=5.0):
        """Waits until at least n collected lines satisfy pred (the reader
        thread may lag behind what the process has written); returns all
        matching lines.  Fails after `timeout` seconds."""
        deadline = time.time() + timeout
        while True:
            got = [line for line in self.lines if pred(line)]
            if len(got) >= n:
                return got
            if time.time() >= deadline:
                fail("%s: want %d matching lines, have %d; output:\n%s"
                     % (self.name, n, len(got), "\n".join(self.lines[-40:])))
            time.sleep(0.01)

    def wait(self, timeout=30.0):
        """Waits for the process to exit; returns its exit status."""
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            fail("%s did not finish within %.0fs; output:\n%s"
                 % (self.name, timeout, "\n".join(self.lines[-40:])))
        self.t.join(5)
        return rc

    def running(self):
        return self.p.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
            except ProcessLookupError:
                pass
        self.t.join(5)


def total_matching(procs, pred, n, timeout=5.0):
    """Waits until the procs together have at least n lines satisfying pred;
    returns that total."""
    deadline = time.time() + timeout
    while True:
        total = sum(1 for p in procs for line in p.lines if pred(line))
        if total >= n or time.time() >= deadline:
            return total
        time.sleep(0.01)


def kill_all(procs):
    for p in procs:
        if p is not None:
            p.kill()


def admin_status(server):
    """{function: (total, running, workers)} from the admin `status` command."""
    with server.conn() as c:
        reply = c.admin("status").decode(errors="replace")
    out = {}
    for line in reply.splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            out[parts[0]] = tuple(int(x) for x in parts[1:])
    return out


def wait_workers(server, func, n=1, timeout=10.0):
    """Waits until `status` shows at least n workers for func."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = admin_status(server).get(func)
        if st and st[2] >= n:
            return
        time.sleep(0.02)
    fail("%d worker(s) for %s never registered; status=%r" % (n, func, admin_status(server)))


def wait_status(server, func, want, timeout=10.0):
    """Waits until `status` shows (total, running, workers) == want for func."""
    deadline = time.time() + timeout
    st = None
    while time.time() < deadline:
        st = admin_status(server).get(func)
        if st == want:
            return
        time.sleep(0.02)
    fail("status of %s: want %r, have %r" % (func, want, st))


def need_program(name, hint):
    """Returns the path of `name`, or fails the test saying what to install."""
    path = shutil.which(name)
    if not path:
        fail("%s not found in PATH (%s)" % (name, hint))
    return path


def debian_tool(name, hint):
    """Debian's gearman-tools program `name` (gearman, gearadmin): always
    /usr/bin/NAME, never taken from PATH, where a `make install` of ours
    (/usr/local/bin) would come first."""
    path = os.path.join("/usr/bin", name)
    if not os.access(path, os.X_OK):
        fail("%s not found (%s)" % (path, hint))
    return path


def value(lines, key):
    """The rest of the first line that starts with `key ` (or "" for a line
    that is just `key`); None if there is none."""
    for line in lines:
        if line.startswith(key + " "):
            return line[len(key) + 1:]
        if line == key:
            return ""
    return None


# ----------------------------------------------------------------------
# gmclient.c, compiled at run time against Debian's libgearman

GMCLIENT_SRC = os.path.join(gmtest.TOP_SRCDIR, "tests", "interop", "gmclient.c")
_TMP = tempfile.mkdtemp(prefix="gmtest-interop-")
atexit.register(shutil.rmtree, _TMP, True)
GMCLIENT = os.path.join(_TMP, "gmclient")
_build_error = None


def _build_gmclient():
    """Compiles gmclient.c once; remembers why it failed."""
    global _build_error
    if os.path.exists(GMCLIENT) or _build_error:
        return
    cc = os.environ.get("CC", "cc").split()
    if not shutil.which(cc[0]):
        _build_error = "C compiler %r not found: cannot build gmclient.c" % cc[0]
        return
    if not os.path.exists(GMCLIENT_SRC):
        _build_error = "%s not found (is TOP_SRCDIR right?)" % GMCLIENT_SRC
        return
    r = subprocess.run(cc + ["-o", GMCLIENT, GMCLIENT_SRC, "-lgearman"], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        _build_error = ("cannot build gmclient.c (is libgearman-dev installed? header "
                        "libgearman/gearman.h): %s" % (r.stderr.strip()[-2000:]))


def need_gmclient():
    """Fails the test when gmclient cannot be built; returns its path."""
    _build_gmclient()
    if _build_error:
        fail(_build_error)
    return GMCLIENT


# ----------------------------------------------------------------------
# stunnel in client mode


class Stunnel(tlsutil.Stunnel):
    """stunnel4 in client mode (tests/lib/tlsutil.py): accepts plain
    connections on a free port of 127.0.0.1 (self.port) and carries each
    over TLS to 127.0.0.1:target, checking the server's certificate against
    `ca` for the name localhost; presents cert/key when given.  conn() is a
    plain gmtest.Conn through it, so a Stunnel stands in for a
    gmtest.Server in the helpers above."""

    def __init__(self, target, ca, cert=None, key=None):
        if not tlsutil.have("stunnel"):
            need_program("stunnel", "install stunnel4")
        super().__init__(target, cert, key, ca=ca, client=True)

    def start(self):
        try:
            return super().start()
        except RuntimeError as e:
            fail("stunnel did not start: %s" % e)

    def conn(self, timeout=10.0):
        return gmtest.Conn(self.port, timeout=timeout)

