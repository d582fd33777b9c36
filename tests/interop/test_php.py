#!/usr/bin/env python3
"""Interop: PHP's gearman extension (php-gearman, on Debian's libgearman)
as client and worker against our gearmand.

The PHP scripts are written to a temp dir and run with `php`.  The worker
(GearmanWorker::addFunction) reverses the workload and sends a status 1/2 and
data "chunk" before returning; it answers "fail" with GearmanJob::sendFail and
"exception" with GearmanJob::sendException("boom").  The client script runs
one scenario per call and prints lines that are checked here.  list.php holds
docs/ha.md's settings for a server list in which a server refuses
connections (a --ha standby), and the last test checks that they work.
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

TMP = tempfile.mkdtemp(prefix="gmtest-php-")

WORKER_PHP = r"""<?php
// php worker.php PORT FUNC[,FUNC...] [COUNT] [SLEEP_MS]
$port = (int)$argv[1];
$funcs = explode(",", $argv[2]);
$count = isset($argv[3]) ? (int)$argv[3] : 0;
$sleep_ms = isset($argv[4]) ? (int)$argv[4] : 0;
$w = new GearmanWorker();
$w->addServer("127.0.0.1", $port);
$done = 0;
$fn = function (GearmanJob $job) use (&$done, $sleep_ms) {
    $wl = $job->workload();
    echo "JOB ", $job->functionName(), " ", $job->handle(), " ", $wl, "\n";
    $done++;
    if ($wl === "fail") {
        $job->sendFail();
        return null;
    }
    if ($wl === "exception") {
        $job->sendException("boom");
        return null;
    }
    $job->sendStatus(1, 2);
    if ($sleep_ms) {
        usleep($sleep_ms * 1000);
    }
    $job->sendData("chunk");
    return strrev($wl);
};
foreach ($funcs as $f) {
    $w->addFunction($f, $fn);
}
echo "WORKER STARTED\n";
while ($count == 0 || $done < $count) {
    if (!@$w->work()) {
        echo "WERR ", $w->returnCode(), " ", $w->error(), "\n";
        usleep(100000);
    }
}
echo "WORKER EXIT $done\n";
"""

CLIENT_PHP = r"""<?php
// php client.php PORT SCENARIO ARGS...
function rcname($c) {
    foreach (array("GEARMAN_SUCCESS", "GEARMAN_WORK_FAIL", "GEARMAN_WORK_EXCEPTION",
                   "GEARMAN_TIMEOUT", "GEARMAN_LOST_CONNECTION", "GEARMAN_COULD_NOT_CONNECT",
                   "GEARMAN_WORK_DATA", "GEARMAN_WORK_STATUS", "GEARMAN_IO_WAIT") as $n) {
        if (defined($n) && constant($n) === $c) return $n;
    }
    return "RC_$c";
}
$port = (int)$argv[1];
$scenario = $argv[2];
$func = $argv[3];
$c = new GearmanClient();
$c->addServer("127.0.0.1", $port);
$c->setTimeout(20000);

switch ($scenario) {
case "priorities":
    foreach (array("normal" => "doNormal", "high" => "doHigh", "low" => "doLow") as $p => $m) {
        $r = $c->$m($func, "payload-$p");
        echo "RESULT $p ", rcname($c->returnCode()), " ", $r, "\n";
    }
    break;

case "do":
    $r = $c->doNormal($func, $argv[4]);
    echo "RC ", rcname($c->returnCode()), "\n";
    echo "RESULT ", var_export($r, true), "\n";
    break;

case "order":
    $created = 0;
    $c->setCreatedCallback(function ($t) use (&$created) {
        if (++$created == 3) echo "CREATED 3\n";
    });
    $c->setCompleteCallback(function ($t) { echo "DONE ", $t->data(), "\n"; });
    $c->addTaskLow($func, "low");
    $c->addTask($func, "normal");
    $c->addTaskHigh($func, "high");
    $ok = $c->runTasks();
    echo "RUN ", var_export($ok, true), " ", rcname($c->returnCode()), "\n";
    break;

case "background":
    $handles = array();
    foreach (array("normal" => "doBackground", "high" => "doHighBackground",
                   "low" => "doLowBackground") as $p => $m) {
        $h = $c->$m($func, "bg-$p");
        $handles[$p] = $h;
        echo "HANDLE $p ", rcname($c->returnCode()), " $h\n";
    }
    foreach ($handles as $p => $h) {
        list($known, $running, $num, $den) = $c->jobStatus($h);
        echo "QUEUED $p ", (int)$known, " ", (int)$running, " $num $den\n";
    }
    echo "SUBMITTED\n";
    $progress = false;
    $deadline = microtime(true) + 20;
    while ($handles && microtime(true) < $deadline) {
        foreach ($handles as $p => $h) {
            $st = $c->jobStatus($h);
            if (!is_array($st)) continue;
            list($known, $running, $num, $den) = $st;
            if (!$known) {
                echo "FINISHED $p\n";
                unset($handles[$p]);
            } elseif ($running && $num == 1 && $den == 2) {
                $progress = true;
            }
        }
        usleep(10000);
    }
    echo "REMAINING ", count($handles), "\n";
    echo "PROGRESS ", $progress ? "yes" : "no", "\n";
    break;

case "parallel":
    $n = (int)$argv[4];
    $results = array();
    $calls = 0;
    $c->setCompleteCallback(function ($t, $ctx) use (&$results, &$calls) {
        $calls++;
        $results[$ctx] = $t->data();
    });
    $added = 0;
    for ($i = 0; $i < $n; $i++) {
        $wl = sprintf("task-%05d-%s", $i, chr(97 + $i % 26));
        if ($c->addTask($func, $wl, $wl)) $added++;
    }
    $ok = $c->runTasks();
    $good = 0;
    foreach ($results as $wl => $r) {
        if ($r === strrev($wl)) $good++; else echo "BAD $wl => $r\n";
    }
    echo "ADDED $added\n";
    echo "RUN ", var_export($ok, true), " ", rcname($c->returnCode()), "\n";
    echo "CALLS $calls\n";
    echo "DISTINCT ", count($results), "\n";
    echo "GOOD $good\n";
    break;

case "callbacks":
    $c->setCreatedCallback(function ($t) { echo "CREATED ", $t->jobHandle(), "\n"; });
    $c->setStatusCallback(function ($t) {
        echo "STATUS ", $t->taskNumerator(), "/", $t->taskDenominator(), "\n";
    });
    $c->setDataCallback(function ($t) { echo "DATA ", $t->data(), "\n"; });
    $c->setCompleteCallback(function ($t) { echo "COMPLETE ", $t->data(), "\n"; });
    $c->setFailCallback(function ($t) { echo "FAIL\n"; });
    $c->setExceptionCallback(function ($t) { echo "EXCEPTION ", $t->data(), "\n"; });
    $c->addTask($func, $argv[4]);
    $ok = $c->runTasks();
    echo "RUN ", var_export($ok, true), " ", rcname($c->returnCode()), "\n";
    break;

case "unique":
    // ping (ECHO_REQ), then GET_STATUS_UNIQUE of a background job
    echo "PING ", var_export($c->ping("hello"), true), "\n";
    $h = $c->doBackground($func, "by-unique", $argv[4]);
    echo "HANDLE ", rcname($c->returnCode()), " $h\n";
    $st = $c->jobStatusByUniqueKey($argv[4]);
    echo "BYUNIQUE ", (int)$st[0], " ", (int)$st[1], "\n";
    $st = $c->jobStatusByUniqueKey("no-such-key");
    echo "UNKNOWN ", (int)$st[0], " ", (int)$st[1], "\n";
    echo "SUBMITTED\n";
    $deadline = microtime(true) + 20;
    do {
        usleep(10000);
        $st = $c->jobStatusByUniqueKey($argv[4]);
    } while ($st[0] && microtime(true) < $deadline);
    echo "AFTER ", (int)$st[0], "\n";
    break;

default:
    fwrite(STDERR, "unknown scenario $scenario\n");
    exit(2);
}
"""


# docs/ha.md's PHP settings, for a server list where one server refuses
# connections (a --ha standby, a server that is down)
LIST_PHP = r"""<?php
// php list.php client|client-default|worker SERVERS [COUNT]
$servers = $argv[2];
if ($argv[1] === "client" || $argv[1] === "client-default") {
    $c = new GearmanClient();
    try {
        if ($argv[1] === "client")
            $c->addServers($servers, false);
        else
            $c->addServers($servers);
    } catch (GearmanException $e) {
        echo "THROWN ", $e->getMessage(), "\n";
        exit(0);
    }
    for ($i = 0; $i < 3; $i++)
        echo "HANDLE ", $c->doBackground("listed", "job-$i"), " ", $c->returnCode(), "\n";
    exit(0);
}
$w = new GearmanWorker();
try {
    $w->addServers($servers);
} catch (GearmanException $e) {
    echo "THROWN ", $e->getMessage(), "\n";
}
$w->setTimeout(200);
$count = (int)$argv[3];
$done = 0;
$w->addFunction("listed", function (GearmanJob $job) use (&$done) {
    echo "JOB ", $job->handle(), " ", $job->workload(), "\n";
    $done++;
    return "ok";
});
echo "WORKER STARTED\n";
while ($done < $count && ($w->work() || $w->returnCode() == GEARMAN_TIMEOUT)) {
}
echo "WORKER EXIT $done ", $w->returnCode(), "\n";
"""


def need_php():
    if not shutil.which("php"):
        fail("php not found in PATH (install php-cli and php-gearman)")
    r = subprocess.run(["php", "-r", "echo class_exists('GearmanClient') ? 'yes' : 'no';"],
                       capture_output=True, text=True, timeout=30)
    if r.stdout.strip() != "yes":
        fail("PHP gearman extension not loaded (install php-gearman): %s %s"
             % (r.stdout, r.stderr))
    for name, text in (("worker.php", WORKER_PHP), ("client.php", CLIENT_PHP), ("list.php", LIST_PHP)):
        path = os.path.join(TMP, name)
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(text)


def worker(server, funcs, count=0, sleep_ms=0):
    return Proc(["php", os.path.join(TMP, "worker.php"), str(server.port), funcs, str(count),
                 str(sleep_ms)], name="php worker " + funcs)


def client_proc(server, *args):
    return Proc(["php", os.path.join(TMP, "client.php"), str(server.port)] + list(args),
                name="php client " + " ".join(args))


def client(server, *args, timeout=30.0):
    """Runs one client scenario to the end; returns (lines, output)."""
    cmd = ["php", os.path.join(TMP, "client.php"), str(server.port)] + list(args)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                           timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired as e:
        fail("php client %s hung (no answer within %.0fs); output so far: %r"
             % (" ".join(args), timeout, e.stdout))
    out = r.stdout + (("\n[stderr] " + r.stderr) if r.stderr.strip() else "")
    if r.returncode != 0:
        fail("php client %s exited %d:\n%s" % (" ".join(args), r.returncode, out))
    return r.stdout.splitlines(), out


def jobs_run(proc, n=0):
    """Workloads in the order the worker received them, once it has
    reported at least n jobs."""
    return [l.split(" ", 3)[3] if l.count(" ") >= 3 else ""
            for l in proc.lines_matching(lambda l: l.startswith("JOB "), n)]


# ----------------------------------------------------------------------


@test
def test_php_doNormal_doHigh_doLow_return_work_data_then_reversed_workload():
    need_php()
    with Server() as s:
        w = worker(s, "rev")
        try:
            wait_workers(s, "rev")
            lines, out = client(s, "priorities", "rev")
            # doNormal & co. return every WORK_DATA chunk followed by the result
            want = ["RESULT %s GEARMAN_SUCCESS chunk%s" % (p, ("payload-" + p)[::-1])
                    for p in ("normal", "high", "low")]
            assert lines == want, out
            assert jobs_run(w, 3) == ["payload-normal", "payload-high", "payload-low"], w.output()
        finally:
            w.kill()


@test
def test_php_queued_tasks_run_high_then_normal_then_low():
    need_php()
    with Server() as s:
        c = client_proc(s, "order", "prio")
        w = None
        try:
            c.wait_line(lambda l: l == "CREATED 3")
            st = admin_status(s).get("prio")
            assert st == (3, 0, 0), "status before any worker: %r" % (st,)
            w = worker(s, "prio")
            assert c.wait(20) == 0, c.output()
            assert jobs_run(w, 3) == ["high", "normal", "low"], w.output()
            done = [l[5:] for l in c.lines if l.startswith("DONE ")]
            assert done == ["hgih", "lamron", "wol"], c.output()
            assert value(c.lines, "RUN") == "true GEARMAN_SUCCESS", c.output()
        finally:
            c.kill()
            if w:
                w.kill()


@test
def test_php_background_jobs_at_each_priority_then_jobStatus_until_done():
    need_php()
    with Server() as s:
        c = client_proc(s, "background", "bg")
        w = None
        try:
            c.wait_line(lambda l: l == "SUBMITTED")
            for p in ("normal", "high", "low"):
                h = value(c.lines, "HANDLE " + p)
                assert h and h.startswith("GEARMAN_SUCCESS H:"), c.output()
                assert value(c.lines, "QUEUED " + p) == "1 0 0 0", c.output()
            assert admin_status(s).get("bg") == (3, 0, 0), admin_status(s)
            # the worker pauses 300 ms after its status 1/2 so polling sees it
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
def test_php_100_tasks_runTasks_complete_callback_collects_every_result():
    need_php()
    with Server() as s:
        ws = [worker(s, "par") for _ in range(2)]
        try:
            wait_workers(s, "par", 2)
            lines, out = client(s, "parallel", "par", "100")
            assert value(lines, "ADDED") == "100", out
            assert value(lines, "RUN") == "true GEARMAN_SUCCESS", out
            assert value(lines, "CALLS") == "100", out
            assert value(lines, "DISTINCT") == "100", out
            assert value(lines, "GOOD") == "100", out
            served = total_matching(ws, lambda l: l.startswith("JOB "), 100)
            assert served == 100, "workers served %d jobs" % served
            wait_status(s, "par", (0, 0, 2))
        finally:
            for w in ws:
                w.kill()


@test
def test_php_task_callbacks_see_created_status_data_then_complete():
    need_php()
    with Server() as s:
        w = worker(s, "cb")
        try:
            wait_workers(s, "cb")
            lines, out = client(s, "callbacks", "cb", "hello")
            assert [l.split(" ")[0] for l in lines] == \
                ["CREATED", "STATUS", "DATA", "COMPLETE", "RUN"], out
            assert value(lines, "CREATED").startswith("H:"), out
            assert value(lines, "STATUS") == "1/2", out
            assert value(lines, "DATA") == "chunk", out
            assert value(lines, "COMPLETE") == "olleh", out
        finally:
            w.kill()


@test
def test_php_sendFail_gives_GEARMAN_WORK_FAIL_and_fail_callback():
    need_php()
    with Server() as s:
        w = worker(s, "f")
        try:
            wait_workers(s, "f")
            lines, out = client(s, "do", "f", "fail")
            assert value(lines, "RC") == "GEARMAN_WORK_FAIL", out
            lines, out = client(s, "callbacks", "f", "fail")
            assert [l.split(" ")[0] for l in lines] == ["CREATED", "FAIL", "RUN"], out
            wait_status(s, "f", (0, 0, 1))
        finally:
            w.kill()


@test
def test_php_sendException_reaches_exception_callback_and_doNormal():
    # GearmanClient asks for exceptions (OPTION_REQ exceptions) by itself
    need_php()
    with Server() as s:
        w = worker(s, "ex")
        try:
            wait_workers(s, "ex")
            lines, out = client(s, "callbacks", "ex", "exception", timeout=15)
            assert [l.split(" ")[0] for l in lines] == ["CREATED", "EXCEPTION", "RUN"], out
            assert value(lines, "EXCEPTION") == "boom", out
            lines, out = client(s, "do", "ex", "exception", timeout=15)
            assert value(lines, "RC") == "GEARMAN_WORK_EXCEPTION", out
            wait_status(s, "ex", (0, 0, 1))
        finally:
            w.kill()


@test
def test_php_ping_and_jobStatusByUniqueKey_follow_a_background_job():
    need_php()
    with Server() as s:
        c = client_proc(s, "unique", "uk", "php-unique-1")
        w = None
        try:
            c.wait_line(lambda l: l == "SUBMITTED")
            assert value(c.lines, "PING") == "true", c.output()
            assert (value(c.lines, "HANDLE") or "").startswith("GEARMAN_SUCCESS H:"), c.output()
            assert value(c.lines, "BYUNIQUE") == "1 0", c.output()
            assert value(c.lines, "UNKNOWN") == "0 0", c.output()
            w = worker(s, "uk")
            assert c.wait(25) == 0, c.output()
            assert value(c.lines, "AFTER") == "0", c.output()
            assert jobs_run(w, 1) == ["by-unique"], w.output()
        finally:
            c.kill()
            if w:
                w.kill()


@test
def test_php_worker_with_two_functions_serves_both():
    need_php()
    with Server() as s:
        w = worker(s, "one,two")
        try:
            wait_workers(s, "one")
            wait_workers(s, "two")
            lines, out = client(s, "do", "one", "abc")
            assert value(lines, "RESULT") == "'chunkcba'", out
            lines, out = client(s, "do", "two", "xyz")
            assert value(lines, "RESULT") == "'chunkzyx'", out
            funcs = [l.split(" ")[1] for l in w.lines_matching(lambda l: l.startswith("JOB "), 2)]
            assert funcs == ["one", "two"], w.output()
        finally:
            w.kill()


@test
def test_php_server_list_with_a_server_refusing_connections_works_as_docs_ha_md_says():
    # docs/ha.md: php-gearman's addServers throws "Failed to set exception
    # option" when a listed server refuses connections, as a --ha standby
    # always does; GearmanClient::addServers($list, false) avoids it, and a
    # GearmanWorker whose addServers threw still serves every server, and
    # with setTimeout connects to a server that starts later.
    need_php()
    script = os.path.join(TMP, "list.php")
    later = gmtest.free_port()
    w = None
    with Server("--job-handle-prefix", "H:live") as s:
        servers = "127.0.0.1:%d,127.0.0.1:%d" % (later, s.port)
        r = subprocess.run(["php", script, "client-default", servers], capture_output=True, text=True,
                           timeout=30, env=ENV)
        assert "THROWN Failed to set exception option" in r.stdout, \
            "addServers with a refusing server no longer throws: update docs/ha.md's PHP section: %r %r" \
            % (r.stdout, r.stderr)
        r = subprocess.run(["php", script, "client", servers], capture_output=True, text=True, timeout=30,
                           env=ENV)
        handles = [line.split(" ")[1] for line in r.stdout.splitlines() if line.startswith("HANDLE ")]
        assert len(handles) == 3 and all(h.startswith("H:live:") for h in handles), (r.stdout, r.stderr)
        try:
            w = Proc(["php", script, "worker", servers, "4"], name="php list worker")
            w.wait_line(lambda l: l == "WORKER STARTED")
            assert any(l.startswith("THROWN Failed to set exception option") for l in w.lines), w.output()
            got = {l.split(" ")[2] for l in w.lines_matching(lambda l: l.startswith("JOB H:live:"), 3)}
            assert got == {"job-0", "job-1", "job-2"}, w.output()
            with Server("--job-handle-prefix", "H:later", port=later) as s2:
                with s2.conn() as c:
                    gmtest.submit(c, "SUBMIT_JOB_BG", "listed", "", "job-later")
                w.wait_line(lambda l: l.startswith("JOB H:later:") and l.endswith(" job-later"), timeout=15)
                assert w.wait(15) == 0, w.output()
        finally:
            if w:
                w.kill()


if __name__ == "__main__":
    try:
        gmtest.main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
