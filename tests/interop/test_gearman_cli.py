#!/usr/bin/env python3
"""Interop: the `gearman` command-line tool and `gearadmin` (Debian's
gearman-tools, on libgearman 1.1.20) against our gearmand.

Every call passes -h 127.0.0.1 -p PORT and a subprocess timeout; worker
processes are killed in finally blocks.  What the tool prints is described in
the reference (gearmand-1.1.20.md 8.1): results are written raw, without a
newline; a worker without a command prints each workload and returns an empty
result; a command that exits non-zero makes the client print `Job failed` on
stderr and exit 1.

test_gearman_worker_of_two_functions_takes_jobs_by_priority_across_both pins
a deliberate difference from gearmand 1.1.20 (global priority, design.md
section 9) and fails against it.
"""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import gmtest  # noqa: E402
from gmtest import Server, fail  # noqa: E402
from interop_lib import (ENV, Proc, admin_status, kill_all, debian_tool, test,  # noqa: E402
                         wait_status, wait_workers)

HINT = "install gearman-tools"


def gearman_args(server, *args):
    return [debian_tool("gearman", HINT), "-h", "127.0.0.1", "-p", str(server.port)] + list(args)


def gearman(server, *args, input=None, timeout=10.0):
    """Runs `gearman` to the end; returns the CompletedProcess (bytes)."""
    cmd = gearman_args(server, *args)
    try:
        return subprocess.run(cmd, input=input if input is not None else b"",
                              capture_output=True, timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired as e:
        fail("%s hung (no answer within %.0fs); stdout %r stderr %r"
             % (" ".join(cmd[5:]), timeout, e.stdout, e.stderr))


def gearman_worker(server, *args):
    """Starts `gearman -w ARGS` (a long-running worker)."""
    return Proc(gearman_args(server, "-w", *args), name="gearman -w " + " ".join(args))


def gearman_client(server, *args):
    """Starts a `gearman` client that runs in the background of the test."""
    return Proc(gearman_args(server, *args), name="gearman " + " ".join(args))


def gearadmin(server, *args, timeout=10.0):
    """Runs gearadmin; returns (exit status, stdout text, stderr text)."""
    cmd = [debian_tool("gearadmin", HINT), "-h", "127.0.0.1", "-p", str(server.port)] + list(args)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired:
        fail("gearadmin %s hung" % " ".join(args))
    return r.returncode, r.stdout, r.stderr


def expect(r, stdout, rc=0):
    assert r.returncode == rc and r.stdout == stdout, \
        "want rc %d stdout %r; got rc %d stdout %r stderr %r" % (
            rc, stdout, r.returncode, r.stdout, r.stderr)


# ----------------------------------------------------------------------


@test
def test_gearman_rev_worker_and_client_print_olleh():
    # the example of our README
    with Server() as s:
        w = gearman_worker(s, "-f", "rev", "--", "rev")
        try:
            wait_workers(s, "rev")
            expect(gearman(s, "-f", "rev", "hello"), b"olleh")
        finally:
            w.kill()


@test
def test_gearman_high_and_low_priority_clients_get_their_results():
    with Server() as s:
        w = gearman_worker(s, "-f", "rev", "--", "rev")
        try:
            wait_workers(s, "rev")
            expect(gearman(s, "-I", "-f", "rev", "high"), b"hgih")
            expect(gearman(s, "-L", "-f", "rev", "low"), b"wol")
            expect(gearman(s, "-f", "rev", "one", "two"), b"enoowt")
        finally:
            w.kill()


@test
def test_gearman_queued_foreground_jobs_run_high_then_normal_then_low():
    with Server() as s:
        clients = []
        w = None
        try:
            # submitted low, normal, high, each after the previous is queued
            for n, args in enumerate((["-L", "low"], ["normal"], ["-I", "high"]), 1):
                clients.append(gearman_client(s, "-f", "pq", *args))
                wait_status(s, "pq", (n, 0, 0))
            # a worker without a command prints each workload, returns nothing
            w = gearman_worker(s, "-f", "pq", "-c", "3")
            assert w.wait(15) == 0, w.output()
            assert w.output() == "highnormallow", w.output()
            for c in clients:
                assert c.wait(10) == 0 and c.output() == "", c.output()
            wait_status(s, "pq", (0, 0, 0))
        finally:
            kill_all(clients + [w])


@test
def test_gearman_background_jobs_wait_in_gearadmin_status_until_a_worker_takes_them():
    with Server() as s:
        w = None
        try:
            expect(gearman(s, "-b", "-f", "bq", "normal"), b"")
            expect(gearman(s, "-b", "-I", "-f", "bq", "high"), b"")
            expect(gearman(s, "-b", "-L", "-f", "bq", "low"), b"")
            rc, out, err = gearadmin(s, "--status")
            assert rc == 0 and "bq\t3\t0\t0" in out.splitlines(), (rc, out, err)
            rc, out, err = gearadmin(s, "--priority-status")
            assert rc == 0 and "bq\t1\t1\t1\t0" in out.splitlines(), (rc, out, err)
            w = gearman_worker(s, "-f", "bq", "-c", "3")
            assert w.wait(15) == 0, w.output()
            assert w.output() == "highnormallow", w.output()
            rc, out, err = gearadmin(s, "--status")
            assert rc == 0 and "bq\t0\t0\t0" in out.splitlines(), (rc, out, err)
        finally:
            kill_all([w])


@test
def test_gearman_worker_of_two_functions_takes_jobs_by_priority_across_both():
    # 1.1.20 orders by priority only within a function (a LOW job of one
    # function can run before a HIGH job of another); ours is global
    # (design.md section 9), whatever order the functions were given in
    for order in (["-f", "pa", "-f", "pb"], ["-f", "pb", "-f", "pa"]):
        with Server() as s:
            w = None
            try:
                expect(gearman(s, "-b", "-L", "-f", "pa", "pa-low,"), b"")
                expect(gearman(s, "-b", "-f", "pb", "pb-normal,"), b"")
                expect(gearman(s, "-b", "-I", "-f", "pa", "pa-high,"), b"")
                w = gearman_worker(s, *order, "-c", "3")
                assert w.wait(15) == 0, w.output()
                assert w.output() == "pa-high,pb-normal,pa-low,", (order, w.output())
            finally:
                kill_all([w])


@test
def test_gearman_client_killed_while_queued_its_job_is_dropped_not_run():
    # a foreground job whose only client went away is discarded when a
    # worker reaches it; background jobs are unaffected
    with Server() as s:
        c = w = None
        try:
            c = gearman_client(s, "-f", "ab", "abandoned,")
            wait_status(s, "ab", (1, 0, 0))
            c.kill()
            expect(gearman(s, "-b", "-f", "ab", "kept,"), b"")
            w = gearman_worker(s, "-f", "ab", "-c", "1")
            assert w.wait(15) == 0, w.output()
            assert w.output() == "kept,", w.output()
            wait_status(s, "ab", (0, 0, 0))
        finally:
            kill_all([c, w])


@test
def test_gearman_verbose_background_prints_task_created_with_handle():
    with Server() as s:
        r = gearman(s, "-v", "-b", "-f", "vb", "x")
        assert r.returncode == 0, r
        assert re.fullmatch(rb"Task created: H:[^:\s]+:\d+\n", r.stdout), r.stdout
        assert admin_status(s).get("vb") == (1, 0, 0), admin_status(s)


@test
def test_gearman_workload_with_nul_bytes_and_empty_workload_pass_unchanged():
    with Server() as s:
        w = gearman_worker(s, "-f", "cat", "--", "cat")
        try:
            wait_workers(s, "cat")
            expect(gearman(s, "-f", "cat", input=b"a\0b\0\0c\0"), b"a\0b\0\0c\0")
            expect(gearman(s, "-s", "-f", "cat"), b"")
            blob = bytes(range(256)) * 256
            expect(gearman(s, "-f", "cat", input=blob), blob)
        finally:
            w.kill()


@test
def test_gearman_line_mode_sends_one_job_per_line():
    with Server() as s:
        w = gearman_worker(s, "-f", "rev", "--", "rev")
        try:
            wait_workers(s, "rev")
            r = gearman(s, "-n", "-f", "rev", input=b"ab\ncd\nef\n")
            assert r.returncode == 0, r
            # jobs run concurrently: results arrive in any order
            assert sorted(r.stdout.split(b"\n")) == [b"", b"ba", b"dc", b"fe"], r.stdout
            r = gearman(s, "-N", "-f", "rev", input=b"ab\ncd\nef\n")
            assert r.returncode == 0 and len(r.stdout) == 6, r
            assert all(x in r.stdout for x in (b"ba", b"dc", b"fe")), r.stdout
            # without -n all of stdin is one job
            expect(gearman(s, "-f", "rev", input=b"abc"), b"cba")
        finally:
            w.kill()


@test
def test_gearman_unique_key_coalesces_queued_background_jobs():
    with Server() as s:
        w = rw = None
        try:
            expect(gearman(s, "-b", "-u", "same", "-f", "uq", "first"), b"")
            expect(gearman(s, "-b", "-u", "same", "-f", "uq", "second"), b"")
            expect(gearman(s, "-b", "-u", "other", "-f", "uq", "third"), b"")
            assert admin_status(s).get("uq") == (2, 0, 0), admin_status(s)
            w = gearman_worker(s, "-f", "uq", "-c", "2")
            assert w.wait(15) == 0, w.output()
            assert w.output() == "firstthird", w.output()
            # a foreground job with -u runs normally
            rw = gearman_worker(s, "-f", "rev", "--", "rev")
            wait_workers(s, "rev")
            expect(gearman(s, "-u", "k1", "-f", "rev", "hello"), b"olleh")
        finally:
            kill_all([w, rw])


@test
def test_gearman_several_functions_each_get_the_job():
    with Server() as s:
        w = gearman_worker(s, "-f", "fa", "-f", "fb", "--", "rev")
        try:
            wait_workers(s, "fa")
            wait_workers(s, "fb")
            expect(gearman(s, "-f", "fa", "-f", "fb", "hello"), b"olleholleh")
        finally:
            w.kill()


@test
def test_gearman_prefix_option_labels_results_with_the_function():
    with Server() as s:
        w = gearman_worker(s, "-f", "fa", "-f", "fb", "--", "rev")
        try:
            wait_workers(s, "fa")
            wait_workers(s, "fb")
            r = gearman(s, "-P", "-f", "fa", "-f", "fb", "hello")
            assert r.returncode == 0, r
            # results arrive in either order
            assert r.stdout in (b"fa: ollehfb: olleh", b"fb: ollehfa: olleh"), r.stdout
        finally:
            w.kill()


@test
def test_gearman_worker_command_exiting_1_makes_the_client_report_job_failed():
    with Server() as s:
        w = gearman_worker(s, "-f", "fl", "--", "sh", "-c", "echo partial; exit 1")
        try:
            wait_workers(s, "fl")
            r = gearman(s, "-f", "fl", "hello")
            assert r.returncode == 1, r
            assert b"Job failed" in r.stderr, r.stderr
            assert r.stdout == b"partial\n", r.stdout
            wait_status(s, "fl", (0, 0, 1))
            assert w.running(), "the worker must survive a failed job: " + w.output()
        finally:
            w.kill()


@test
def test_gearman_worker_with_count_exits_after_that_many_jobs():
    with Server() as s:
        w = gearman_worker(s, "-f", "cnt", "-c", "2", "--", "rev")
        try:
            wait_workers(s, "cnt")
            expect(gearman(s, "-f", "cnt", "one"), b"eno")
            expect(gearman(s, "-f", "cnt", "two"), b"owt")
            assert w.wait(10) == 0, w.output()
            wait_status(s, "cnt", (0, 0, 0))
        finally:
            w.kill()


@test
def test_gearadmin_status_and_workers_show_a_gearman_worker():
    with Server() as s:
        w = gearman_worker(s, "-f", "gw")
        try:
            wait_workers(s, "gw")
            rc, out, err = gearadmin(s, "--status")
            assert rc == 0 and err == "", (rc, out, err)
            assert out.endswith(".\n") and "gw\t0\t0\t1" in out.splitlines(), out
            rc, out, err = gearadmin(s, "--workers")
            assert rc == 0 and err == "", (rc, out, err)
            lines = out.splitlines()
            assert lines[-1] == ".", out
            assert any(re.fullmatch(r"\d+ 127\.0\.0\.1 \S+ : gw", l) for l in lines), out
            # every line is a connection: fd, address, client id, ":"
            assert all(re.fullmatch(r"\d+ \S+ \S+ :( \S+)*", l) for l in lines[:-1]), out
        finally:
            w.kill()


@test
def test_gearadmin_server_version_and_getpid():
    with Server() as s:
        with s.conn() as c:
            version = c.admin("version").decode()
        assert version.startswith("OK ") and version.endswith("\n"), version
        rc, out, err = gearadmin(s, "--server-version")
        assert (rc, out, err) == (0, version[3:], ""), (rc, out, err, version)
        rc, out, err = gearadmin(s, "--getpid")
        assert (rc, out, err) == (0, "%d\n" % s.proc.pid, ""), (rc, out, err, s.proc.pid)
        # several options in one run: gearadmin sends them over one
        # connection and executes them in reverse order of its own list
        rc, out, err = gearadmin(s, "--server-version", "--getpid", "--status")
        assert rc == 0 and out == "%d\n%s.\n" % (s.proc.pid, version[3:]), (rc, out, err)


if __name__ == "__main__":
    gmtest.main()
