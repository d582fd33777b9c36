#!/usr/bin/env python3
"""Our `gearman` and `gearadmin` tools (bin/), against our gearmand and
against Debian's gearmand 1.1.20, so that compatibility is shown both ways
(Debian's tools against our server are in tests/interop).

The tools under test are $GM_GEARMAN and $GM_GEARADMIN (default
$TOP_BUILDDIR/bin/gearman and $TOP_BUILDDIR/bin/gearadmin); our server is
$GEARMAND; the reference server is /usr/sbin/gearmand (gearman-job-server
1.1.20) and the reference gearadmin /usr/bin/gearadmin (gearman-tools
1.1.20), both installed by tests/run-suite and never taken from PATH.  What the tools must do is in docs/gearman.1,
docs/gearadmin.1 and the reference (gearmand-1.1.20.md section 8), with the
fixes of 1.1.20's bugs: `gearman` exits non-zero when no server can be
reached, a line-mode worker (-n) sends each output line once, gearadmin
exits non-zero on an ERR reply and reads each reply to its terminating line.

Tests marked `both` run twice: against our gearmand, and (suffix
`_on_1_1_20`, skipped if /usr/sbin/gearmand is missing) against 1.1.20.
gearadmin's output is compared with /usr/bin/gearadmin's on the same
server state, after normalising the fd numbers of `workers` lines and the
CR that 1.1.20's gearadmin leaves at the end of an error message.

gearadmin's options for our job lifecycle commands (docs/lifecycle.md) are
tested against our gearmand only, with exact outputs (a dead letter's time
matched as digits), and against 1.1.20 only for their ERR and exit status.

Every process runs with a timeout; workers are killed in finally blocks.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gmtest  # noqa: E402
from gmtest import Conn, Server, fail, skip, test, wait_until  # noqa: E402

GEARMAN = os.environ.get("GM_GEARMAN") or os.path.join(gmtest.TOP_BUILDDIR, "bin", "gearman")
GEARADMIN = os.environ.get("GM_GEARADMIN") or os.path.join(gmtest.TOP_BUILDDIR, "bin", "gearadmin")
REF_GEARMAND = "/usr/sbin/gearmand"
REF_GEARADMIN = "/usr/bin/gearadmin"

# no GEARMAN_SERVER from the caller's environment leaks into a tool
ENV = {k: v for k, v in os.environ.items() if k not in ("GEARMAN_SERVER", "GEARMAN_SERVERS")}


# ----------------------------------------------------------------------
# helpers

def need_tools():
    for path in (GEARMAN, GEARADMIN):
        if not os.access(path, os.X_OK):
            fail("%s is not built (set GM_GEARMAN / GM_GEARADMIN or TOP_BUILDDIR)" % path)


def both(fn):
    """Registers fn(binary) twice: on our gearmand, and on 1.1.20."""
    def ours():
        need_tools()
        fn(gmtest.GEARMAND)

    def ref():
        need_tools()
        if not os.access(REF_GEARMAND, os.X_OK):
            skip("%s is not installed" % REF_GEARMAND)
        fn(REF_GEARMAND)
    ours.__name__ = fn.__name__
    ref.__name__ = fn.__name__ + "_on_1_1_20"
    test(ours)
    test(ref)
    return fn


def ours_only(fn):
    def run():
        need_tools()
        fn()
    run.__name__ = fn.__name__
    return test(run)


def dead_port():
    """A port nobody listens on (connections are refused)."""
    return gmtest.free_port()


def short(b, n=600):
    """b (bytes or None) cut for a failure message."""
    if b is None or len(b) <= n:
        return repr(b)
    return "%r... (%d bytes)" % (b[:n], len(b))


def run(tool, *args, port=None, input=b"", env=None, timeout=10.0):
    """Runs a tool to its end (with -h 127.0.0.1 -p PORT first when port is
    given); returns the CompletedProcess (bytes)."""
    cmd = [tool] + (["-h", "127.0.0.1", "-p", str(port)] if port else []) + list(args)
    try:
        return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout,
                              env=dict(ENV, **(env or {})))
    except subprocess.TimeoutExpired as e:
        hung = e
    fail("%s hung (%.0fs); stdout %s stderr %s" % (" ".join(cmd), timeout, short(hung.stdout),
                                                   short(hung.stderr)))


def gearman(port, *args, **kw):
    return run(GEARMAN, *args, port=port, **kw)


def gearadmin(port, *args, tool=None, **kw):
    return run(tool or GEARADMIN, *args, port=port, **kw)


def expect(r, stdout, rc=0, stderr=None):
    ok = r.returncode == rc and r.stdout == stdout and (stderr is None or r.stderr == stderr)
    assert ok, "%s:\n want rc %d stdout %s stderr %s\n got  rc %d stdout %s stderr %s" % (
        " ".join(r.args[1:]), rc, short(stdout), short(stderr), r.returncode, short(r.stdout),
        short(r.stderr))


class Procs:
    """Background processes of one test; killed (by their own pid) at the
    end.  Their stdout/stderr go to files, read with out()/err()."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="gmtools-")
        self.procs = []
        self.pids = []  # daemons: not our children

    def __enter__(self):
        return self

    def start(self, cmd, env=None, stdin=subprocess.DEVNULL):
        i = len(self.procs)
        out = open(os.path.join(self.dir, "%d.out" % i), "wb")
        err = open(os.path.join(self.dir, "%d.err" % i), "wb")
        p = subprocess.Popen(cmd, stdin=stdin, stdout=out, stderr=err, env=dict(ENV, **(env or {})))
        out.close()
        err.close()
        p.outfile, p.errfile = out.name, err.name
        self.procs.append(p)
        return p

    def worker(self, port, *args, env=None):
        """Starts `gearman -w ARGS` (with -h/-p when port is given)."""
        hp = ["-h", "127.0.0.1", "-p", str(port)] if port else []
        return self.start([GEARMAN] + hp + ["-w"] + list(args), env=env)

    def client(self, port, *args, env=None, stdin=subprocess.DEVNULL):
        return self.start([GEARMAN, "-h", "127.0.0.1", "-p", str(port)] + list(args), env=env,
                          stdin=stdin)

    @staticmethod
    def out(p):
        with open(p.outfile, "rb") as f:
            return f.read()

    @staticmethod
    def err(p):
        with open(p.errfile, "rb") as f:
            return f.read()

    def finish(self, p, timeout=10.0):
        """Waits for p to exit; returns (rc, stdout, stderr)."""
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            fail("%s did not exit within %.0fs; stdout %s stderr %s" % (
                " ".join(p.args), timeout, short(self.out(p)), short(self.err(p))))
        return p.returncode, self.out(p), self.err(p)

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.pids:
            kill_if_gearman(pid)
        shutil.rmtree(self.dir, True)


def kill_if_gearman(pid):
    """Kills pid if it is still a (non-zombie) gearman process."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return
    if state != "Z" and os.path.basename(GEARMAN).encode() in cmd:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def admin(port, line):
    with Conn(port) as c:
        return c.admin(line)


def status_lines(port, cmd="status"):
    return admin(port, cmd).decode().splitlines()[:-1]


def function_status(port, fn, cmd="status"):
    """The fields of fn's line of `status` (or `prioritystatus`), or None."""
    for line in status_lines(port, cmd):
        f = line.split("\t")
        if f[0] == fn:
            return [int(x) for x in f[1:]]
    return None


def wait_workers(port, fn, n=1, procs=(), timeout=10.0):
    """Waits until fn has at least n workers; fails early (with its stderr)
    if one of the worker processes has exited."""
    def ready():
        for p in procs:
            if p.poll() is not None:
                fail("worker %s exited with %s; stderr %s" % (" ".join(p.args), p.returncode,
                                                              short(Procs.err(p))))
        st = function_status(port, fn)
        return st is not None and st[2] >= n
    wait_until(ready, timeout=timeout, what="%d worker(s) for %s" % (n, fn))


def wait_jobs(port, fn, total, timeout=10.0):
    """Waits until fn's job total (queued + running) is `total`."""
    wait_until(lambda: (function_status(port, fn) or [0])[0] == total, timeout=timeout,
               what="%d job(s) of %s" % (total, fn))


def grab(w, timeout=10.0):
    """On a raw worker connection that has sent CAN_DO: takes one job
    (GRAB_JOB_UNIQ, sleeping with PRE_SLEEP while there is none); returns
    (handle, unique, data)."""
    deadline = time.time() + timeout
    w.send_packet("GRAB_JOB_UNIQ")
    while True:
        left = deadline - time.time()
        if left <= 0:
            fail("no job for the raw worker within %.0fs" % timeout)
        try:
            p = w.recv_packet(timeout=left)
        except (TimeoutError, socket.timeout):
            fail("no job for the raw worker within %.0fs" % timeout)
        if p.name == "JOB_ASSIGN_UNIQ":
            h, _fn, u, d = p.fields(4)
            return h, u, d
        if p.name == "NO_JOB":
            w.send_packet("PRE_SLEEP")
        elif p.name == "NOOP":
            w.send_packet("GRAB_JOB_UNIQ")
        else:
            fail("raw worker got %r" % p)


def take_jobs(port, fn, n):
    """Grabs n queued jobs of fn with a raw worker, checks that no more are
    queued, and returns [(unique, data)] in grab order.  The jobs are
    requeued when the raw worker disconnects (callers do not care)."""
    with Conn(port) as w:
        w.send_packet("CAN_DO", fn)
        got = []
        for _ in range(n):
            h, u, d = grab(w)
            got.append((u, d))
        w.send_packet("GRAB_JOB_UNIQ")
        p = w.recv_packet()
        assert p.name == "NO_JOB", "more than %d job(s) of %s: %r" % (n, fn, p)
        return got


def raw_client_job(port, fn, data, timeout=10.0):
    """Submits a foreground job on a raw connection; returns the list of
    (packet name, data) received for it up to WORK_COMPLETE/WORK_FAIL."""
    with Conn(port, timeout=timeout) as c:
        c.send_packet("SUBMIT_JOB", fn, "", data)
        h = c.expect("JOB_CREATED").data
        got = []
        while True:
            p = c.recv_packet()
            f = p.fields(2)
            assert f[0] == h, "packet for another job: %r" % p
            got.append((p.name, f[1] if len(f) > 1 else b""))
            if p.name in ("WORK_COMPLETE", "WORK_FAIL"):
                return got


UUID = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# ----------------------------------------------------------------------
# gearman, client mode: results, status, exit status

def client_with_raw_worker(binary, fn, script, *client_args, data=b"payload"):
    """Runs `gearman -f fn <client_args> payload`; a raw worker takes the
    job, checks its workload and sends `script` [(type, fields...)].
    Returns the client's CompletedProcess-like (rc, stdout, stderr)."""
    with Server(binary=binary) as s, Procs() as ps:
        c = ps.client(s.port, "-f", fn, *client_args, data.decode())
        with Conn(s.port) as w:
            w.send_packet("CAN_DO", fn)
            h, _u, d = grab(w)
            assert d == data, "workload %r, want %r" % (d, data)
            for ptype, *fields in script:
                w.send_packet(ptype, h, *fields)
            return ps.finish(c)


@both
def test_client_prints_data_status_and_result_on_stdout_warning_on_stderr(binary):
    rc, out, err = client_with_raw_worker(binary, "f1", [
        ("WORK_STATUS", "1", "4"), ("WORK_DATA", "data1\n"), ("WORK_WARNING", "warn1\n"),
        ("WORK_STATUS", "3", "4"), ("WORK_DATA", "data2\n"), ("WORK_COMPLETE", "done\n")])
    assert (rc, out, err) == (0, b"25% Complete\ndata1\n75% Complete\ndata2\ndone\n", b"warn1\n"), \
        (rc, out, err)


@both
def test_client_result_is_written_raw_without_a_newline(binary):
    rc, out, err = client_with_raw_worker(binary, "f1", [("WORK_COMPLETE", "no newline")])
    assert (rc, out, err) == (0, b"no newline", b""), (rc, out, err)


@both
def test_client_exception_goes_to_stderr_and_exits_non_zero(binary):
    rc, out, err = client_with_raw_worker(binary, "f1", [
        ("WORK_DATA", "part\n"), ("WORK_EXCEPTION", "boom")])
    assert rc != 0, "exit status 0 after WORK_EXCEPTION; stderr %r" % err
    assert out == b"part\n", out
    assert b"boom" in err and b"Job failed" in err, err


@both
def test_client_failed_job_prints_job_failed_and_exits_1(binary):
    rc, out, err = client_with_raw_worker(binary, "f1", [("WORK_DATA", "partial"), ("WORK_FAIL",)])
    assert (rc, out) == (1, b"partial"), (rc, out, err)
    assert b"Job failed" in err, err


@ours_only
def test_client_exits_1_when_no_server_can_be_reached():
    # gearman-tools 1.1.20 prints an error but exits 0 here (a bug)
    port = dead_port()
    r = gearman(port, "-f", "f1", "x")
    assert r.returncode == 1 and r.stdout == b"", r
    assert str(port).encode() in r.stderr, r.stderr
    r = run(GEARMAN, "-f", "f1", "x",
            env={"GEARMAN_SERVER": "127.0.0.1:%d,127.0.0.1:%d" % (dead_port(), dead_port())})
    assert r.returncode == 1 and r.stdout == b"" and r.stderr, r


@both
def test_client_arguments_make_one_job_each_for_every_function(binary):
    # -f is repeatable; each argument is one job per function
    with Server(binary=binary) as s:
        expect(gearman(s.port, "-b", "-f", "fa", "-f", "fb", "x", "yy"), b"")
        assert function_status(s.port, "fa") == [2, 0, 0], status_lines(s.port)
        assert function_status(s.port, "fb") == [2, 0, 0], status_lines(s.port)
        assert [d for _u, d in take_jobs(s.port, "fa", 2)] == [b"x", b"yy"]
        assert [d for _u, d in take_jobs(s.port, "fb", 2)] == [b"x", b"yy"]


@both
def test_client_reads_stdin_whole_as_one_job(binary):
    with Server(binary=binary) as s:
        expect(gearman(s.port, "-b", "-f", "f1", input=b"line 1\nline 2\n\0bin\n"), b"")
        assert [d for _u, d in take_jobs(s.port, "f1", 1)] == [b"line 1\nline 2\n\0bin\n"]


@both
def test_client_n_makes_one_job_per_line(binary):
    with Server(binary=binary) as s:
        expect(gearman(s.port, "-b", "-n", "-f", "f1", input=b"abc\nxyz\n\nlast"), b"")
        assert [d for _u, d in take_jobs(s.port, "f1", 4)] == [b"abc\n", b"xyz\n", b"\n", b"last"]


@both
def test_client_N_makes_one_job_per_line_without_the_newline(binary):
    with Server(binary=binary) as s:
        expect(gearman(s.port, "-b", "-N", "-f", "f1", input=b"abc\nxyz\nlast"), b"")
        assert [d for _u, d in take_jobs(s.port, "f1", 3)] == [b"abc", b"xyz", b"last"]


@both
def test_client_s_sends_an_empty_job_without_reading_stdin(binary):
    with Server(binary=binary) as s, Procs() as ps:
        # stdin stays open: a client that reads it would never finish
        c = ps.client(s.port, "-b", "-s", "-f", "f1", stdin=subprocess.PIPE)
        try:
            rc, out, err = ps.finish(c, timeout=5)
        finally:
            c.stdin.close()
        assert (rc, out, err) == (0, b"", b""), (rc, out, err)
        assert [d for _u, d in take_jobs(s.port, "f1", 1)] == [b""]


@both
def test_client_u_sets_the_unique_key_otherwise_a_uuid(binary):
    with Server(binary=binary) as s:
        expect(gearman(s.port, "-b", "-u", "key-1", "-f", "f1", "a"), b"")
        # same function and unique: coalesced into the queued job
        expect(gearman(s.port, "-b", "-u", "key-1", "-f", "f1", "b"), b"")
        assert function_status(s.port, "f1") == [1, 0, 0], status_lines(s.port)
        assert take_jobs(s.port, "f1", 1) == [(b"key-1", b"a")]
        expect(gearman(s.port, "-b", "-f", "f2", "a", "b"), b"")
        got = take_jobs(s.port, "f2", 2)
        assert all(UUID.match(u) for u, _d in got) and got[0][0] != got[1][0], got


@both
def test_client_jobs_coalesced_by_u_each_get_the_result(binary):
    # two arguments with the same -u are one job on the server, which sends
    # its result once per submission: each is printed (gearman-tools 1.1.20
    # prints "cbacba" and exits 0)
    with Server(binary=binary) as s, Procs() as ps:
        w = ps.worker(s.port, "-f", "rev", "rev")
        wait_workers(s.port, "rev", procs=[w])
        expect(gearman(s.port, "-u", "same", "-f", "rev", "abc", "abc", timeout=5), b"cbacba", stderr=b"")
        expect(gearman(s.port, "-u", "same", "-n", "-f", "rev", input=b"xy\nxy\n", timeout=5),
               b"yx\nyx\n", stderr=b"")


@both
def test_client_b_runs_in_background_and_v_prints_task_created(binary):
    with Server(binary=binary) as s:
        # no worker: a background submit returns at once, printing nothing
        expect(gearman(s.port, "-b", "-f", "f1", "a", timeout=5), b"", stderr=b"")
        r = gearman(s.port, "-v", "-b", "-f", "f1", "b", "c", timeout=5)
        assert r.returncode == 0 and r.stderr == b"", r
        handles = re.findall(rb"^Task created: (\S+)$", r.stdout, re.M)
        assert len(handles) == 2 and r.stdout.count(b"\n") == 2, r.stdout
        jobs = [line.split("\t")[0].encode() for line in status_lines(s.port, "show jobs")]
        assert set(handles) <= set(jobs) and len(jobs) == 3, (handles, jobs)
        assert function_status(s.port, "f1") == [3, 0, 0]


@both
def test_client_v_prints_task_created_for_a_foreground_job(binary):
    with Server(binary=binary) as s, Procs() as ps:
        w = ps.worker(s.port, "-f", "up", "tr", "a-z", "A-Z")
        wait_workers(s.port, "up", procs=[w])
        r = gearman(s.port, "-v", "-f", "up", "abc")
        assert r.returncode == 0 and re.match(rb"^Task created: \S+\n", r.stdout), r
        assert r.stdout.endswith(b"\nABC"), r.stdout


@both
def test_client_I_and_L_submit_high_and_low_priority_jobs(binary):
    with Server(binary=binary) as s, Procs() as ps:
        # background: the per-priority counts show them
        for opts in (["-I"], [], ["-L"], ["-L"]):
            expect(gearman(s.port, "-b", *opts, "-f", "bg", "x"), b"")
        assert function_status(s.port, "bg", "prioritystatus") == [1, 1, 2, 0], \
            status_lines(s.port, "prioritystatus")
        # foreground: a low job submitted first, a high one second; the
        # high one is handed out first
        lo = ps.client(s.port, "-L", "-f", "fg", "low")
        wait_until(lambda: function_status(s.port, "fg", "prioritystatus") == [0, 0, 1, 0],
                   what="the low job queued")
        hi = ps.client(s.port, "-I", "-f", "fg", "high")
        wait_until(lambda: function_status(s.port, "fg", "prioritystatus") == [1, 0, 1, 0],
                   what="the high job queued")
        with Conn(s.port) as w:
            w.send_packet("CAN_DO", "fg")
            for want in (b"high", b"low"):
                h, _u, d = grab(w)
                assert d == want, "got %r, want %r first" % (d, want)
                w.send_packet("WORK_COMPLETE", h, d.upper())
            assert ps.finish(hi) == (0, b"HIGH", b"")
            assert ps.finish(lo) == (0, b"LOW", b"")


@both
def test_client_P_prefixes_output_with_the_function_name(binary):
    with Server(binary=binary) as s, Procs() as ps:
        w = ps.worker(s.port, "-f", "fa", "-f", "fb", "tr", "a-z", "A-Z")
        wait_workers(s.port, "fa", procs=[w])
        wait_workers(s.port, "fb", procs=[w])
        r = gearman(s.port, "-P", "-f", "fa", "-f", "fb", "hi\n")
        assert r.returncode == 0 and r.stderr == b"", r
        assert sorted(r.stdout.splitlines(True)) == [b"fa: HI\n", b"fb: HI\n"], r.stdout
        # without -P: the bare results
        r = gearman(s.port, "-f", "fa", "-f", "fb", "hi\n")
        assert r.returncode == 0 and r.stdout == b"HI\nHI\n", r


@both
def test_client_t_gives_up_after_the_timeout(binary):
    with Server(binary=binary) as s:
        t0 = time.time()
        r = gearman(s.port, "-t", "300", "-f", "nobody", "x", timeout=10)
        took = time.time() - t0
        assert r.returncode != 0 and r.stdout == b"" and r.stderr, r
        assert took < 5, "gave up after %.1fs with -t 300" % took


@ours_only
def test_client_t_times_out_on_a_server_that_never_answers():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog, nothing is read
        t0 = time.time()
        r = gearman(silent.getsockname()[1], "-t", "300", "-f", "f1", "x", timeout=10)
        assert r.returncode == 1 and r.stdout == b"" and r.stderr, r
        assert time.time() - t0 < 5, "took %.1fs" % (time.time() - t0)


@both
def test_client_i_writes_a_pidfile_removed_at_exit(binary):
    with Server(binary=binary) as s, Procs() as ps:
        pidfile = os.path.join(ps.dir, "client.pid")
        c = ps.client(s.port, "-i", pidfile, "-f", "f1", "x")

        def pid_written():
            try:
                with open(pidfile) as f:
                    return f.read().strip()
            except OSError:
                return None
        assert wait_until(pid_written, what="the pid file") == str(c.pid)
        with Conn(s.port) as w:
            w.send_packet("CAN_DO", "f1")
            h, _u, _d = grab(w)
            w.send_packet("WORK_COMPLETE", h, "ok")
            assert ps.finish(c) == (0, b"ok", b"")
        assert not os.path.exists(pidfile), "pid file left behind"


@both
def test_client_h_takes_host_port_and_a_fail_over_list(binary):
    with Server(binary=binary) as s:
        r = run(GEARMAN, "-h", "127.0.0.1:%d" % s.port, "-b", "-f", "f1", "a")
        expect(r, b"")
        r = run(GEARMAN, "-h", "127.0.0.1:%d,127.0.0.1:%d" % (dead_port(), s.port), "-b", "-f", "f1", "b")
        expect(r, b"")
        # -p on its own, with the host defaulting to localhost
        r = run(GEARMAN, "-p", str(s.port), "-b", "-f", "f1", "c")
        expect(r, b"")
        assert [d for _u, d in take_jobs(s.port, "f1", 3)] == [b"a", b"b", b"c"]


@both
def test_gearman_server_variable_overrides_h_p_and_fails_over(binary):
    with Server(binary=binary) as s, Procs() as ps:
        env = {"GEARMAN_SERVER": "127.0.0.1:%d,127.0.0.1:%d" % (dead_port(), s.port)}
        # the worker: the first server is down, it takes the second
        w = ps.worker(None, "-f", "rev", "rev", env=env)
        wait_workers(s.port, "rev", procs=[w])
        # the client: -h/-p name a dead server, GEARMAN_SERVER wins
        r = run(GEARMAN, "-h", "127.0.0.1", "-p", str(dead_port()), "-f", "rev", "hello", env=env)
        expect(r, b"olleh", stderr=b"")


@ours_only
def test_gearman_H_prints_the_help():
    r = run(GEARMAN, "-H")
    assert r.returncode == 0 and b"Client mode" in r.stdout and b"Worker mode" in r.stdout, r
    for opt in (b"-f", b"-h", b"-p", b"-t", b"-i", b"-b", b"-I", b"-L", b"-n", b"-N", b"-P", b"-s",
                b"-u", b"-v", b"-c", b"-w", b"GEARMAN_SERVER"):
        assert opt in r.stdout, "help does not mention %s" % opt.decode()


@ours_only
def test_gearman_refuses_wrong_options_with_exit_1():
    port = dead_port()  # nothing must be tried: the options are wrong first
    for args in (["x"],                      # no -f
                 ["-Z", "-f", "f1", "x"],    # unknown option
                 ["-f"],                     # missing value
                 ["--ssl-ca-file", "ca.pem", "-f", "f1", "x"],  # a TLS file without -S
                 ["-S", "-f", "f1", "--ssl-key"],                # missing value
                 ["-t", "soon", "-f", "f1", "x"],
                 ["-w", "-c", "-1", "-f", "f1"]):
        r = gearman(port, *args, timeout=5)
        assert r.returncode == 1 and r.stdout == b"" and r.stderr, (args, r)


# ----------------------------------------------------------------------
# gearman, worker mode

@both
def test_classic_example_worker_prints_the_workload(binary):
    # gearman -w -f func1 &  then  gearman -I -f func1 test  prints "test"
    with Server(binary=binary) as s, Procs() as ps:
        w = ps.worker(s.port, "-f", "func1")
        wait_workers(s.port, "func1", procs=[w])
        expect(gearman(s.port, "-I", "-f", "func1", "test"), b"", stderr=b"")
        wait_until(lambda: ps.out(w) == b"test", timeout=5, what="the worker printing 'test'")
        assert w.poll() is None, "the worker exited after one job without -c"
        expect(gearman(s.port, "-f", "func1", "again\n"), b"")
        wait_until(lambda: ps.out(w) == b"testagain\n", timeout=5, what="the second workload")


@both
def test_worker_runs_rev(binary):
    with Server(binary=binary) as s, Procs() as ps:
        w = ps.worker(s.port, "-f", "rev", "rev")
        wait_workers(s.port, "rev", procs=[w])
        expect(gearman(s.port, "-f", "rev", "hello"), b"olleh", stderr=b"")
        expect(gearman(s.port, "-f", "rev", input=b"hello\nworld\n"), b"olleh\ndlrow\n", stderr=b"")
        expect(gearman(s.port, "-f", "rev", "-s"), b"", stderr=b"")  # empty workload


@both
def test_worker_runs_tr_with_arguments(binary):
    with Server(binary=binary) as s, Procs() as ps:
        w = ps.worker(s.port, "-f", "up", "tr", "a-z", "A-Z")
        # after "--" (as with gearman-tools), -d is tr's option, not the worker's
        w2 = ps.worker(s.port, "-f", "del", "--", "tr", "-d", "aeiou")
        wait_workers(s.port, "up", procs=[w])
        wait_workers(s.port, "del", procs=[w2])
        expect(gearman(s.port, "-f", "up", "Hello, World"), b"HELLO, WORLD", stderr=b"")
        expect(gearman(s.port, "-f", "del", "education"), b"dctn", stderr=b"")
        big = b"abc\n" * 50000  # more than a pipe holds, both ways
        expect(gearman(s.port, "-f", "up", input=big, timeout=20), big.upper(), stderr=b"")


@both
def test_worker_command_that_exits_1_fails_the_job(binary):
    with Server(binary=binary) as s, Procs() as ps:
        w = ps.worker(s.port, "-f", "bad", "sh", "-c", "cat; echo ' partial'; exit 1")
        wait_workers(s.port, "bad", procs=[w])
        r = gearman(s.port, "-f", "bad", "in")
        assert r.returncode == 1 and r.stdout == b"in partial\n" and b"Job failed" in r.stderr, r
        w2 = ps.worker(s.port, "-f", "false", "false")
        wait_workers(s.port, "false", procs=[w2])
        r = gearman(s.port, "-f", "false", "x")
        assert r.returncode == 1 and r.stdout == b"" and b"Job failed" in r.stderr, r
        # a command that cannot be run
        w3 = ps.worker(s.port, "-f", "nocmd", "/nonexistent/command")
        wait_workers(s.port, "nocmd", procs=[w3])
        r = gearman(s.port, "-f", "nocmd", "x")
        assert r.returncode == 1 and r.stdout == b"" and b"Job failed" in r.stderr, r
        # the workers carry on after a failed job
        assert raw_client_job(s.port, "bad", "y") == [("WORK_DATA", b"y partial\n"), ("WORK_FAIL", b"")]
        assert w.poll() is None and w2.poll() is None and w3.poll() is None


@both
def test_worker_c_exits_after_count_jobs(binary):
    with Server(binary=binary) as s, Procs() as ps:
        w = ps.worker(s.port, "-c", "2", "-f", "f1")
        wc = ps.worker(s.port, "-c", "1", "-f", "f2", "rev")
        wait_workers(s.port, "f1", procs=[w])
        wait_workers(s.port, "f2", procs=[wc])
        expect(gearman(s.port, "-f", "f1", "one "), b"")
        time.sleep(0.2)
        assert w.poll() is None, "worker -c 2 exited after one job"
        expect(gearman(s.port, "-f", "f1", "two"), b"")
        assert ps.finish(w, timeout=5) == (0, b"one two", b"")
        expect(gearman(s.port, "-f", "f2", "abc"), b"cba")
        assert ps.finish(wc, timeout=5) == (0, b"", b"")


@both
def test_worker_n_sends_each_output_line_once(binary):
    # gearman-tools 1.1.20 sends l1, then l1 l2, then l1 l2 l3 (a bug)
    with Server(binary=binary) as s, Procs() as ps:
        w = ps.worker(s.port, "-n", "-f", "lines", "printf", "l1\\nl2\\nl3\\n")
        w2 = ps.worker(s.port, "-n", "-f", "slow", "sh", "-c",
                       "echo one; sleep 0.2; echo two; sleep 0.2; printf three")
        wait_workers(s.port, "lines", procs=[w])
        wait_workers(s.port, "slow", procs=[w2])
        assert raw_client_job(s.port, "lines", "x") == [
            ("WORK_DATA", b"l1\n"), ("WORK_DATA", b"l2\n"), ("WORK_DATA", b"l3\n"),
            ("WORK_COMPLETE", b"")]
        assert raw_client_job(s.port, "slow", "x") == [
            ("WORK_DATA", b"one\n"), ("WORK_DATA", b"two\n"), ("WORK_DATA", b"three"),
            ("WORK_COMPLETE", b"")]
        # a second job starts with an empty buffer too
        expect(gearman(s.port, "-f", "lines", "x"), b"l1\nl2\nl3\n")


@both
def test_worker_N_sends_each_line_without_its_newline(binary):
    with Server(binary=binary) as s, Procs() as ps:
        w = ps.worker(s.port, "-N", "-f", "lines", "printf", "l1\\nl2\\n\\nl3\\n")
        wait_workers(s.port, "lines", procs=[w])
        assert raw_client_job(s.port, "lines", "x") == [
            ("WORK_DATA", b"l1"), ("WORK_DATA", b"l2"), ("WORK_DATA", b""), ("WORK_DATA", b"l3"),
            ("WORK_COMPLETE", b"")]
        expect(gearman(s.port, "-f", "lines", "x"), b"l1l2l3")


@both
def test_worker_n_with_a_failing_command_sends_the_lines_then_fails(binary):
    with Server(binary=binary) as s, Procs() as ps:
        w = ps.worker(s.port, "-n", "-f", "bad", "sh", "-c", "echo a; echo b; exit 1")
        wait_workers(s.port, "bad", procs=[w])
        assert raw_client_job(s.port, "bad", "x") == [
            ("WORK_DATA", b"a\n"), ("WORK_DATA", b"b\n"), ("WORK_FAIL", b"")]


@both
def test_worker_i_writes_a_pidfile_removed_at_exit(binary):
    with Server(binary=binary) as s, Procs() as ps:
        pidfile = os.path.join(ps.dir, "worker.pid")
        w = ps.worker(s.port, "-c", "1", "-i", pidfile, "-f", "f1")
        wait_workers(s.port, "f1", procs=[w])
        with open(pidfile) as f:
            assert f.read().strip() == str(w.pid)
        expect(gearman(s.port, "-f", "f1", "x"), b"")
        assert ps.finish(w) == (0, b"x", b"")
        assert not os.path.exists(pidfile), "pid file left behind"


@both
def test_worker_d_detaches(binary):
    with Server(binary=binary) as s, Procs() as ps:
        pidfile = os.path.join(ps.dir, "daemon.pid")
        p = ps.worker(s.port, "-d", "-c", "1", "-i", pidfile, "-f", "up", "tr", "a-z", "A-Z")
        assert ps.finish(p, timeout=5) == (0, b"", b""), "the parent did not exit 0 at once"

        def pid():
            try:
                with open(pidfile) as f:
                    return int(f.read().strip() or 0)
            except (OSError, ValueError):
                return 0
        dpid = wait_until(pid, what="the daemon's pid file")
        ps.pids.append(dpid)
        assert dpid != p.pid
        wait_workers(s.port, "up")
        expect(gearman(s.port, "-f", "up", "abc"), b"ABC")
        # -c 1: the daemon exits, removing its pid file
        wait_until(lambda: not os.path.exists(pidfile), what="the daemon to exit")


@ours_only
def test_worker_exits_1_when_no_server_can_be_reached():
    r = gearman(dead_port(), "-w", "-f", "f1", timeout=5)
    assert r.returncode == 1 and r.stdout == b"" and r.stderr, r


@both
def test_worker_fails_over_to_the_next_server_when_its_server_goes_down(binary):
    with Server(binary=binary) as a, Server(binary=binary) as b, Procs() as ps:
        w = ps.worker(None, "-f", "rev", "rev",
                      env={"GEARMAN_SERVER": "127.0.0.1:%d,127.0.0.1:%d" % (a.port, b.port)})
        wait_workers(a.port, "rev", procs=[w])
        expect(gearman(a.port, "-f", "rev", "on a"), b"a no")
        rc = a.stop()
        assert rc == 0, "server a exited with %s" % rc
        wait_workers(b.port, "rev", procs=[w])
        expect(gearman(b.port, "-f", "rev", "on b"), b"b no")
        # the client side of the same list: a is down, b answers
        r = run(GEARMAN, "-f", "rev", "abc",
                env={"GEARMAN_SERVER": "127.0.0.1:%d,127.0.0.1:%d" % (a.port, b.port)})
        expect(r, b"cba", stderr=b"")


# ----------------------------------------------------------------------
# gearadmin

WORKERS_LINE = re.compile(rb"^\d+ (\S+ \S+ :(?: \S+)*)$")


def normalise_admin(r):
    """(rc, stdout, stderr without CRs); in stdout, `workers` lines get
    <FD> for their fd and are sorted (the asking connection is listed too,
    at a place that changes from one connection to the next)."""
    lines = r.stdout.split(b"\n")
    workers = sorted(b"<FD> " + m.group(1) for m in map(WORKERS_LINE.match, lines) if m)
    others = [line for line in lines if not WORKERS_LINE.match(line)]
    return (r.returncode, b"\n".join(workers + others), r.stderr.replace(b"\r", b""))


def need_ref_gearadmin():
    if not os.access(REF_GEARADMIN, os.X_OK):
        skip("%s is not installed" % REF_GEARADMIN)


def compare_admin(port, *args, err=False, ref_port=None):
    """Runs our gearadmin and 1.1.20's with the same options on the same
    server (for a command that changes the state: ours on `port`, 1.1.20's
    on `ref_port`, a server in the same state); asserts the same stdout and
    stderr (normalised), exit status 1 for ours on an ERR reply (1.1.20
    exits 0 there: a bug) and 0 otherwise.  Returns ours (CompletedProcess)."""
    o = gearadmin(port, *args)
    r = gearadmin(ref_port or port, *args, tool=REF_GEARADMIN)
    no, nr = normalise_admin(o), normalise_admin(r)
    assert no[1:] == nr[1:], "gearadmin %s:\n ours   %r %r\n 1.1.20 %r %r" % (
        " ".join(args), o.stdout, o.stderr, r.stdout, r.stderr)
    assert o.returncode == (1 if err else 0), "gearadmin %s: exit %d, stderr %r" % (
        " ".join(args), o.returncode, o.stderr)
    assert r.returncode == 0, "1.1.20's gearadmin %s: exit %d" % (" ".join(args), r.returncode)
    return o


class AdminState:
    """A server in a fixed state: worker w1 (resize, thumb) runs the thumb
    job t-1; resize img-1 (HIGH_BG) and img-2 (LOW_BG) are queued."""

    def __init__(self, binary):
        need_ref_gearadmin()
        self.server = Server("--job-handle-prefix", "H:vm", binary=binary)

    def __enter__(self):
        s = self.server.start()
        try:
            self.w, self.c = s.conn(), s.conn()
            self.w.send_packet("SET_CLIENT_ID", "w1")
            self.w.send_packet("CAN_DO", "thumb")
            self.c.send_packet("SUBMIT_JOB_HIGH_BG", "resize", "img-1", "resize img-1")
            assert self.c.expect("JOB_CREATED").data == b"H:vm:1"
            self.c.send_packet("SUBMIT_JOB_LOW_BG", "resize", "img-2", "resize img-2")
            assert self.c.expect("JOB_CREATED").data == b"H:vm:2"
            self.c.send_packet("SUBMIT_JOB", "thumb", "t-1", "thumb t-1")
            assert self.c.expect("JOB_CREATED").data == b"H:vm:3"
            h, _u, _d = grab(self.w)
            assert h == b"H:vm:3", h
            self.w.send_packet("CAN_DO", "resize")
            self.w.send_packet("ECHO_REQ", "sync")
            self.w.expect("ECHO_RES")
        except BaseException:
            self.server.stop()
            raise
        self.port = s.port
        return self

    def __exit__(self, *exc):
        self.w.close()
        self.c.close()
        return self.server.__exit__(*exc)


@both
def test_gearadmin_status(binary):
    with AdminState(binary) as st:
        o = compare_admin(st.port, "--status")
        assert sorted(o.stdout.splitlines()) == [b".", b"resize\t2\t0\t1", b"thumb\t1\t1\t1"], o.stdout
        assert o.stdout.endswith(b"\n.\n") and o.stderr == b""


@both
def test_gearadmin_priority_status(binary):
    with AdminState(binary) as st:
        o = compare_admin(st.port, "--priority-status")
        assert sorted(o.stdout.splitlines()) == [b".", b"resize\t1\t0\t1\t1", b"thumb\t0\t0\t0\t1"], \
            o.stdout


@both
def test_gearadmin_workers(binary):
    with AdminState(binary) as st:
        o = compare_admin(st.port, "--workers")
        lines = o.stdout.splitlines()
        # the worker, the client, and gearadmin's own connection
        assert len(lines) == 4 and lines[-1] == b"." and \
            re.search(rb"^\d+ 127\.0\.0\.1 w1 : (resize thumb|thumb resize)$", o.stdout, re.M), o.stdout


@both
def test_gearadmin_show_jobs(binary):
    with AdminState(binary) as st:
        o = compare_admin(st.port, "--show-jobs")
        assert sorted(o.stdout.splitlines()) == [
            b".", b"H:vm:1\t0\t0\t1", b"H:vm:2\t0\t0\t1", b"H:vm:3\t0\t0\t0"], o.stdout


@both
def test_gearadmin_show_unique_jobs(binary):
    with AdminState(binary) as st:
        o = compare_admin(st.port, "--show-unique-jobs")
        assert sorted(o.stdout.splitlines()) == [b".", b"img-1", b"img-2", b"t-1"], o.stdout


@both
def test_gearadmin_server_version_verbose_and_getpid(binary):
    with AdminState(binary) as st:
        with Conn(st.port) as c:
            version = c.admin("version")
        assert version.startswith(b"OK "), version
        o = compare_admin(st.port, "--server-version")
        assert o.stdout == version[3:].rstrip(b"\r\n") + b"\n", (o.stdout, version)
        o = compare_admin(st.port, "--server-verbose")
        assert o.stdout == b"INFO\n", o.stdout
        o = compare_admin(st.port, "--getpid")
        assert o.stdout == b"%d\n" % st.server.proc.pid, o.stdout


def same_status(a, b):
    """Asserts that two servers list the same functions and jobs."""
    for cmd in ("status", "prioritystatus", "show jobs", "show unique jobs"):
        sa = sorted(admin(a.port, cmd).splitlines())
        sb = sorted(admin(b.port, cmd).splitlines())
        assert sa == sb, "%s differs after the same commands:\n %r\n %r" % (cmd, sa, sb)


def live_jobs(port):
    """Handles that `show jobs` lists as not ignored (1.1.20 keeps a
    cancelled job listed with ignore=1 until a worker comes across it)."""
    return sorted(line.split("\t")[0] for line in status_lines(port, "show jobs")
                  if line.split("\t")[2] == "0")


@both
def test_gearadmin_create_function(binary):
    with AdminState(binary) as a, AdminState(binary) as b:
        o = compare_admin(a.port, "--create-function", "newfn", ref_port=b.port)
        assert (o.stdout, o.stderr) == (b"OK\n", b"")
        assert function_status(a.port, "newfn") == [0, 0, 0]
        compare_admin(a.port, "--create-function", "resize", ref_port=b.port)  # exists: still OK
        same_status(a, b)


@both
def test_gearadmin_drop_function(binary):
    with AdminState(binary) as a, AdminState(binary) as b:
        for st in (a, b):
            expect(gearadmin(st.port, "--create-function", "newfn"), b"OK\n")
        o = compare_admin(a.port, "--drop-function", "NewFn", ref_port=b.port)
        assert (o.stdout, o.stderr) == (b"OK\n", b"")
        assert function_status(a.port, "newfn") is None
        o = compare_admin(a.port, "--drop-function", "nothere", err=True, ref_port=b.port)
        assert (o.stdout, o.stderr) == (b"", b"Error: function not found\n"), o
        o = compare_admin(a.port, "--drop-function", "thumb", err=True, ref_port=b.port)
        assert o.stderr == b"Error: there are still connected workers or executing clients\n", o
        same_status(a, b)


@both
def test_gearadmin_cancel_job(binary):
    with AdminState(binary) as a, AdminState(binary) as b:
        o = compare_admin(a.port, "--cancel-job", "H:vm:2", ref_port=b.port)
        assert (o.stdout, o.stderr) == (b"OK\n", b"")
        assert live_jobs(a.port) == ["H:vm:1", "H:vm:3"], status_lines(a.port, "show jobs")
        o = compare_admin(a.port, "--cancel-job", "H:nope:1", err=True, ref_port=b.port)
        assert (o.stdout, o.stderr) == (b"", b"Error: UNKNOWN_JOB\n"), o
        same_status(a, b)


@both
def test_gearadmin_runs_several_commands_in_the_order_given(binary):
    # (1.1.20's gearadmin runs them in an order of its own)
    with AdminState(binary) as st:
        o = gearadmin(st.port, "--create-function", "x1", "--status", "--drop-function", "x1",
                      "--getpid", "--status", "--cancel-job", "H:nope:1", "--server-verbose")
        st1 = admin(st.port, "status")  # without x1
        assert o.returncode == 1 and o.stderr == b"Error: UNKNOWN_JOB\n", o
        parts = o.stdout.split(b"\n.\n")
        assert len(parts) == 3, o.stdout
        assert parts[0].startswith(b"OK\n") and b"\nx1\t0\t0\t0" in b"\n" + parts[0], o.stdout
        assert parts[1].startswith(b"OK\n%d\n" % st.server.proc.pid), o.stdout
        assert parts[1][len(b"OK\n%d\n" % st.server.proc.pid):] + b"\n.\n" == st1, o.stdout
        assert parts[2] == b"INFO\n", o.stdout


@both
def test_gearadmin_list_line_starting_with_err_does_not_shift_later_replies(binary):
    # a unique key "ERR boom" makes `show unique jobs` start with the line
    # "ERR boom\n" (1.1.20's gearadmin prints that list on stderr, after
    # "Error: "); whatever the list shows, the reply to the next command
    # must be that command's own
    with Server(binary=binary) as s:
        with Conn(s.port) as c:
            c.send_packet("SUBMIT_JOB_BG", "f1", "ERR boom", "x")
            c.expect("JOB_CREATED")
            r = gearadmin(s.port, "--show-unique-jobs", "--getpid")
            assert r.stdout.endswith(b"\n%d\n" % s.proc.pid) or r.stdout == b"%d\n" % s.proc.pid, \
                "--getpid after --show-unique-jobs: stdout %r stderr %r (pid %d)" % (
                    r.stdout, r.stderr, s.proc.pid)
            assert b".\n" in r.stdout + r.stderr and b"ERR boom" in r.stdout + r.stderr, r


@both
def test_gearadmin_without_an_action_prints_a_message_and_exits_1(binary):
    with Server(binary=binary) as s:
        o = gearadmin(s.port)
        assert o.returncode == 1, o
        assert o.stdout.startswith(b"No option execution operation given.\n"), o.stdout
        if os.access(REF_GEARADMIN, os.X_OK):
            r = gearadmin(s.port, tool=REF_GEARADMIN)
            assert r.stdout.splitlines()[0] == o.stdout.splitlines()[0], (r.stdout, o.stdout)


@ours_only
def test_gearadmin_exits_1_when_the_server_cannot_be_reached():
    port = dead_port()
    o = gearadmin(port, "--status")
    assert o.returncode == 1 and o.stdout == b"" and o.stderr.startswith(b"Error: "), o
    if os.access(REF_GEARADMIN, os.X_OK):
        r = gearadmin(port, "--status", tool=REF_GEARADMIN)
        assert r.returncode == 1 and r.stderr.startswith(b"Error: "), r


@both
def test_gearadmin_host_and_port_forms(binary):
    with Server(binary=binary) as s:
        pid = b"%d\n" % s.proc.pid
        for args in (["-h", "127.0.0.1", "-p", str(s.port)],
                     ["--host", "127.0.0.1", "--port", str(s.port)],
                     ["--host=127.0.0.1", "--port=%d" % s.port],
                     ["-h127.0.0.1", "-p%d" % s.port],
                     ["-p", str(s.port)]):  # host defaults to localhost
            expect(run(GEARADMIN, *args, "--getpid"), pid, stderr=b"")


@ours_only
def test_gearadmin_help_and_wrong_options():
    r = run(GEARADMIN, "--help")
    assert r.returncode == 0 and b"--status" in r.stdout and b"--shutdown" in r.stdout, r
    port = dead_port()
    for args in (["--bogus"], ["--cancel-job"], ["--status=yes"], ["--ssl-key", "k.pem", "--status"], ["-S", "--status", "--ssl-ca-file"],
                 ["-t", "never", "--status"], ["stray"]):
        r = gearadmin(port, *args, timeout=5)
        assert r.returncode == 1 and r.stderr, (args, r)


@ours_only
def test_gearadmin_t_times_out_on_a_server_that_never_answers():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        t0 = time.time()
        for opt in (["-t", "300"], ["--timeout=300"]):
            r = gearadmin(silent.getsockname()[1], *opt, "--status", timeout=10)
            assert r.returncode == 1 and r.stderr.startswith(b"Error: "), r
        assert time.time() - t0 < 5, "took %.1fs" % (time.time() - t0)


@ours_only
def test_gearadmin_reads_a_slow_list_to_its_end():
    # 1.1.20's gearadmin stops after 5 ms of silence and cuts the list
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.settimeout(10)

        def serve():
            try:
                conn, _ = srv.accept()
                with conn:
                    buf = b""
                    while b"\n" not in buf:
                        buf += conn.recv(100)
                    conn.sendall(b"f1\t1\t0\t0\n")
                    time.sleep(0.3)
                    conn.sendall(b"f2\t2\t0\t0\n")
                    time.sleep(0.3)
                    conn.sendall(b".\n")
                    conn.recv(100)
            except OSError:
                pass
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        expect(gearadmin(srv.getsockname()[1], "--status"), b"f1\t1\t0\t0\nf2\t2\t0\t0\n.\n", stderr=b"")
        t.join(5)


@ours_only
def test_gearadmin_shutdown_stops_the_server():
    s = Server().start()
    try:
        expect(gearadmin(s.port, "--shutdown"), b"OK\n", stderr=b"")
        s.proc.wait(10)
    finally:
        rc = s.stop()
    assert rc == 0, "gearmand exited with %s after --shutdown" % rc


@ours_only
def test_gearadmin_shutdown_graceful_waits_for_the_running_job():
    s = Server().start()
    try:
        with Conn(s.port) as c, Conn(s.port) as w:
            c.send_packet("SUBMIT_JOB_BG", "f1", "", "x")
            c.expect("JOB_CREATED")
            w.send_packet("CAN_DO", "f1")
            h, _u, _d = grab(w)
            expect(gearadmin(s.port, "--shutdown", "--graceful"), b"OK\n", stderr=b"")
            time.sleep(0.3)
            assert s.proc.poll() is None, "the server exited with a job running"
            w.send_packet("WORK_COMPLETE", h, "")
            s.proc.wait(10)
    finally:
        rc = s.stop()
    assert rc == 0, "gearmand exited with %s after --shutdown --graceful" % rc


@ours_only
def test_gearadmin_shutdown_on_1_1_20_is_an_error():
    # 1.1.20 removed the shutdown command (1.1.15): ERR, exit 1, server up
    if not os.access(REF_GEARMAND, os.X_OK):
        skip("%s is not installed" % REF_GEARMAND)
    with Server(binary=REF_GEARMAND) as s:
        r = gearadmin(s.port, "--shutdown")
        expect(r, b"", rc=1, stderr=b"Error: UNKNOWN_COMMAND Unknown+server+commandshutdown\n")
        assert s.proc.poll() is None
        expect(gearadmin(s.port, "--getpid"), b"%d\n" % s.proc.pid)



# ----------------------------------------------------------------------
# gearadmin: the job lifecycle options (ours only; docs/lifecycle.md)

POLICY_DEFAULTS = b"backoff=1000\tmax_backoff=300000\ttimeout=0\tconcurrency=0"


def lifecycle_server():
    return Server("--job-handle-prefix", "H:t")


def make_dead_letter(port, fn, unique):
    """Submits a background job of fn (whose policy has no retries left)
    and fails its one attempt with a raw worker; returns its handle once
    `show dead` lists it."""
    with Conn(port) as c, Conn(port) as w:
        c.send_packet("SUBMIT_JOB_BG", fn, unique, "data")
        h = c.expect("JOB_CREATED").data
        w.send_packet("CAN_DO", fn)
        got, _u, _d = grab(w)
        assert got == h, (got, h)
        w.send_packet("WORK_FAIL", h)
        wait_until(lambda: h + b"\t" in admin(port, "show dead"), what="dead letter %r" % h)
    return h


def dead_letters(port, *jobs):
    """Gives the functions of jobs [(fn, unique)] the policy retries=0 with
    --policy, then makes each job a dead letter; returns their handles."""
    fns = sorted({fn for fn, _u in jobs})
    expect(gearadmin(port, *[a for fn in fns for a in ("--policy", fn + " retries=0")]), b"OK\n" * len(fns))
    return [make_dead_letter(port, fn, u) for fn, u in jobs]


def dead_line(handle, fn, unique, reason=b"fail", attempts=1):
    """A `show dead` line as a regex: its died-at time is any epoch second."""
    return re.escape(b"\t".join([handle, fn, unique, b"%d" % attempts])) + rb"\t\d+\t" + reason + b"\n"


@ours_only
def test_gearadmin_policy_in_both_forms_then_show_policies():
    with lifecycle_server() as s:
        expect(gearadmin(s.port, "--policy", "f retries=0"), b"OK\n", stderr=b"")
        expect(gearadmin(s.port, "--policy", "g:retries=2,backoff=10,concurrency=3"), b"OK\n", stderr=b"")
        expect(gearadmin(s.port, "--policy=h:timeout=7"), b"OK\n", stderr=b"")
        expect(gearadmin(s.port, "--show-policies"),
               b"f\tretries=0\t" + POLICY_DEFAULTS + b"\tpaused=0\n"
               b"g\tretries=2\tbackoff=10\tmax_backoff=300000\ttimeout=0\tconcurrency=3\tpaused=0\n"
               b"h\tretries=0\tbackoff=1000\tmax_backoff=300000\ttimeout=7\tconcurrency=0\tpaused=0\n.\n",
               stderr=b"")
        # a policy set at run time merges into the one the function has
        expect(gearadmin(s.port, "--policy", "g max_backoff=50", "--policy", "h reset"), b"OK\nOK\n")
        expect(gearadmin(s.port, "--show-policies"),
               b"f\tretries=0\t" + POLICY_DEFAULTS + b"\tpaused=0\n"
               b"g\tretries=2\tbackoff=10\tmax_backoff=50\ttimeout=0\tconcurrency=3\tpaused=0\n.\n")
        r = gearadmin(s.port, "--policy", "g:bogus=1")
        expect(r, b"", rc=1)
        assert r.stderr.startswith(b"Error: INVALID_ARGUMENTS unknown+key"), r.stderr


@ours_only
def test_gearadmin_show_dead_retry_dead_and_show_job():
    with lifecycle_server() as s:
        expect(gearadmin(s.port, "--policy", "f:retries=0"), b"OK\n")
        h = make_dead_letter(s.port, "f", "u-1")
        for args in (["--show-dead"], ["--show-dead", "f"], ["--show-dead=f"]):
            r = gearadmin(s.port, *args)
            assert r.returncode == 0 and r.stderr == b"" and \
                re.fullmatch(dead_line(h, b"f", b"u-1") + rb"\.\n", r.stdout), (args, r)
        expect(gearadmin(s.port, "--show-dead", "other"), b".\n", stderr=b"")
        expect(gearadmin(s.port, "--show-job", h.decode()), h + b"\tf\tu-1\tdead\t1\t0\n.\n", stderr=b"")
        expect(gearadmin(s.port, "--retry-dead", h.decode()), b"OK\n", stderr=b"")
        expect(gearadmin(s.port, "--show-job", h.decode()), h + b"\tf\tu-1\tqueued\t0\t0\n.\n", stderr=b"")
        expect(gearadmin(s.port, "--show-dead"), b".\n")
        assert function_status(s.port, "f") == [1, 0, 0], status_lines(s.port)


@ours_only
def test_gearadmin_discard_dead_and_the_all_forms():
    with lifecycle_server() as s:
        h1, h2, h3, h4 = dead_letters(s.port, ("f", "u-1"), ("f", "u-2"), ("g", "u-3"), ("g", "u-4"))
        expect(gearadmin(s.port, "--discard-dead", h1.decode()), b"OK\n", stderr=b"")
        r = gearadmin(s.port, "--show-dead")
        assert re.fullmatch(dead_line(h2, b"f", b"u-2") + dead_line(h3, b"g", b"u-3") +
                            dead_line(h4, b"g", b"u-4") + rb"\.\n", r.stdout), r.stdout
        expect(gearadmin(s.port, "--discard-dead-all", "g"), b"OK\n", stderr=b"")
        r = gearadmin(s.port, "--show-dead")
        assert re.fullmatch(dead_line(h2, b"f", b"u-2") + rb"\.\n", r.stdout), r.stdout
        expect(gearadmin(s.port, "--retry-dead-all", "f"), b"OK\n", stderr=b"")
        expect(gearadmin(s.port, "--show-dead"), b".\n")
        assert function_status(s.port, "f") == [1, 0, 0] and function_status(s.port, "g") == [0, 0, 0], \
            status_lines(s.port)


@ours_only
def test_gearadmin_unknown_handle_is_an_error_with_exit_1():
    with lifecycle_server() as s:
        expect(gearadmin(s.port, "--retry-dead", "H:t:99"), b"", rc=1,
               stderr=b"Error: UNKNOWN_JOB no+dead+letter+has+that+handle\n")
        expect(gearadmin(s.port, "--discard-dead", "H:t:99"), b"", rc=1,
               stderr=b"Error: UNKNOWN_JOB no+dead+letter+has+that+handle\n")
        expect(gearadmin(s.port, "--show-job", "H:t:99"), b"", rc=1,
               stderr=b"Error: UNKNOWN_JOB no+job+has+that+handle\n")
        # as after an ERR to 1.1.20's commands, the later commands still run
        expect(gearadmin(s.port, "--show-job", "H:t:99", "--getpid"), b"%d\n" % s.proc.pid, rc=1,
               stderr=b"Error: UNKNOWN_JOB no+job+has+that+handle\n")


@ours_only
def test_gearadmin_pause_resume_and_purge():
    with lifecycle_server() as s, Conn(s.port) as c, Conn(s.port) as w:
        expect(gearadmin(s.port, "--pause", "f"), b"OK\n", stderr=b"")
        expect(gearadmin(s.port, "--show-policies"), b"f\tretries=0\t" + POLICY_DEFAULTS + b"\tpaused=1\n.\n")
        c.send_packet("SUBMIT_JOB_BG", "f", "u-1", "x")
        h = c.expect("JOB_CREATED").data
        w.send_packet("CAN_DO", "f")
        w.send_packet("GRAB_JOB")
        assert w.expect("NO_JOB"), "a paused function's job was handed out"
        expect(gearadmin(s.port, "--resume", "f"), b"OK\n", stderr=b"")
        got, _u, _d = grab(w)
        assert got == h, (got, h)
        w.send_packet("WORK_COMPLETE", h, "")
        for u in ("u-2", "u-3"):
            c.send_packet("SUBMIT_JOB_BG", "f", u, "x")
            c.expect("JOB_CREATED")
        wait_jobs(s.port, "f", 2)
        expect(gearadmin(s.port, "--pause", "f", "--purge", "f"), b"OK\nOK\n", stderr=b"")
        assert function_status(s.port, "f") == [0, 0, 1], status_lines(s.port)
        expect(gearadmin(s.port, "--purge", "nope"), b"", rc=1, stderr=b"Error: UNKNOWN_FUNCTION no+such+function\n")
        expect(gearadmin(s.port, "--resume", "nope"), b"", rc=1, stderr=b"Error: UNKNOWN_FUNCTION no+such+function\n")


@ours_only
def test_gearadmin_show_dead_takes_the_next_argument_only_if_it_is_not_an_option():
    with lifecycle_server() as s:
        hf, hg = dead_letters(s.port, ("f", "u-f"), ("g", "u-g"))
        pid = b"%d\n" % s.proc.pid
        both_lines = dead_line(hf, b"f", b"u-f") + dead_line(hg, b"g", b"u-g") + rb"\.\n"
        for args, want in ((["--show-dead", "--getpid"], both_lines + re.escape(pid)),
                           (["--getpid", "--show-dead"], re.escape(pid) + both_lines),
                           (["--show-dead", "g", "--getpid"], dead_line(hg, b"g", b"u-g") + rb"\.\n" + re.escape(pid)),
                           (["--show-dead=f", "--show-dead"], dead_line(hf, b"f", b"u-f") + rb"\.\n" + both_lines)):
            r = gearadmin(s.port, *args)
            assert r.returncode == 0 and r.stderr == b"" and re.fullmatch(want, r.stdout), (args, r)


@ours_only
def test_gearadmin_lifecycle_options_in_help_and_their_wrong_uses():
    r = run(GEARADMIN, "--help")
    for opt in (b"--show-policies", b"--policy arg", b"--pause arg", b"--resume arg", b"--purge arg",
                b"--show-dead [arg]", b"--retry-dead arg", b"--retry-dead-all arg", b"--discard-dead arg",
                b"--discard-dead-all arg", b"--show-job arg"):
        assert b"\n  " + opt + b" " in r.stdout, (opt, r.stdout)
    port = dead_port()
    for args in (["--retry-dead"], ["--policy"], ["--show-job"], ["--show-policies=x"], ["--show-dead", "f", "g"]):
        r = gearadmin(port, *args, timeout=5)
        assert r.returncode == 1 and r.stderr.startswith(b"gearadmin: "), (args, r)


@ours_only
def test_gearadmin_lifecycle_options_on_1_1_20_are_errors():
    if not os.access(REF_GEARMAND, os.X_OK):
        skip("%s is not installed" % REF_GEARMAND)
    with Server(binary=REF_GEARMAND) as s:
        for args in (["--show-policies"], ["--policy", "f:retries=1"], ["--pause", "f"], ["--show-dead"],
                     ["--retry-dead-all", "f"], ["--show-job", "H:x:1"]):
            r = gearadmin(s.port, *args)
            assert r.returncode == 1 and r.stdout == b"" and r.stderr.startswith(b"Error: "), (args, r)


if __name__ == "__main__":
    gmtest.main()
