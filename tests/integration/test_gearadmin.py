#!/usr/bin/env python3
"""Debian's gearadmin (gearman-tools) against our server and against Debian's
gearmand 1.1.20, in the same scenario, with the same outputs.

The scenario is the one of the reference transcript (gearmand-1.1.20.md 3.3,
rebuilt as in test_admin.py): worker w1 with `resize` and `thumb`, holding
the thumb job t-1; HIGH_BG resize img-1 and LOW_BG resize img-2 queued;
handles H:vm:N.  gearadmin's stdout, stderr and exit status are compared
after normalising what must differ: pids, fd numbers, the version string,
and the order of lists that 1.1.20 prints in hash order.

gearadmin reads each reply until 5 ms pass without data, and prints `OK`,
the rest of an `OK ...` line, `Error: ...` on stderr for `ERR ...`, or the
reply verbatim; so these tests also check that our replies arrive in one
burst and that their first bytes are what gearadmin dispatches on.

Our own gearadmin (bin/), its lifecycle options included, is tested in
test_tools.py.
"""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gmtest  # noqa: E402
from gmtest import Server, test, skip  # noqa: E402

GEARADMIN = "/usr/bin/gearadmin"
REFERENCE = "/usr/sbin/gearmand"


def need_tools():
    for path in (GEARADMIN, REFERENCE):
        if not os.access(path, os.X_OK):
            skip("%s is not installed" % path)


def version_of(binary):
    r = subprocess.run([binary, "-V"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    m = re.search(rb"^gearmand (\S+) - ", r.stdout, re.M)
    assert m, "%s -V printed %r" % (binary, r.stdout)
    return m.group(1)


def start_scenario(binary):
    """A server (ours or the reference) in the transcript's state; returns
    (server, [connections to keep open])."""
    s = Server("--job-handle-prefix", "H:vm", binary=binary).start()
    try:
        w, c = s.conn(), s.conn()
        w.send_packet("SET_CLIENT_ID", "w1")
        w.send_packet("CAN_DO", "resize")
        w.send_packet("CAN_DO", "thumb")
        # our server gives a worker its highest-priority job among all its
        # functions (design 9); drop resize for the grab so both servers hand
        # out the thumb job, as in the recorded session
        w.send_packet("CANT_DO", "resize")
        c.send_packet("SUBMIT_JOB_HIGH_BG", "resize", "img-1", "resize img-1")
        assert c.expect("JOB_CREATED").data == b"H:vm:1"
        c.send_packet("SUBMIT_JOB_LOW_BG", "resize", "img-2", "resize img-2")
        assert c.expect("JOB_CREATED").data == b"H:vm:2"
        c.send_packet("SUBMIT_JOB", "thumb", "t-1", "thumb t-1")
        assert c.expect("JOB_CREATED").data == b"H:vm:3"
        w.send_packet("GRAB_JOB")
        p = w.recv_packet()
        while p.name == "NOOP":
            p = w.recv_packet()
        assert p.name == "JOB_ASSIGN" and p.fields()[0] == b"H:vm:3", p
        w.send_packet("CAN_DO", "resize")
        w.send_packet("PRE_SLEEP")
        w.expect("NOOP")
    except BaseException:
        s.stop()
        raise
    return s, [w, c]


class Pair:
    """The same scenario on our server and on 1.1.20."""

    def __enter__(self):
        need_tools()
        self.ours, self._oc = start_scenario(gmtest.GEARMAND)
        try:
            self.ref, self._rc = start_scenario(REFERENCE)
        except BaseException:
            self.ours.stop()
            raise
        return self

    def __exit__(self, *exc):
        for c in self._oc + self._rc:
            c.close()
        try:
            self.ref.stop()
        finally:
            return self.ours.__exit__(*exc)


def gearadmin(server, *opts):
    r = subprocess.run([GEARADMIN, "-h", "127.0.0.1", "-p", str(server.port)] + list(opts),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    return r.returncode, r.stdout, r.stderr


WORKER_LINE = re.compile(rb"^\d+ (\S+ \S+ :(?: \S+)*)$")


def normalise(out, server):
    """Replaces the pid, the version and the workers fds by placeholders,
    and sorts the lines of each list (a list ends with a "." line)."""
    pid = str(server.proc.pid).encode()
    version = version_of(server.binary)
    lines = out.split(b"\n")
    fixed = []
    for line in lines:
        if line == pid:
            line = b"<PID>"
        elif line == version:
            line = b"<VERSION>"
        else:
            m = WORKER_LINE.match(line)
            if m:
                line = b"<FD> " + m.group(1)
        fixed.append(line)
    # group into segments ending with ".", sort inside each
    segs, cur = [], []
    for line in fixed:
        cur.append(line)
        if line == b".":
            segs.append(sorted(cur[:-1]) + [b"."])
            cur = []
    segs.append(cur)
    return segs


def compare(pair, *opts):
    """Runs gearadmin with opts against both servers; asserts the same exit
    status, stderr and normalised stdout; returns ours (rc, out, err)."""
    o = gearadmin(pair.ours, *opts)
    r = gearadmin(pair.ref, *opts)
    assert o[0] == r[0], "%s: exit %s, 1.1.20 %s" % (opts, o[0], r[0])
    assert o[2] == r[2], "%s: stderr %r, 1.1.20 %r" % (opts, o[2], r[2])
    no, nr = normalise(o[1], pair.ours), normalise(r[1], pair.ref)
    assert no == nr, "%s:\n ours   %r\n 1.1.20 %r" % (opts, o[1], r[1])
    return o


@test
def test_status():
    with Pair() as p:
        rc, out, err = compare(p, "--status")
        assert rc == 0 and out.endswith(b"\n.\n") and err == b"", (rc, out, err)
        assert sorted(out.splitlines()) == sorted([b"thumb\t1\t1\t1", b"resize\t2\t0\t1", b"."]), out


@test
def test_priority_status():
    with Pair() as p:
        rc, out, err = compare(p, "--priority-status")
        assert sorted(out.splitlines()) == sorted([b"thumb\t0\t0\t0\t1", b"resize\t1\t0\t1\t1", b"."]), out


@test
def test_workers():
    with Pair() as p:
        rc, out, err = compare(p, "--workers")
        # gearadmin's own connection is listed too
        assert out.count(b"\n") == 4 and b" w1 : resize thumb\n" in out, out


@test
def test_server_version():
    with Pair() as p:
        rc, out, err = compare(p, "--server-version")
        assert out == version_of(p.ours.binary) + b"\n", out


@test
def test_server_verbose():
    with Pair() as p:
        rc, out, err = compare(p, "--server-verbose")
        assert out == b"INFO\n", out


@test
def test_getpid():
    with Pair() as p:
        rc, out, err = compare(p, "--getpid")
        assert out == b"%d\n" % p.ours.proc.pid, out


@test
def test_show_jobs():
    with Pair() as p:
        rc, out, err = compare(p, "--show-jobs")
        assert out == b"H:vm:1\t0\t0\t1\nH:vm:2\t0\t0\t1\nH:vm:3\t0\t0\t0\n.\n", out


@test
def test_show_unique_jobs():
    with Pair() as p:
        rc, out, err = compare(p, "--show-unique-jobs")
        assert sorted(out.splitlines()) == sorted([b"t-1", b"img-1", b"img-2", b"."]), out


@test
def test_cancel_job():
    with Pair() as p:
        rc, out, err = compare(p, "--cancel-job", "H:vm:2")
        assert (rc, out, err) == (0, b"OK\n", b""), (rc, out, err)
        rc, out, err = compare(p, "--cancel-job", "H:nope:1")
        assert (rc, out, err) == (0, b"", b"Error: UNKNOWN_JOB\r\n"), (rc, out, err)
        # the running job: cancelled, still listed as ignored until its
        # worker is done with it
        compare(p, "--cancel-job", "H:vm:3")
        rc, out, err = gearadmin(p.ours, "--show-jobs")
        assert b"H:vm:3\t0\t1\t0\n" in out, out
        rc, out, err = gearadmin(p.ref, "--show-jobs")
        assert b"H:vm:3\t0\t1\t0\n" in out, out


@test
def test_create_function():
    with Pair() as p:
        rc, out, err = compare(p, "--create-function", "newfn")
        assert (rc, out, err) == (0, b"OK\n", b""), (rc, out, err)
        rc, out, err = compare(p, "--status")
        assert b"newfn\t0\t0\t0\n" in out, out
        compare(p, "--create-function", "resize")


@test
def test_drop_function():
    with Pair() as p:
        compare(p, "--create-function", "newfn")
        rc, out, err = compare(p, "--drop-function", "NewFn")
        assert (rc, out, err) == (0, b"OK\n", b""), (rc, out, err)
        rc, out, err = compare(p, "--drop-function", "nothere")
        assert (rc, out, err) == (0, b"", b"Error: function not found\r\n"), (rc, out, err)
        rc, out, err = compare(p, "--drop-function", "thumb")
        assert err == b"Error: there are still connected workers or executing clients\r\n", err
        compare(p, "--status")


@test
def test_several_options_in_one_run():
    with Pair() as p:
        compare(p, "--status", "--priority-status", "--workers", "--getpid", "--server-version",
                "--server-verbose", "--show-jobs", "--show-unique-jobs")
        compare(p, "--create-function", "x1", "--drop-function", "x1", "--cancel-job", "H:nope:9",
                "--status")


@test
def test_on_an_empty_server():
    need_tools()
    with Server() as ours, Server(binary=REFERENCE) as ref:
        class P:
            pass
        p = P()
        p.ours, p.ref = ours, ref
        for opts in (["--status"], ["--priority-status"], ["--show-jobs"], ["--show-unique-jobs"],
                     ["--workers"], ["--drop-function", "f"], ["--cancel-job", "H:x:1"]):
            compare(p, *opts)


if __name__ == "__main__":
    gmtest.main()
