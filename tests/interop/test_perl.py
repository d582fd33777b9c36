#!/usr/bin/env python3
"""Interop: Perl's Gearman::Client and Gearman::Worker (Debian's
libgearman-client-perl, a pure-Perl implementation of the protocol) against
our gearmand.

The Perl scripts are written to a temp dir and run with `perl`.  The worker
reverses the workload after Job->set_status(1, 2) and send_work_data("chunk");
it answers "fail" by returning undef (the module then sends WORK_FAIL) and
"exception" with send_work_exception("boom").  Priorities use the module's
`priority => "high" | "normal" | "low"` task option.

test_perl_exception_without_exceptions_option_is_a_clean_work_fail pins a
deliberate difference from gearmand 1.1.20 (design.md section 9) and fails
against it.
"""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import gmtest  # noqa: E402
from gmtest import Server, fail  # noqa: E402
from interop_lib import (ENV, Proc, admin_status, test, total_matching, value,  # noqa: E402
                         wait_status, wait_workers)

TMP = tempfile.mkdtemp(prefix="gmtest-perl-")

WORKER_PL = r"""
# perl worker.pl PORT FUNC[,FUNC...] [COUNT] [SLEEP_MS]
use strict;
use warnings;
use Gearman::Worker;
$| = 1;
my ($port, $funcs, $count, $sleep_ms) = @ARGV;
$count ||= 0;
$sleep_ms ||= 0;
my $w = Gearman::Worker->new(job_servers => ["127.0.0.1:$port"]);
my $done = 0;
for my $f (split /,/, $funcs) {
    $w->register_function($f => sub {
        my $job = shift;
        my $wl = $job->arg;
        print "JOB $f ", $job->handle, " $wl\n";
        $done++;
        return undef if $wl eq "fail";          # the module sends WORK_FAIL
        if ($wl eq "exception") {
            $w->send_work_exception($job, "boom");
            return undef;
        }
        $job->set_status(1, 2);
        select(undef, undef, undef, $sleep_ms / 1000) if $sleep_ms;
        $w->send_work_data($job, "chunk");
        return scalar reverse $wl;
    });
}
print "WORKER STARTED\n";
$w->work(stop_if => sub { $count && $done >= $count });
print "WORKER EXIT $done\n";
"""

CLIENT_PL = r"""
# perl client.pl PORT SCENARIO FUNC ARGS...
use strict;
use warnings;
use Gearman::Client;
use Time::HiRes qw(time sleep);
$| = 1;
my ($port, $scenario, $func, @args) = @ARGV;
my $exceptions = grep { $_ eq "-x" } @args;
@args = grep { $_ ne "-x" } @args;
my $c = Gearman::Client->new(exceptions => $exceptions ? 1 : 0);
$c->job_servers("127.0.0.1:$port");

if ($scenario eq "priorities") {
    for my $p (qw(normal high low)) {
        my (@data, @status);
        my $r = $c->do_task($func, "payload-$p", {
            priority  => $p,
            on_data   => sub { push @data, ${ $_[0] } },
            on_status => sub { push @status, "$_[0]/$_[1]" },
            timeout   => 20,
        });
        print "RESULT $p ", (defined $r ? $$r : "undef"), " data=@data status=@status\n";
    }
}
elsif ($scenario eq "do") {
    my ($wl) = @args;
    my ($failed, $exc) = (0, undef);
    my $r = $c->do_task($func, $wl, {
        on_fail      => sub { $failed++ },
        on_exception => sub { $exc = $_[0] },
        timeout      => 10,
    });
    print "RESULT ", (defined $r ? $$r : "undef"), "\n";
    print "FAILED $failed\n";
    print "EXCEPTION $exc\n" if defined $exc;
}
elsif ($scenario eq "order") {
    my $ts = $c->new_task_set;
    for my $p (qw(low normal high)) {
        my $h = $ts->add_task($func, $p, {
            priority    => $p,
            on_complete => sub { print "DONE ${ $_[0] }\n" },
            on_fail     => sub { print "FAILED $p\n" },
        });
        print "HANDLE $p ", (defined $h ? $h : "undef"), "\n";
    }
    print "CREATED 3\n";
    $ts->wait(timeout => 20);
    print "WAITED\n";
}
elsif ($scenario eq "background") {
    my %h;
    for my $p (qw(normal high low)) {
        $h{$p} = $c->dispatch_background($func, "bg-$p", { priority => $p });
        print "HANDLE $p ", (defined $h{$p} ? $h{$p} : "undef"), "\n";
    }
    for my $p (qw(normal high low)) {
        my $st = $c->get_status($h{$p});
        printf "QUEUED %s %s %s %s\n", $p, ($st ? $st->known : "undef"),
            ($st ? $st->running : "undef"),
            ($st && $st->progress ? join("/", @{ $st->progress }) : "none");
    }
    print "SUBMITTED\n";
    my $progress = 0;
    my $deadline = time + 20;
    while (%h && time < $deadline) {
        for my $p (sort keys %h) {
            my $st = $c->get_status($h{$p}) or next;
            if (!$st->known) {
                print "FINISHED $p\n";
                delete $h{$p};
            }
            elsif ($st->running && $st->progress && $st->percent && $st->percent == 0.5) {
                $progress = 1;
            }
        }
        sleep 0.01;
    }
    print "REMAINING ", scalar(keys %h), "\n";
    print "PROGRESS ", ($progress ? "yes" : "no"), "\n";
}
elsif ($scenario eq "parallel") {
    my ($n) = @args;
    my (%results, $calls, $fails);
    $calls = $fails = 0;
    my $ts = $c->new_task_set;
    my $added = 0;
    for my $i (0 .. $n - 1) {
        my $wl = sprintf("task-%05d-%s", $i, chr(97 + $i % 26));
        my $h = $ts->add_task($func, $wl, {
            on_complete => sub { $calls++; $results{$wl} = ${ $_[0] } },
            on_fail     => sub { $fails++ },
        });
        $added++ if defined $h;
    }
    $ts->wait(timeout => 20);
    my $good = grep { $results{$_} eq reverse($_) } keys %results;
    print "ADDED $added\n";
    print "CALLS $calls\n";
    print "FAILS $fails\n";
    print "DISTINCT ", scalar(keys %results), "\n";
    print "GOOD $good\n";
}
else {
    die "unknown scenario $scenario\n";
}
"""


def need_perl():
    if not shutil.which("perl"):
        fail("perl not found in PATH")
    r = subprocess.run(["perl", "-MGearman::Client", "-MGearman::Worker", "-e",
                        "print $Gearman::Client::VERSION"], capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        fail("Perl Gearman::Client / Gearman::Worker not available (install "
             "libgearman-client-perl): %s" % r.stderr.strip())
    for name, text in (("worker.pl", WORKER_PL), ("client.pl", CLIENT_PL)):
        path = os.path.join(TMP, name)
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(text)


def worker(server, funcs, count=0, sleep_ms=0):
    return Proc(["perl", os.path.join(TMP, "worker.pl"), str(server.port), funcs, str(count),
                 str(sleep_ms)], name="perl worker " + funcs)


def client_proc(server, *args):
    return Proc(["perl", os.path.join(TMP, "client.pl"), str(server.port)] + list(args),
                name="perl client " + " ".join(args))


def client(server, *args, timeout=30.0):
    """Runs one client scenario to the end; returns (lines, output)."""
    cmd = ["perl", os.path.join(TMP, "client.pl"), str(server.port)] + list(args)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                           timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired as e:
        fail("perl client %s hung (no answer within %.0fs); output so far: %r"
             % (" ".join(args), timeout, e.stdout))
    out = r.stdout + (("\n[stderr] " + r.stderr) if r.stderr.strip() else "")
    if r.returncode != 0:
        fail("perl client %s exited %d:\n%s" % (" ".join(args), r.returncode, out))
    return r.stdout.splitlines(), out


def jobs_run(proc, n=0):
    """Workloads in the order the worker received them, once it has
    reported at least n jobs."""
    return [l.split(" ", 3)[3] if l.count(" ") >= 3 else ""
            for l in proc.lines_matching(lambda l: l.startswith("JOB "), n)]


# ----------------------------------------------------------------------


@test
def test_perl_do_task_at_each_priority_gets_status_data_and_result():
    need_perl()
    with Server() as s:
        w = worker(s, "rev")
        try:
            wait_workers(s, "rev")
            lines, out = client(s, "priorities", "rev")
            want = ["RESULT %s %s data=chunk status=1/2" % (p, ("payload-" + p)[::-1])
                    for p in ("normal", "high", "low")]
            assert lines == want, out
            assert jobs_run(w, 3) == ["payload-normal", "payload-high", "payload-low"], w.output()
        finally:
            w.kill()


@test
def test_perl_queued_tasks_run_high_then_normal_then_low():
    need_perl()
    with Server() as s:
        c = client_proc(s, "order", "prio")
        w = None
        try:
            c.wait_line(lambda l: l == "CREATED 3")
            for p in ("low", "normal", "high"):
                h = value(c.lines, "HANDLE " + p)
                assert h and "//H:" in h, c.output()
            assert admin_status(s).get("prio") == (3, 0, 0), admin_status(s)
            w = worker(s, "prio")
            assert c.wait(25) == 0, c.output()
            assert jobs_run(w, 3) == ["high", "normal", "low"], w.output()
            done = [l[5:] for l in c.lines if l.startswith("DONE ")]
            assert done == ["hgih", "lamron", "wol"], c.output()
        finally:
            c.kill()
            if w:
                w.kill()


@test
def test_perl_dispatch_background_each_priority_then_get_status_until_done():
    need_perl()
    with Server() as s:
        c = client_proc(s, "background", "bg")
        w = None
        try:
            c.wait_line(lambda l: l == "SUBMITTED")
            for p in ("normal", "high", "low"):
                h = value(c.lines, "HANDLE " + p)
                assert h and h.startswith("127.0.0.1:%d//H:" % s.port), c.output()
                assert value(c.lines, "QUEUED " + p) == "1 0 0/0", c.output()
            assert admin_status(s).get("bg") == (3, 0, 0), admin_status(s)
            w = worker(s, "bg", sleep_ms=300)
            assert c.wait(30) == 0, c.output()
            assert value(c.lines, "REMAINING") == "0", c.output()
            assert value(c.lines, "PROGRESS") == "yes", c.output()
            finished = [l[9:] for l in c.lines if l.startswith("FINISHED ")]
            assert finished == ["high", "normal", "low"], c.output()
            assert jobs_run(w, 3) == ["bg-high", "bg-normal", "bg-low"], w.output()
            wait_status(s, "bg", (0, 0, 1))
        finally:
            c.kill()
            if w:
                w.kill()


@test
def test_perl_task_set_of_100_tasks_on_complete_gets_every_result():
    need_perl()
    with Server() as s:
        ws = [worker(s, "par") for _ in range(2)]
        try:
            wait_workers(s, "par", 2)
            lines, out = client(s, "parallel", "par", "100")
            for key, want in (("ADDED", "100"), ("CALLS", "100"), ("FAILS", "0"),
                              ("DISTINCT", "100"), ("GOOD", "100")):
                assert value(lines, key) == want, "%s: %s" % (key, out)
            served = total_matching(ws, lambda l: l.startswith("JOB "), 100)
            assert served == 100, "workers served %d jobs" % served
            wait_status(s, "par", (0, 0, 2))
        finally:
            for w in ws:
                w.kill()


@test
def test_perl_worker_returning_undef_fails_the_task():
    need_perl()
    with Server() as s:
        w = worker(s, "f")
        try:
            wait_workers(s, "f")
            lines, out = client(s, "do", "f", "fail")
            assert value(lines, "RESULT") == "undef", out
            assert value(lines, "FAILED") == "1", out
            wait_status(s, "f", (0, 0, 1))
            # the worker is still connected and serves the next job
            lines, out = client(s, "do", "f", "ok")
            assert value(lines, "RESULT") == "ko", out
        finally:
            w.kill()


@test
def test_perl_exception_reaches_on_exception_with_exceptions_option():
    need_perl()
    with Server() as s:
        w = worker(s, "ex")
        try:
            wait_workers(s, "ex")
            lines, out = client(s, "do", "ex", "exception", "-x", timeout=15)
            assert value(lines, "EXCEPTION") == "boom", out
            assert value(lines, "RESULT") == "undef", out
            assert value(lines, "FAILED") == "0", out
            wait_status(s, "ex", (0, 0, 1))
        finally:
            w.kill()


@test
def test_perl_exception_without_exceptions_option_is_a_clean_work_fail():
    # 1.1.20 turns the exception into a WORK_FAIL whose handle carries a
    # trailing NUL; Gearman::Client then dies with "Got work_fail for unknown
    # handle".  Ours sends a clean WORK_FAIL (design.md section 9).
    need_perl()
    with Server() as s:
        w = worker(s, "ex2")
        try:
            wait_workers(s, "ex2")
            lines, out = client(s, "do", "ex2", "exception", timeout=15)
            assert value(lines, "FAILED") == "1", out
            assert value(lines, "EXCEPTION") is None, out
            wait_status(s, "ex2", (0, 0, 1))
        finally:
            w.kill()


@test
def test_perl_worker_with_count_stops_after_its_jobs():
    need_perl()
    with Server() as s:
        w = worker(s, "cnt", count=2)
        try:
            wait_workers(s, "cnt")
            for wl in ("a1", "b2"):
                lines, out = client(s, "do", "cnt", wl)
                assert value(lines, "RESULT") == wl[::-1], out
            assert w.wait(15) == 0, w.output()
            assert "WORKER EXIT 2" in w.lines, w.output()
            wait_status(s, "cnt", (0, 0, 0))
        finally:
            w.kill()


if __name__ == "__main__":
    try:
        gmtest.main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
