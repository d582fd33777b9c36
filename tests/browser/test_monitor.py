#!/usr/bin/env python3
"""The web monitor page (plugins/protocol/http/monitor.html) in a real browser.

One gearmand with the HTTP front-end (-r http) is started on free ports and
given known state through the binary protocol:

  img.resize    2 high, 3 normal, 1 low queued; workers w-resize and w-multi
  report.build  1 normal job running on worker w-report, 1 low queued;
                workers w-report and w-multi; before that 2 jobs completed
                and 1 failed on a worker that then left
  email.send    55 normal queued, no worker  (so the jobs view has 2 pages)
  thumb         1 high, 3 low queued, no worker, maxqueue 100
  audit.log     no jobs; worker w-multi
  <img src=...> 2 normal queued, no worker: a name that would run script if
                the page put data into the DOM as HTML
  dead.fn       a policy (retries=0); 3 jobs failed on a worker that then
                left: 3 dead letters; then 3 normal queued, no worker

and, late in the run, one background job each (submitted over HTTP) for
constructor, __proto__, toString, hasOwnProperty and valueOf: names that a
page keeping rows in a plain object would trip on.

Then tests/browser/monitor.spec.js drives the page in headless Chromium with
playwright-core (installed once with npm into the build tree, under
tests/browser/node_modules, and reused) and records what the page shows after
each action; this script decides whether that is right, one TAP line per
behaviour, and checks the server's side of the cancel through /api/jobs and
the admin `show jobs` command, and of the Dead tab's Retry and Discard and
the functions' Pause and Resume through /api/dead, /api/jobs/HANDLE and
/api/policies.  A full-page screenshot is saved as
tests/browser/monitor.png in the build tree (monitor-workers.png and
monitor-jobs.png beside it).

Chromium (Debian's chromium package, or $CHROMIUM), Node.js and npm (or an
already prepared node_modules) are required: without them the test fails
and says what is missing.
"""

import json
import re
import os
import struct
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gmtest  # noqa: E402
from gmtest import Server, fail, submit, test  # noqa: E402
from browser_lib import (NODE_DIR, OUT_DIR, ensure_playwright, find_chromium, find_node, run_spec,  # noqa: E402
                         spec_step)

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = os.path.join(HERE, "monitor.spec.js")
SCREENSHOT = os.path.join(OUT_DIR, "monitor.png")

XSS_FN = '<img src=x onerror="window.__xss=1">'
EXPECT = {
    # name: (high, normal, low, running, workers)
    "img.resize": (2, 3, 1, 0, 2),
    "report.build": (0, 0, 1, 1, 2),
    "email.send": (0, 55, 0, 0, 0),
    "thumb": (1, 0, 3, 0, 0),
    "audit.log": (0, 0, 0, 0, 1),
    XSS_FN: (0, 2, 0, 0, 0),
    "dead.fn": (0, 3, 0, 0, 0),
}
WORKERS = {  # client id: functions
    "w-resize": ["img.resize"],
    "w-multi": ["img.resize", "report.build", "audit.log"],
    "w-report": ["report.build"],
}
FINISHED = {"report.build": (2, 1), "dead.fn": (0, 3)}  # completed, failed
DEAD_FN = "dead.fn"
LATE_FN = "late.fn"
# names of Object.prototype's properties: submitted over HTTP by the page's run
PROTO_FNS = ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf"]

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# What the run left for the tests that follow: server, conns, jobs, result.
R = {}


def http(method, path, data=None, headers=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (R["http_port"], path), data=data,
                                 method=method, headers=headers or {})
    try:
        with _no_proxy.open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def api(path):
    status, _, body = http("GET", path)
    assert status == 200, "GET %s: %s %r" % (path, status, body[:200])
    return json.loads(body)


# ----------------------------------------------------------------------
# the server's state

def assigned(w):
    """The next packet that is not a NOOP: a worker's JOB_ASSIGN."""
    while True:
        p = w.recv_packet()
        if p.name != "NOOP":
            assert p.name == "JOB_ASSIGN", "expected JOB_ASSIGN, got %r" % p
            return p.fields(3)[0].decode()


def worker(s, client_id, functions):
    w = s.conn()
    w.send_packet("SET_CLIENT_ID", client_id)
    for f in functions:
        w.send_packet("CAN_DO", f)
    w.send_packet("ECHO_REQ", "sync")  # answered after the packets before it
    w.expect("ECHO_RES")
    return w


def make_state(s):
    c = s.conn()
    R["conns"] = [c]
    # dead letters: jobs of a function with a policy that failed their only attempt
    assert c.admin("policy %s retries=0" % DEAD_FN) == b"OK\r\n"
    R["dead"] = []
    with s.conn() as w:
        w.send_packet("CAN_DO", DEAD_FN)
        for i in range(3):
            R["dead"].append(submit(c, "SUBMIT_JOB_BG", DEAD_FN, "dead-%d" % i))
            w.send_packet("GRAB_JOB")
            assert assigned(w) == R["dead"][-1]
            w.send_packet("WORK_FAIL", R["dead"][-1])
        w.send_packet("ECHO_REQ", "sync")
        while w.recv_packet().name != "ECHO_RES":
            pass
    # jobs that finished: completed and failed counts, then the worker leaves
    with s.conn() as w:
        w.send_packet("CAN_DO", "report.build")
        for i, how in enumerate(["WORK_COMPLETE", "WORK_COMPLETE", "WORK_FAIL"]):
            submit(c, "SUBMIT_JOB_BG", "report.build", "report-done-%d" % i)
            w.send_packet("GRAB_JOB")
            h = assigned(w)
            w.send_packet(how, h, "done") if how == "WORK_COMPLETE" else w.send_packet(how, h)
        w.send_packet("ECHO_REQ", "sync")
        while w.recv_packet().name != "ECHO_RES":
            pass
    gmtest.wait_until(lambda: api("/api/status")["totals"]["workers"] == 0 and
                      api("/api/status")["totals"]["jobs"] == 0, what="the finished jobs and their worker to go")
    jobs = R["jobs"] = {}  # handle: function
    add = lambda ptype, fn, u: jobs.__setitem__(submit(c, ptype, fn, u), fn)  # noqa: E731
    # report.build: a normal job the worker takes, a low one that waits
    add("SUBMIT_JOB_BG", "report.build", "report-run")
    add("SUBMIT_JOB_LOW_BG", "report.build", "report-wait")
    for i in range(2):
        add("SUBMIT_JOB_HIGH_BG", "img.resize", "resize-h%d" % i)
    for i in range(3):
        add("SUBMIT_JOB_BG", "img.resize", "resize-n%d" % i)
    add("SUBMIT_JOB_LOW_BG", "img.resize", "resize-l0")
    for i in range(55):
        add("SUBMIT_JOB_BG", "email.send", "mail-%02d" % i)
    add("SUBMIT_JOB_HIGH_BG", "thumb", "thumb-h0")
    for i in range(3):
        add("SUBMIT_JOB_LOW_BG", "thumb", "thumb-l%d" % i)
    for i in range(2):
        add("SUBMIT_JOB_BG", XSS_FN, "xss-%d" % i)
    for i in range(3):
        add("SUBMIT_JOB_BG", DEAD_FN, "dead-q%d" % i)
    assert c.admin("maxqueue thumb 100") == b"OK\r\n"

    R["workers"] = {}
    for cid, fns in WORKERS.items():
        w = worker(s, cid, fns)
        R["conns"].append(w)
        R["workers"][cid] = w
    wr = R["workers"]["w-report"]
    wr.send_packet("GRAB_JOB")
    R["running"] = assigned(wr)
    assert jobs[R["running"]] == "report.build"
    # the handles the jobs view should list, in its (handle) order
    R["all_handles"] = [j["handle"] for j in api("/api/jobs?limit=1000")["jobs"]]
    assert sorted(R["all_handles"]) == sorted(jobs), "the server lists other jobs than were submitted"
    thumbs = [j for j in api("/api/jobs?function=thumb&limit=100")["jobs"]]
    R["cancel"] = thumbs[-1]["handle"]  # a low one


def run_browser():
    """Starts the server, makes the state, runs monitor.spec.js once;
    every test below reads R["result"]."""
    if "result" in R:
        return R["result"]
    if "error" in R:
        fail(R["error"])
    try:
        chromium = find_chromium()
        node = find_node()
        ensure_playwright()
        R["http_port"] = gmtest.free_port()
        s = R["server"] = Server("-r", "http", "--http-port", str(R["http_port"]))
        s.start()
        make_state(s)
        os.makedirs(OUT_DIR, exist_ok=True)
        if os.path.exists(SCREENSHOT):
            os.unlink(SCREENSHOT)
        plan = {"cancel_handle": R["cancel"], "cancel_function": "thumb", "running_handle": R["running"],
                "link_function": "img.resize", "late_function": LATE_FN, "proto_functions": PROTO_FNS,
                "retry_handle": R["dead"][0], "discard_handle": R["dead"][1], "dead_function": DEAD_FN}
        env = dict(os.environ, GM_HTTP="http://127.0.0.1:%d" % R["http_port"], GM_PLAN=json.dumps(plan),
                   GM_OUT_DIR=OUT_DIR, PLAYWRIGHT_DIR=NODE_DIR, CHROMIUM=chromium)
        res = run_spec(node, SPEC, env)
        R["spec_seconds"] = res["seconds"]
        R["result"] = res
        return res
    except Exception as e:  # noqa: BLE001 - every later test reports it
        R["error"] = "the browser run did not complete: %s: %s" % (type(e).__name__, e)
        raise


def step(name):
    return spec_step(run_browser(), SPEC, name)


def fn_rows():
    return {r["name"]: r for r in step("functions")}


# ----------------------------------------------------------------------
# tests


@test
def test_browser_prerequisites():
    find_chromium()
    find_node()
    ensure_playwright()


@test
def test_browser_run_completes():
    """Server up with the state above; monitor.spec.js ran every step."""
    res = run_browser()
    assert res["steps"], res


@test
def test_page_is_self_contained_and_escapes_data():
    """The page the server sends: HTML, no external resource, no innerHTML."""
    run_browser()
    status, headers, body = http("GET", "/")
    assert status == 200, status
    assert headers.get("Content-Type", "").startswith("text/html"), headers
    with open(os.path.join(gmtest.TOP_SRCDIR, "plugins", "protocol", "http", "monitor.html"), "rb") as f:
        assert body == f.read(), "the server does not serve plugins/protocol/http/monitor.html (rebuild?)"
    assert len(body) < 48 * 1024, "the page is %d bytes" % len(body)
    page = body.decode()
    for bad in ("http://", "https://", "url(", "@import", "<script src", "innerHTML", "outerHTML",
                "insertAdjacentHTML", "document.write", "eval("):
        assert bad not in page, "the page contains %r" % bad
    # links: inline data, in-page anchors, or this server's own relative paths
    for ref in re.findall(r'(?:href|src)\s*=\s*"([^"]*)"', page):
        assert re.match(r"data:|#|(api|metrics|health)\b", ref), "the page refers to %r" % ref[:80]
    assert run_browser()["foreign_requests"] == [], run_browser()["foreign_requests"]


@test
def test_page_loads_with_server_header_and_totals():
    d = step("load")
    st = api("/api/status")
    assert d["status"] == 200 and d["content_type"].startswith("text/html"), d
    assert d["version"] == "v" + st["server"]["version"], d["version"]
    assert d["pid"] == str(R["server"].proc.pid), (d["pid"], R["server"].proc.pid)
    assert d["threads"] == str(st["server"]["io_threads"]), d["threads"]
    assert d["queue"].startswith(st["server"]["queue"]["backend"]), d["queue"]
    assert d["health"] == "healthy", d["health"]
    assert int(d["connections"]) >= 4, d["connections"]  # the client, three workers (and the browser)
    assert d["uptime"].endswith("s"), d["uptime"]
    queued = sum(h + n + lo for h, n, lo, _, _ in EXPECT.values())
    running = sum(e[3] for e in EXPECT.values())
    assert d["total_jobs"] == str(queued + running), d
    assert d["total_queued"] == str(queued), d
    assert d["total_running"] == str(running), d
    assert d["total_workers"] == str(len(WORKERS)), d
    assert d["total_functions"] == str(len(EXPECT)) and d["count_functions"] == str(len(EXPECT)), d
    assert d["count_workers"] == str(len(WORKERS)), d
    assert d["total_completed"] == str(sum(c for c, _ in FINISHED.values())), d
    assert d["total_failed"] == str(sum(f for _, f in FINISHED.values())), d
    assert d["total_submitted"] == str(queued + running + sum(map(sum, FINISHED.values()))), d
    assert d["refresh_period"] == "1", d  # ?refresh=1
    assert run_browser()["console"] == [], "errors in the browser console: %r" % run_browser()["console"]


@test
def test_functions_table_shows_queued_running_workers():
    rows = fn_rows()
    assert sorted(rows) == sorted(EXPECT), "functions shown: %r" % sorted(rows)
    for name, (hi, no, lo, run, wk) in EXPECT.items():
        r = rows[name]
        got = tuple(int(r[k]) for k in ("high", "normal", "low", "running", "workers", "queued", "total"))
        want = (hi, no, lo, run, wk, hi + no + lo, hi + no + lo + run)
        assert got == want, "%s: high normal low running workers queued total: %r, want %r" % (name, got, want)
        done, failed = FINISHED.get(name, (0, 0))
        assert (r["completed"], r["failed"]) == (str(done), str(failed)), (name, r["completed"], r["failed"])
        if hi + no + lo:
            assert r["oldest"].endswith("s") and r["oldest"] != "—", (name, r["oldest"])
        else:
            assert r["oldest"] == "—", (name, r["oldest"])
        # queued jobs that no worker can run are marked
        assert ("nowork" in r["_class"]) == bool(hi + no + lo and not wk), (name, r["_class"])
    assert rows["thumb"]["maxqueue"] == "100", rows["thumb"]["maxqueue"]
    assert rows["img.resize"]["maxqueue"] == "∞", rows["img.resize"]["maxqueue"]


@test
def test_function_names_are_shown_as_text_not_html():
    d = step("load")
    assert XSS_FN in fn_rows(), "the function %r is not shown as its name" % XSS_FN
    assert d["xss"] is None, "markup in a function name ran in the page"
    assert d["injected_elements"] == 0, "markup in a function name became elements"


@test
def test_sorting_by_clicking_headers():
    d = step("sort")
    total = lambda n: sum(EXPECT[n][:3])  # noqa: E731
    by_queued = sorted(EXPECT, key=total, reverse=True)
    assert d["queued_first"]["names"] == by_queued, d["queued_first"]
    assert d["queued_first"]["sort"] == ["queued:descending"], d["queued_first"]
    assert d["queued_second"]["names"] == by_queued[::-1], d["queued_second"]
    assert d["queued_second"]["sort"] == ["queued:ascending"], d["queued_second"]
    workers = [int(w) for _, w in d["workers_first"]["rows"]]
    assert workers == sorted(workers, reverse=True), d["workers_first"]  # numbers, not text
    by_name = sorted(EXPECT, key=str.lower)
    assert d["name_first"]["names"] == by_name and d["name_first"]["sort"] == ["name:ascending"], d["name_first"]
    assert d["name_second"]["names"] == by_name[::-1], d["name_second"]
    assert d["name_second"]["sort"] == ["name:descending"], d["name_second"]
    assert d["name_second_after_refresh"] == by_name[::-1], "a refresh lost the order: %r" % d
    assert d["name_second"]["names"] == by_name[::-1]


@test
def test_filter_hides_non_matching_rows():
    d = step("filter")
    assert d["resize"] == ["img.resize"], d["resize"]
    want = sorted((n for n in EXPECT if "re" in n.lower()), key=str.lower)
    assert sorted(d["re"], key=str.lower) == want, (d["re"], want)
    assert d["shown_label"] == "%d of %d functions" % (len(want), len(EXPECT)), d["shown_label"]
    assert d["re_after_refresh"] == d["re"], "a refresh lost the filter: %r" % d
    assert d["none"] == [] and "No function matches" in d["none_message"], d
    assert sorted(d["cleared"]) == sorted(EXPECT), d["cleared"]


@test
def test_workers_table_shows_client_ids_functions_and_jobs():
    d = step("workers")
    assert d["visible_panel"], "the workers tab did not open"
    rows = {r["client_id"]: r for r in d["all"]}
    assert sorted(rows) == sorted(WORKERS), "workers shown: %r" % sorted(rows)
    for cid, fns in WORKERS.items():
        r = rows[cid]
        assert sorted(r["functions"].split()) == sorted(fns), (cid, r["functions"])
        port = R["workers"][cid].sock.getsockname()[1]
        assert r["address"] == "127.0.0.1:%d" % port, (cid, r["address"], port)
        assert int(r["fd"]) >= 0, r
        if cid == "w-report":
            assert r["current_job"] == R["running"] and r["running"] == "1" and r["state"] == "working", r
        else:
            assert r["current_job"] == "—" and r["running"] == "0" and r["state"] != "working", r
    assert sorted(d["filtered"]) == ["w-multi", "w-report"], d["filtered"]
    assert d["sorted"] == sorted(WORKERS), d["sorted"]


@test
def test_jobs_view_pages_by_50():
    d = step("jobs_paging")
    allh = R["all_handles"]
    n = len(allh)
    assert n > 50
    p1, p2 = d["page1"], d["page2"]
    assert p1["total"] == str(n) and p1["handles"] == allh[:50], p1
    assert p1["info"] == "1–50" and p1["prev_disabled"] and not p1["next_disabled"], p1
    assert p2["total"] == str(n) and p2["handles"] == allh[50:], p2
    assert p2["info"] == "51–%d" % n and not p2["prev_disabled"] and p2["next_disabled"], p2
    assert d["back"]["handles"] == allh[:50], d["back"]
    first = p1["first"]
    j = api("/api/jobs?limit=1")["jobs"][0]
    assert (first["handle"], first["function"], first["unique"], first["priority"], first["retries"]) == (
        j["handle"], j["function"], j["unique"], j["priority"], str(j["retries"])), (first, j)
    assert first["state"].startswith(j["state"]), (first, j)


@test
def test_jobs_filter_by_state_and_function():
    d = step("jobs_filter")
    assert [r["handle"] for r in d["running"]] == [R["running"]], d["running"]
    assert d["running"][0]["state"].startswith("running") and d["running"][0]["function"] == "report.build"
    rows = d["function_rows"]
    thumbs = sorted(h for h, f in R["jobs"].items() if f == "thumb")
    assert sorted(r["handle"] for r in rows) == thumbs and d["function_total"] == "4", d
    assert sorted(r["priority"] for r in rows) == ["high", "low", "low", "low"], rows
    assert all(r["_cancel_handle"] == r["handle"] for r in rows), rows


@test
def test_cancel_asks_first_and_keeps_the_job_if_declined():
    d = step("cancel_dismissed")
    assert len(d["dialogs"]) == 1 and d["dialogs"][0]["type"] == "confirm", d["dialogs"]
    assert R["cancel"] in d["dialogs"][0]["message"], d["dialogs"]
    assert R["cancel"] in d["handles"] and d["total"] == "4", d


@test
def test_cancel_removes_the_job_in_page_and_server():
    d = step("cancel_accepted")
    h = R["cancel"]
    assert len(d["dialogs"]) == 1 and d["dialogs"][0]["answer"] == "accept", d["dialogs"]
    assert h not in d["handles"] and len(d["handles"]) == 3 and d["total"] == "3", d
    assert h in d["toast"], d["toast"]
    j = api("/api/jobs?function=thumb")
    assert j["total"] == 3 and h not in [x["handle"] for x in j["jobs"]], j
    with R["server"].conn() as a:
        shown = a.admin("show jobs").decode()
    assert h not in shown, "admin `show jobs` still lists %s:\n%s" % (h, shown)
    assert R["running"] in shown, shown
    st = {f["name"]: f for f in api("/api/status")["functions"]}
    assert st["thumb"]["queued"] == 3 and st["thumb"]["failed"] == 1, st["thumb"]  # a cancel counts as failed


@test
def test_cancel_of_a_running_job_is_offered_once():
    d = step("cancel_running")
    rows = [r for r in d["rows"] if r["handle"] == R["running"]]
    # the server may list it until its worker is done: then marked, no second cancel
    assert not rows or ("cancelled" in rows[0]["state"] and d["button"] == [True]), d
    st = {f["name"]: f for f in api("/api/status")["functions"]}
    assert st["report.build"]["failed"] == FINISHED["report.build"][1] + 1, st["report.build"]
    assert R["running"] not in [x["handle"] for x in api("/api/jobs?state=queued")["jobs"]]


@test
def test_function_name_opens_its_jobs():
    d = step("function_link")
    assert d["selected"] == "img.resize" and d["total"] == str(sum(EXPECT["img.resize"][:4])), d
    assert d["hash"] == "#jobs", d


@test
def test_page_refreshes_itself():
    d = step("auto_refresh")
    assert d["submit_status"] == 200, d
    assert LATE_FN not in d["before"] and LATE_FN in d["after"], d
    assert d["seen_ms"] < 4000, "the new function appeared after %d ms with ?refresh=1" % d["seen_ms"]
    queued = sum(sum(e[:4]) for e in EXPECT.values())
    assert d["total_jobs"] == str(queued - 1 + 1), d  # one cancelled, one new
    for k in ("rate_in", "rate_out"):
        float(d[k])
    assert all(n >= 2 for n in d["spark_points"]) and len(d["spark_points"]) == 5, d["spark_points"]
    assert d["last_update"].startswith("updated "), d["last_update"]


@test
def test_functions_named_like_object_properties_are_rows():
    """A function named constructor or __proto__ (one GET /constructor
    makes one) is a row like any other, and the page goes on refreshing."""
    d = step("prototype_names")
    assert d["statuses"] == [200] * len(PROTO_FNS), d["statuses"]
    for fn in PROTO_FNS:
        assert d["names"].count(fn) == 1, "%r is not one row: %r" % (fn, d["names"])
    assert d["still_shown"] and d["banner_hidden"], d
    assert sorted(d["names"]) == sorted(list(EXPECT) + [LATE_FN] + PROTO_FNS), d["names"]
    rows = {r["name"]: r for r in d["rows"]}
    for fn in PROTO_FNS:
        assert (rows[fn]["queued"], rows[fn]["workers"]) == ("1", "0") and "nowork" in rows[fn]["_class"], rows[fn]
    assert run_browser()["console"] == [], "errors in the browser console: %r" % run_browser()["console"]


@test
def test_dead_tab_lists_dead_letters_only_while_shown():
    d = step("dead_tab")
    assert d["dead_requests_before"] == 0, "GET /api/dead before the Dead tab was shown: %r" % d
    assert d["count"] == "3", d
    rows = d["rows"]
    assert [r["handle"] for r in rows] == R["dead"], rows
    for i, r in enumerate(rows):
        assert (r["function"], r["unique"], r["attempts"], r["reason"]) == (DEAD_FN, "dead-%d" % i, "1", "fail"), r
        assert r["died"] and r["_retry"] == r["_discard"] == r["handle"], r
    assert d["shown"] == "3 dead letters", d["shown"]


@test
def test_dead_letter_retry_sends_it_back_to_its_queue():
    d = step("dead_retry")
    h = R["dead"][0]
    assert h not in [r["handle"] for r in d["rows"]] and h in d["toast"], d
    assert h not in [x["handle"] for x in api("/api/dead")], "the server still has %s as a dead letter" % h
    j = api("/api/jobs/" + h)
    assert j["state"] == "queued" and j["attempts"] == 0 and j["function"] == DEAD_FN, j


@test
def test_dead_letter_discard_asks_and_removes_it():
    d = step("dead_discard")
    h = R["dead"][1]
    assert len(d["dialogs"]) == 1 and d["dialogs"][0]["type"] == "confirm" and h in d["dialogs"][0]["message"], d
    assert [r["handle"] for r in d["rows"]] == [R["dead"][2]], d["rows"]
    assert [x["handle"] for x in api("/api/dead")] == [R["dead"][2]]
    assert http("GET", "/api/jobs/" + h)[0] == 404
    assert d["count"] == "1", d


@test
def test_functions_show_policy_and_pause_resume():
    d = step("pause_function")
    assert d["policy_before"] == "retries 0" and d["button_before"] == "Pause", d
    assert d["policy_paused"].startswith("paused") and d["button_paused"] == "Resume", d
    assert d["server_paused"] is True and d["server_resumed"] is False, d
    assert d["policy_after"] == "retries 0" and d["button_after"] == "Pause", d
    assert d["others"] == ["—"], d["others"]  # functions without a policy


@test
def test_screenshot_saved_in_build_tree():
    step("screenshot")
    with open(SCREENSHOT, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG: %s" % SCREENSHOT
    w, h = struct.unpack(">II", head[16:24])
    assert w == 1440 and h >= 600, (w, h)
    assert os.path.getsize(SCREENSHOT) > 20000, os.path.getsize(SCREENSHOT)
    print("# screenshot: %s (%dx%d); browser run %.1fs" % (SCREENSHOT, w, h, R.get("spec_seconds", 0)), flush=True)


@test
def test_page_asks_only_for_its_api():
    """The page (and the browser for it) requests nothing but the page and
    the JSON API: a stray GET such as /favicon.ico would be a job here."""
    paths = run_browser()["paths"]
    allowed = {"GET /", "GET /api/status", "GET /api/workers", "GET /api/jobs", "POST /api/jobs/cancel",
               "GET /api/dead", "GET /api/policies"}
    actions = re.compile(r"POST /api/(dead/[^/]+/(retry|discard)|functions/[^/]+/(pause|resume))$")
    other = {p for p in paths if p not in allowed and not actions.match(p)}
    assert not other, "the page requested %r" % sorted(other)
    assert paths.get("POST /api/jobs/cancel") == 2, paths  # the queued job and the running one
    from urllib.parse import quote
    for h, what in ((R["dead"][0], "retry"), (R["dead"][1], "discard")):
        assert paths.get("POST /api/dead/%s/%s" % (quote(h, safe=""), what)) == 1, (h, what, paths)
    names = sorted(f["name"] for f in api("/api/status")["functions"])
    assert names == sorted(list(EXPECT) + [LATE_FN] + PROTO_FNS), "functions on the server after the run: %r" % names


@test
def test_server_exits_cleanly():
    run_browser()
    for c in R.get("conns", []):
        c.close()
    rc = R["server"].stop()
    assert rc == 0, "gearmand exited with %s; log:\n%s" % (rc, R["server"].log_text()[-3000:])


if __name__ == "__main__":
    try:
        gmtest.main()
    finally:
        s = R.get("server")
        if s and s.proc and s.proc.poll() is None:
            s.stop()
