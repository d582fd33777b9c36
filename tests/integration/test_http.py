#!/usr/bin/env python3
"""The HTTP front-end (-r http --http-port N): job submission of every kind,
keep-alive and pipelining, malformed requests, large bodies, the JSON views
(/api/status, /api/workers, /api/jobs, POST /api/jobs/cancel), the Host and
Origin rules (DNS rebinding, other sites' pages), /health, /metrics (read by
a small Prometheus text-format parser written here), UTF-8 in both, and the
monitor page.

gearmand 1.1.20 (reference section 6) is followed where it works: the
function is the path, X-Gearman-Unique / -Background / -Priority headers,
X-Gearman-Job-Handle and X-Gearman-Command in the answer, the default unique
"-" (identical bodies coalesce).  Its bugs are fixed: WORK_DATA chunks are
joined in the body before WORK_COMPLETE's data, the connection is kept alive
(HTTP/1.1), and the handle of a WORK_FAIL answer is whole.

Jobs are answered by raw workers (gmtest.Conn); HTTP is spoken over raw
sockets so that the bytes can be checked exactly.
"""

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gmtest  # noqa: E402
import services  # noqa: E402
from gmtest import Server, fail, free_port, test, wait_until, sync  # noqa: E402

PREFIX = "H:http"
DEBIAN_GEARMAND = "/usr/sbin/gearmand"


# ----------------------------------------------------------------------
# servers and workers

class HttpServer(Server):
    """A gearmand with the HTTP front-end on its own free port."""

    def __init__(self, *args, **kw):
        self.http_port = free_port()
        super().__init__("-r", "http", "--http-port", str(self.http_port), "--job-handle-prefix", PREFIX,
                         *args, **kw)

    def start(self, wait=10.0):
        super().start(wait)
        deadline = time.time() + wait
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.http_port), timeout=0.5).close()
                return self
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("the HTTP port %d does not accept connections" % self.http_port)
                time.sleep(0.05)

    def http(self, host="127.0.0.1", timeout=10.0):
        return HttpConn(host, self.http_port, timeout)


def worker(s, *functions, client_id=None):
    w = s.conn()
    if client_id:
        w.send_packet("SET_CLIENT_ID", client_id)
    for f in functions:
        w.send_packet("CAN_DO", f)
    sync(w)
    return w


def grab(w, uniq=False):
    """GRAB_JOB (or GRAB_JOB_UNIQ); returns (handle, function, [unique,]
    data) as str.../bytes, or None on NO_JOB."""
    w.send_packet("GRAB_JOB_UNIQ" if uniq else "GRAB_JOB")
    p = w.recv_packet()
    if p.name == "NO_JOB":
        return None
    if uniq:
        assert p.name == "JOB_ASSIGN_UNIQ", p
        h, fn, u, data = p.fields(4)
        return h.decode(), fn.decode(), u, data
    assert p.name == "JOB_ASSIGN", p
    h, fn, data = p.fields(3)
    return h.decode(), fn.decode(), data


def grab_wait(w, uniq=False, timeout=5.0):
    """Grabs until a job is there (the submission may still be on its way)."""
    deadline = time.time() + timeout
    while True:
        j = grab(w, uniq)
        if j:
            return j
        if time.time() > deadline:
            fail("no job arrived for the worker within %.1fs" % timeout)
        time.sleep(0.02)


def admin_status(s, fn):
    """The (total, running, workers) of the admin `status` line for fn."""
    with s.conn() as a:
        for line in a.admin("status").decode().splitlines():
            f = line.split("\t")
            if f[0] == fn:
                return tuple(int(x) for x in f[1:])
    return None


# ----------------------------------------------------------------------
# HTTP over a raw socket

class Response:
    def __init__(self, head, body):
        self.head = head
        self.body = body
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        parts = self.status_line.split(" ", 2)
        self.version = parts[0]
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        self.header_list = []
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            self.header_list.append((name.strip().lower(), value.strip()))
        self.headers = dict(self.header_list)

    def h(self, name):
        return self.headers.get(name.lower())

    def json(self):
        assert (self.h("content-type") or "").startswith("application/json"), self.h("content-type")
        return json.loads(self.body.decode())

    def __repr__(self):
        return "Response(%r, %r)" % (self.head[:400], self.body[:200])


class HttpConn(gmtest.Conn):
    """One HTTP connection, byte for byte (gmtest.Conn's buffering)."""

    def __init__(self, host, port, timeout=10.0):
        super().__init__(port, host=host, timeout=timeout)

    def request(self, method, path, headers=(), body=b"", version="HTTP/1.1", length=True):
        self.send(build(method, path, headers, body, version, length))

    def response(self, timeout=None, head_only=False):
        """Reads one response: the head (up to the blank line) and a body of
        Content-Length bytes."""
        head = self.read_until(b"\r\n\r\n", timeout)
        r = Response(head, b"")
        assert "content-length" in r.headers, "no Content-Length in %r" % head
        n = int(r.h("content-length"))
        if not head_only and n:
            r.body = self.recv_exact(n, timeout)
        return r

    def roundtrip(self, method, path, headers=(), body=b"", version="HTTP/1.1", timeout=None):
        self.request(method, path, headers, body, version)
        return self.response(timeout, head_only=(method == "HEAD"))


def build(method, path, headers=(), body=b"", version="HTTP/1.1", length=True, host="127.0.0.1"):
    """A request's bytes; an HTTP/1.1 request gets `Host: host` unless it
    names a Host itself or host is None."""
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s %s" % (method, path, version)]
    if host and version == "HTTP/1.1" and not any(n.lower() == "host" for n, _ in headers):
        lines.append("Host: %s" % host)
    lines += ["%s: %s" % hv for hv in headers]
    if length and (body or method in ("POST", "PUT")):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def get(s, path, headers=(), method="GET", body=b""):
    """One request on a fresh connection (Connection: close)."""
    with s.http() as c:
        r = c.roundtrip(method, path, list(headers) + [("Connection", "close")], body)
        assert c.closed(), "the server kept the connection open after Connection: close"
        return r


def get_json(s, path):
    r = get(s, path)
    assert r.status == 200, r
    return r.json()


def check_job_response(r, handle, command, body, version="HTTP/1.1", keep_alive=True):
    """A job answer: the status line, X-Gearman-* headers and the exact body."""
    assert r.status_line == "%s 200 OK" % version, r
    assert r.h("x-gearman-job-handle") == handle, "handle %r, want %r" % (r.h("x-gearman-job-handle"), handle)
    assert r.h("x-gearman-command") == command, "command %r, want %r" % (r.h("x-gearman-command"), command)
    assert r.h("content-length") == str(len(body)), r
    assert r.body == body, "body %r, want %r" % (r.body[:200], body[:200])
    assert r.h("connection") == ("keep-alive" if keep_alive else "close"), r


def raw_exchange(port, data, host="127.0.0.1", timeout=5.0):
    """Sends bytes on a fresh connection and reads until the server closes;
    returns what it sent back."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                chunk = s.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        else:
            fail("the server did not close the connection after %r; got %r" % (data[:100], out[:300]))
        return out
    finally:
        s.close()


# ----------------------------------------------------------------------
# Prometheus text format (0.0.4), strict enough to catch what promtool would

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_float(s):
    if s in ("+Inf", "Inf"):
        return float("inf")
    if s == "-Inf":
        return float("-inf")
    if s == "NaN":
        return float("nan")
    if not re.fullmatch(r"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)", s):
        raise ValueError("bad sample value %r" % s)
    return float(s)


def parse_labels(text, i, lineno):
    """Parses `{name="value",...}` from text[i] == '{'; returns (labels, next i)."""
    labels = {}
    i += 1
    while True:
        if text[i] == "}":
            return labels, i + 1
        m = LABEL_NAME.match(text, i)
        if not m:
            raise ValueError("line %d: bad label name at %r" % (lineno, text[i:]))
        name = m.group(0)
        i = m.end()
        if text[i:i + 2] != '="':
            raise ValueError("line %d: expected =\" after label %s" % (lineno, name))
        i += 2
        val = []
        while True:
            if i >= len(text):
                raise ValueError("line %d: unterminated label value" % lineno)
            ch = text[i]
            if ch == "\\":
                nxt = text[i + 1:i + 2]
                if nxt == "\\":
                    val.append("\\")
                elif nxt == '"':
                    val.append('"')
                elif nxt == "n":
                    val.append("\n")
                else:
                    raise ValueError("line %d: bad escape \\%s in label value" % (lineno, nxt))
                i += 2
            elif ch == '"':
                i += 1
                break
            elif ch == "\n":
                raise ValueError("line %d: raw newline in label value" % lineno)
            else:
                val.append(ch)
                i += 1
        if name in labels:
            raise ValueError("line %d: label %s twice" % (lineno, name))
        labels[name] = "".join(val)
        if text[i] == ",":
            i += 1
        elif text[i] != "}":
            raise ValueError("line %d: expected , or } after a label value" % lineno)


def parse_prometheus(text):
    """Parses the text exposition format; returns (types, helps, samples)
    where samples maps (name, frozenset(labels.items())) -> float.  Raises
    ValueError on anything promtool would reject, and on what these
    metrics promise: every sample's family has a TYPE (and a HELP) given
    before its samples, counters end in _total."""
    if text and not text.endswith("\n"):
        raise ValueError("the exposition does not end with a newline")
    types, helps, samples, seen_sample = {}, {}, {}, set()
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not METRIC_NAME.fullmatch(name):
                    raise ValueError("line %d: bad metric name %r" % (lineno, name))
                if parts[1] == "TYPE":
                    t = parts[3] if len(parts) > 3 else ""
                    if t not in TYPES:
                        raise ValueError("line %d: bad type %r" % (lineno, t))
                    if name in types:
                        raise ValueError("line %d: second TYPE for %s" % (lineno, name))
                    if name in seen_sample:
                        raise ValueError("line %d: TYPE for %s after its samples" % (lineno, name))
                    types[name] = t
                else:
                    if name in helps:
                        raise ValueError("line %d: second HELP for %s" % (lineno, name))
                    helps[name] = parts[3] if len(parts) > 3 else ""
            continue
        m = METRIC_NAME.match(line)
        if not m:
            raise ValueError("line %d: bad metric name in %r" % (lineno, line))
        name = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = parse_labels(line, i, lineno)
        if i >= len(line) or line[i] != " ":
            raise ValueError("line %d: expected a space before the value in %r" % (lineno, line))
        rest = line[i + 1:].split(" ")
        if len(rest) not in (1, 2):
            raise ValueError("line %d: trailing garbage in %r" % (lineno, line))
        value = parse_float(rest[0])
        if len(rest) == 2 and not re.fullmatch(r"-?\d+", rest[1]):
            raise ValueError("line %d: bad timestamp %r" % (lineno, rest[1]))
        family = name
        if name not in types:
            for suffix in ("_bucket", "_sum", "_count"):
                base = name[:-len(suffix)]
                if name.endswith(suffix) and types.get(base) in ("histogram", "summary"):
                    family = base
        if family not in types:
            raise ValueError("line %d: sample %s has no TYPE before it" % (lineno, name))
        if family not in helps:
            raise ValueError("line %d: sample %s has no HELP" % (lineno, name))
        if types[family] == "counter" and not name.endswith("_total"):
            raise ValueError("line %d: counter %s does not end in _total" % (lineno, name))
        if types[family] == "counter" and value < 0:
            raise ValueError("line %d: negative counter %s" % (lineno, name))
        key = (name, frozenset(labels.items()))
        if key in samples:
            raise ValueError("line %d: duplicate series %s%r" % (lineno, name, labels))
        samples[key] = value
        seen_sample.add(family)
    return types, helps, samples


class Metrics:
    def __init__(self, text):
        self.text = text
        self.types, self.helps, self.samples = parse_prometheus(text)

    def get(self, name, **labels):
        key = (name, frozenset(labels.items()))
        if key not in self.samples:
            fail("no sample %s%r in:\n%s" % (name, labels, self.text))
        return self.samples[key]

    def has(self, name, **labels):
        return (name, frozenset(labels.items())) in self.samples

    def series(self, name):
        return {k[1]: v for k, v in self.samples.items() if k[0] == name}


def metrics(s):
    r = get(s, "/metrics")
    assert r.status == 200, r
    assert r.h("content-type").startswith("text/plain; version=0.0.4"), r.h("content-type")
    return Metrics(r.body.decode("utf-8"))


@test
def test_prometheus_parser_rejects_what_it_must():
    # the parser itself: it must be able to fail
    good = ('# HELP a_total A.\n# TYPE a_total counter\na_total{f="x\\"y\\\\z\\n"} 3\n'
            '# HELP g G.\n# TYPE g gauge\ng 1.5e3\ng{a="b"} NaN\n')
    _, _, samples = parse_prometheus(good)
    assert samples[("a_total", frozenset({("f", 'x"y\\z\n')}))] == 3
    assert samples[("g", frozenset())] == 1500.0
    bad = [
        "x 1\n",                                              # no TYPE
        "# TYPE c counter\n# HELP c C.\nc 1\n",               # counter not ending in _total
        '# HELP g G.\n# TYPE g gauge\ng{a="b} 1\n',           # unterminated label
        '# HELP g G.\n# TYPE g gauge\ng{a="\\q"} 1\n',        # bad escape
        "# HELP g G.\n# TYPE g gauge\ng one\n",               # bad value
        "# HELP g G.\n# TYPE g gauge\ng 1\ng 2\n",            # duplicate series
        "# HELP g G.\n# TYPE g gauge\ng 1",                   # no final newline
        "# HELP g G.\n# TYPE g nonsense\ng 1\n",              # bad type
        "# HELP 1g G.\n# TYPE 1g gauge\n",                    # bad name
        "# HELP g G.\ng 1\n# TYPE g gauge\n",                 # TYPE after samples
    ]
    for b in bad:
        try:
            parse_prometheus(b)
        except ValueError:
            continue
        fail("the parser accepted %r" % b)


# ----------------------------------------------------------------------
# job submission

@test
def test_foreground_get_post_put_answered_by_worker():
    with HttpServer() as s:
        w = worker(s, "echo")
        c = s.http()
        for i, method in enumerate(("GET", "POST", "PUT")):
            body = b"" if method == "GET" else ("payload of %s\0with a NUL" % method).encode()
            c.request(method, "/echo", [("X-Gearman-Unique", "u-%s" % method)], body)
            h, fn, u, data = grab_wait(w, uniq=True)
            assert fn == "echo" and u == ("u-%s" % method).encode() and data == body, (fn, u, data)
            assert h == "%s:%d" % (PREFIX, i + 1), h
            c.nothing(0.1)                      # no answer before the worker's
            result = b"result\0of " + method.encode() + b"\r\n\r\n"
            w.send_packet("WORK_COMPLETE", h, result)
            r = c.response()
            check_job_response(r, h, "WORK_COMPLETE", result)
            assert r.h("content-type") == "application/octet-stream", r
        # the exact bytes of one answer
        c.request("POST", "/echo", [("X-Gearman-Unique", "exact")], b"in")
        h, _, _ = grab_wait(w)
        w.send_packet("WORK_COMPLETE", h, b"OUT")
        head = c.read_until(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK", head
        assert b"X-Gearman-Job-Handle: " + h.encode() in lines and b"X-Gearman-Command: WORK_COMPLETE" in lines, head
        assert b"Content-Length: 3" in lines and b"Connection: keep-alive" in lines, head
        assert c.recv_exact(3) == b"OUT"
        c.nothing(0.1)
        c.close()
        w.close()


@test
def test_function_name_is_the_path_without_leading_slashes():
    with HttpServer() as s:
        w = worker(s, "dir/fn")
        with s.http() as c:
            c.request("POST", "//dir/fn", [("X-Gearman-Unique", "p")], b"x")
            h, fn, data = grab_wait(w)
            assert fn == "dir/fn" and data == b"x", (fn, data)
            w.send_packet("WORK_COMPLETE", h, b"y")
            check_job_response(c.response(), h, "WORK_COMPLETE", b"y")
        w.close()


@test
def test_a_path_that_cannot_name_a_function_gets_400_and_makes_nothing():
    # the path is the function name: a control character or more than 512
    # bytes is refused as on the binary protocol (issue 12.7)
    control = b"INVALID_ARGUMENT: Function name holds a control character\n"
    too_long = b"ARGUMENT_TOO_LARGE: Function name is longer than 512 bytes\n"
    with HttpServer() as s:
        w = worker(s, "ok")
        with s.http() as c:
            for path, bg, body in (("/a\tb", True, control), ("/a\x01b", False, control),
                                   ("/del\x7f", True, control), ("/" + "n" * 513, False, too_long)):
                hdrs = [("X-Gearman-Background", "true")] if bg else []
                r = c.roundtrip("POST", path, hdrs, b"x")
                assert r.status_line == "HTTP/1.1 400 Bad Request", (path[:20], r)
                assert r.h("x-gearman-error") == body.split(b":")[0].decode(), r
                assert r.body == body and r.h("connection") == "keep-alive", r
            # the connection goes on; 512 bytes is a function name
            r = c.roundtrip("POST", "/" + "n" * 512, [("X-Gearman-Background", "true")], b"x")
            assert r.status == 200 and r.h("x-gearman-command") == "JOB_CREATED", r
        with s.conn() as a:
            assert sorted(a.admin("status").split(b"\n")) == \
                sorted([b"ok\t0\t0\t1", b"n" * 512 + b"\t1\t0\t0", b".", b""])
        w.close()


@test
def test_work_data_chunks_are_joined_before_work_complete_data():
    with HttpServer() as s:
        w = worker(s, "chunky")
        with s.http() as c:
            c.request("POST", "/chunky", [("X-Gearman-Unique", "c1")], b"go")
            h, _, _ = grab_wait(w)
            w.send_packet("WORK_DATA", h, b"first;")
            w.send_packet("WORK_STATUS", h, "1", "3")
            w.send_packet("WORK_DATA", h, b"sec\0ond;")
            w.send_packet("WORK_WARNING", h, b"careful")
            w.send_packet("WORK_DATA", h, b"")
            w.send_packet("WORK_DATA", h, b"third;")
            sync(w)
            c.nothing(0.2)                      # nothing is answered before WORK_COMPLETE
            w.send_packet("WORK_COMPLETE", h, b"last")
            check_job_response(c.response(), h, "WORK_COMPLETE", b"first;sec\0ond;third;last")
            # a second job on the same connection starts with an empty body
            c.request("POST", "/chunky", [("X-Gearman-Unique", "c2")], b"go")
            h2, _, _ = grab_wait(w)
            w.send_packet("WORK_DATA", h2, b"only")
            w.send_packet("WORK_COMPLETE", h2, b"")
            check_job_response(c.response(), h2, "WORK_COMPLETE", b"only")
        w.close()


@test
def test_background_submission_answers_job_created_and_queues_the_job():
    with HttpServer() as s:
        with s.http() as c:
            r = c.roundtrip("POST", "/bg", [("X-Gearman-Background", "true"), ("X-Gearman-Unique", "b1")],
                            b"bg data")
            h = PREFIX + ":1"
            check_job_response(r, h, "JOB_CREATED", b"")
            assert admin_status(s, "bg") == (1, 0, 0), admin_status(s, "bg")
            jobs = get_json(s, "/api/jobs")["jobs"]
            assert len(jobs) == 1 and jobs[0]["handle"] == h and jobs[0]["background"] is True, jobs
            assert jobs[0]["state"] == "queued" and jobs[0]["unique"] == "b1", jobs
            # the connection stays usable; a worker gets the job later
            r = c.roundtrip("GET", "/health")
            assert r.status == 200, r
        w = worker(s, "bg")
        j = grab(w, uniq=True)
        assert j == (h, "bg", b"b1", b"bg data"), j
        w.send_packet("WORK_COMPLETE", h, b"done")
        sync(w)
        assert admin_status(s, "bg") == (0, 0, 1)
        w.close()


@test
def test_background_header_other_than_true_runs_in_the_foreground():
    with HttpServer() as s:
        w = worker(s, "fgbg")
        with s.http() as c:
            c.request("POST", "/fgbg", [("X-Gearman-Background", "false"), ("X-Gearman-Unique", "f")], b"x")
            h, _, _ = grab_wait(w)
            c.nothing(0.1)
            w.send_packet("WORK_COMPLETE", h, b"fg")
            check_job_response(c.response(), h, "WORK_COMPLETE", b"fg")
        w.close()


@test
def test_priority_header_orders_jobs_for_the_worker():
    with HttpServer() as s:
        with s.http() as c:
            for prio, data in (("low", "L1"), (None, "N1"), ("high", "H1"), ("low", "L2"), ("high", "H2"),
                               (None, "N2"), ("bogus", "N3")):
                hdrs = [("X-Gearman-Background", "true"), ("X-Gearman-Unique", data)]
                if prio:
                    hdrs.append(("X-Gearman-Priority", prio))
                r = c.roundtrip("POST", "/prio", hdrs, data)
                assert r.status == 200 and r.h("x-gearman-command") == "JOB_CREATED", r
        jobs = get_json(s, "/api/jobs?function=prio")["jobs"]
        by_unique = {j["unique"]: j["priority"] for j in jobs}
        assert by_unique == {"L1": "low", "L2": "low", "N1": "normal", "N2": "normal", "N3": "normal",
                             "H1": "high", "H2": "high"}, by_unique
        m = metrics(s)
        assert m.get("gearman_jobs_queued", function="prio", priority="high") == 2
        assert m.get("gearman_jobs_queued", function="prio", priority="normal") == 3
        assert m.get("gearman_jobs_queued", function="prio", priority="low") == 2
        w = worker(s, "prio")
        order = []
        for _ in range(7):
            h, _, data = grab(w)
            order.append(data.decode())
            w.send_packet("WORK_COMPLETE", h, b"")
        assert order == ["H1", "H2", "N1", "N2", "N3", "L1", "L2"], order
        # foreground jobs too: a high one overtakes a queued low one
        c1, c2 = s.http(), s.http()
        c1.request("POST", "/prio", [("X-Gearman-Priority", "low"), ("X-Gearman-Unique", "fl")], b"fg-low")
        wait_until(lambda: admin_status(s, "prio")[0] == 1, what="the low job")
        c2.request("POST", "/prio", [("X-Gearman-Priority", "high"), ("X-Gearman-Unique", "fh")], b"fg-high")
        wait_until(lambda: admin_status(s, "prio")[0] == 2, what="the high job")
        h1, _, d1 = grab(w)
        h2, _, d2 = grab(w)
        assert (d1, d2) == (b"fg-high", b"fg-low"), (d1, d2)
        w.send_packet("WORK_COMPLETE", h1, b"hi")
        w.send_packet("WORK_COMPLETE", h2, b"lo")
        check_job_response(c2.response(), h1, "WORK_COMPLETE", b"hi")
        check_job_response(c1.response(), h2, "WORK_COMPLETE", b"lo")
        c1.close()
        c2.close()
        w.close()


@test
def test_unique_header_coalesces_requests_onto_one_job():
    with HttpServer() as s:
        w = worker(s, "co")
        c1, c2, c3 = s.http(), s.http(), s.http()
        c1.request("POST", "/co", [("X-Gearman-Unique", "same-key")], b"first body")
        wait_until(lambda: admin_status(s, "co")[0] == 1, what="the first job")
        c2.request("POST", "/co", [("X-Gearman-Unique", "same-key")], b"second body")
        c3.request("POST", "/co", [("X-Gearman-Unique", "other-key")], b"first body")

        def settled():
            jobs = get_json(s, "/api/jobs?function=co")["jobs"]
            return jobs if len(jobs) == 2 and sum(j["clients"] for j in jobs) == 3 else None
        jobs = wait_until(settled, what="two jobs with three clients")
        same = [j for j in jobs if j["unique"] == "same-key"]
        assert len(same) == 1 and same[0]["clients"] == 2, jobs
        got = {}
        for _ in range(2):
            h, _, u, data = grab(w, uniq=True)
            got[u] = (h, data)
        assert grab(w) is None
        assert got[b"same-key"][1] == b"first body", got      # the later data is ignored
        w.send_packet("WORK_COMPLETE", got[b"same-key"][0], b"shared")
        w.send_packet("WORK_COMPLETE", got[b"other-key"][0], b"own")
        check_job_response(c1.response(), got[b"same-key"][0], "WORK_COMPLETE", b"shared")
        check_job_response(c2.response(), got[b"same-key"][0], "WORK_COMPLETE", b"shared")
        check_job_response(c3.response(), got[b"other-key"][0], "WORK_COMPLETE", b"own")
        # an empty X-Gearman-Unique means no coalescing at all
        c1.request("POST", "/co", [("X-Gearman-Unique", "")], b"same")
        wait_until(lambda: admin_status(s, "co")[0] == 1, what="the first empty-unique job")
        c2.request("POST", "/co", [("X-Gearman-Unique", "")], b"same")
        wait_until(lambda: admin_status(s, "co")[0] == 2, what="a second job for an empty unique")
        for _ in range(2):
            h, _, u, data = grab(w, uniq=True)
            assert (u, data) == (b"", b"same"), (u, data)
            w.send_packet("WORK_COMPLETE", h, h)
        r1, r2 = c1.response(), c2.response()
        assert r1.h("x-gearman-job-handle") != r2.h("x-gearman-job-handle"), (r1, r2)
        for r in (r1, r2):
            check_job_response(r, r.h("x-gearman-job-handle"), "WORK_COMPLETE", r.h("x-gearman-job-handle").encode())
        for c in (c1, c2, c3):
            c.close()
        w.close()


def default_unique_scenario(s, ours=True):
    """Without X-Gearman-Unique: identical bodies coalesce (unique "-"),
    another body is another job.  Returns (responses, jobs the worker saw)."""
    w = worker(s, "dash")
    conns = [s.http() for _ in range(3)]
    conns[0].request("POST", "/dash", [], b"same")
    wait_until(lambda: admin_status(s, "dash")[0] == 1, what="the first job")
    conns[1].request("POST", "/dash", [], b"same")
    conns[2].request("POST", "/dash", [], b"different")
    wait_until(lambda: admin_status(s, "dash")[0] == 2, what="the second job")
    if ours:
        wait_until(lambda: sum(j["clients"] for j in get_json(s, "/api/jobs?function=dash")["jobs"]) == 3,
                   what="three clients on the jobs")
    time.sleep(0.1)          # a third job, if the server made one, would be counted by now
    seen = []
    while True:
        j = grab(w, uniq=True)
        if not j:
            break
        seen.append(j)
        w.send_packet("WORK_COMPLETE", j[0], b"R:" + j[3])
    responses = [c.response() for c in conns]
    for c in conns:
        c.close()
    w.close()
    return responses, seen


@test
def test_default_unique_is_dash_and_identical_bodies_coalesce():
    with HttpServer() as s:
        responses, seen = default_unique_scenario(s)
    assert sorted((u, d) for _, _, u, d in seen) == [(b"-", b"different"), (b"-", b"same")], seen
    hs = {d: h for h, _, _, d in seen}
    check_job_response(responses[0], hs[b"same"], "WORK_COMPLETE", b"R:same")
    check_job_response(responses[1], hs[b"same"], "WORK_COMPLETE", b"R:same")
    check_job_response(responses[2], hs[b"different"], "WORK_COMPLETE", b"R:different")


@test
def test_default_unique_coalescing_matches_gearmand_1_1_20():
    if not os.path.exists(DEBIAN_GEARMAND):
        gmtest.skip("%s not installed" % DEBIAN_GEARMAND)
    with HttpServer(binary=DEBIAN_GEARMAND) as s:
        responses, seen = default_unique_scenario(s, ours=False)
    assert sorted((u, d) for _, _, u, d in seen) == [(b"-", b"different"), (b"-", b"same")], seen
    hs = {d: h for h, _, _, d in seen}
    got = [(r.status, r.h("x-gearman-job-handle"), r.h("x-gearman-command"), r.body) for r in responses]
    assert got == [(200, hs[b"same"], "WORK_COMPLETE", b"R:same"), (200, hs[b"same"], "WORK_COMPLETE", b"R:same"),
                   (200, hs[b"different"], "WORK_COMPLETE", b"R:different")], got


@test
def test_work_fail_answers_work_fail_with_the_whole_handle():
    with HttpServer() as s:
        w = worker(s, "failing")
        with s.http() as c:
            c.request("POST", "/failing", [("X-Gearman-Unique", "f1")], b"x")
            h, _, _ = grab_wait(w)
            w.send_packet("WORK_DATA", h, b"partial")       # dropped: the job failed
            w.send_packet("WORK_FAIL", h)
            check_job_response(c.response(), h, "WORK_FAIL", b"")
            # the connection goes on
            c.request("POST", "/failing", [("X-Gearman-Unique", "f2")], b"y")
            h2, _, _ = grab_wait(w)
            w.send_packet("WORK_COMPLETE", h2, b"ok")
            check_job_response(c.response(), h2, "WORK_COMPLETE", b"ok")
        w.close()


@test
def test_work_exception_is_work_fail_unless_exceptions_are_on():
    # as for a binary-protocol client that did not ask for exceptions
    with HttpServer() as s:
        w = worker(s, "exc")
        with s.http() as c:
            c.request("POST", "/exc", [("X-Gearman-Unique", "e1")], b"x")
            h, _, _ = grab_wait(w)
            w.send_packet("WORK_EXCEPTION", h, b"it broke")
            check_job_response(c.response(), h, "WORK_FAIL", b"")
        w.close()
    with HttpServer("--exceptions") as s:
        w = worker(s, "exc")
        with s.http() as c:
            c.request("POST", "/exc", [("X-Gearman-Unique", "e2")], b"x")
            h, _, _ = grab_wait(w)
            w.send_packet("WORK_DATA", h, b"partial;")
            w.send_packet("WORK_EXCEPTION", h, b"it\0broke")
            check_job_response(c.response(), h, "WORK_EXCEPTION", b"it\0broke")
            m = metrics(s)
            assert m.get("gearman_jobs_failed_total", function="exc") == 1
        w.close()


@test
def test_full_queue_answers_503_queue_error():
    with HttpServer() as s:
        w = worker(s, "full")            # maxqueue needs the function to exist
        with s.conn() as a:
            assert a.admin("maxqueue full 1") == b"OK\r\n"
        with s.http() as c:
            r = c.roundtrip("POST", "/full", [("X-Gearman-Background", "true"), ("X-Gearman-Unique", "a")], b"1")
            assert r.status == 200 and r.h("x-gearman-command") == "JOB_CREATED", r
            r = c.roundtrip("POST", "/full", [("X-Gearman-Background", "true"), ("X-Gearman-Unique", "b")], b"2")
            assert r.status_line == "HTTP/1.1 503 Service Unavailable", r
            assert r.h("x-gearman-error") == "QUEUE_ERROR", r
            assert b"QUEUE_ERROR" in r.body, r
            # a foreground submission is refused the same way
            r = c.roundtrip("POST", "/full", [("X-Gearman-Unique", "c")], b"3")
            assert r.status == 503 and r.h("x-gearman-error") == "QUEUE_ERROR", r
            # a coalescing submission is not (gearmand: coalesced jobs bypass maxqueue)
            r = c.roundtrip("POST", "/full", [("X-Gearman-Background", "true"), ("X-Gearman-Unique", "a")], b"1")
            assert r.status == 200 and r.h("x-gearman-job-handle") == PREFIX + ":1", r
        assert admin_status(s, "full") == (1, 0, 1)
        w.close()


# ----------------------------------------------------------------------
# connections

@test
def test_keep_alive_serves_several_requests_on_one_connection():
    with HttpServer() as s:
        w = worker(s, "ka")
        with s.http() as c:
            for i in range(3):
                c.request("POST", "/ka", [("X-Gearman-Unique", "k%d" % i)], "job %d" % i)
                h, _, data = grab_wait(w)
                assert data == ("job %d" % i).encode()
                w.send_packet("WORK_COMPLETE", h, "res %d" % i)
                check_job_response(c.response(), h, "WORK_COMPLETE", ("res %d" % i).encode())
                r = c.roundtrip("GET", "/health")
                assert r.status == 200 and r.h("connection") == "keep-alive", r
                r = c.roundtrip("GET", "/api/status")
                assert r.json()["functions"][0]["name"] == "ka"
            c.request("POST", "/ka", [("X-Gearman-Background", "true"), ("X-Gearman-Unique", "kb")], "bg")
            check_job_response(c.response(), PREFIX + ":4", "JOB_CREATED", b"")
            assert not c.closed(0.2), "the connection was closed"
        h, _, data = grab(w)
        assert (h, data) == (PREFIX + ":4", b"bg"), (h, data)
        w.send_packet("WORK_COMPLETE", h, b"")
        # Python's own client keeps using one socket
        hc = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=10)
        hc.request("GET", "/health")
        r = hc.getresponse()
        assert r.status == 200 and json.loads(r.read())["ready"] is True
        sock = hc.sock
        result = {}

        def answer():
            h, _, data = grab_wait(w)
            w.send_packet("WORK_COMPLETE", h, data.upper())
            result["h"] = h
        t = threading.Thread(target=answer)
        t.start()
        hc.request("PUT", "/ka", body=b"by http.client", headers={"X-Gearman-Unique": "hc"})
        r = hc.getresponse()
        body = r.read()
        t.join()
        assert r.status == 200 and body == b"BY HTTP.CLIENT" and r.getheader("X-Gearman-Job-Handle") == result["h"], \
            (r.status, body, r.getheaders())
        hc.request("GET", "/api/status")
        r = hc.getresponse()
        assert r.status == 200 and json.loads(r.read())["totals"]["completed"] == 5
        assert hc.sock is sock, "http.client had to reconnect"
        hc.close()
        w.close()


@test
def test_pipelined_requests_are_answered_in_order():
    with HttpServer() as s:
        w = worker(s, "pipe")
        with s.http() as c:
            c.send(build("POST", "/pipe", [("X-Gearman-Unique", "p1")], b"one")
                   + build("GET", "/api/jobs?function=pipe")
                   + build("POST", "/pipe", [("X-Gearman-Unique", "p2")], b"two")
                   + build("POST", "/pipe", [("X-Gearman-Background", "true"), ("X-Gearman-Unique", "p3")],
                           b"three")
                   + build("GET", "/health", [("Connection", "close")]))
            h1, _, d1 = grab_wait(w)
            assert d1 == b"one", d1
            c.nothing(0.1)
            assert grab(w) is None, "the second job was submitted before the first was answered"
            w.send_packet("WORK_COMPLETE", h1, b"r1")
            check_job_response(c.response(), h1, "WORK_COMPLETE", b"r1")
            r = c.response()
            jobs = r.json()
            assert jobs["total"] == 0, jobs       # job one is done, job two not yet submitted
            h2, _, d2 = grab_wait(w)
            assert d2 == b"two", d2
            w.send_packet("WORK_COMPLETE", h2, b"r2")
            check_job_response(c.response(), h2, "WORK_COMPLETE", b"r2")
            r = c.response()
            assert r.h("x-gearman-command") == "JOB_CREATED", r
            h3 = r.h("x-gearman-job-handle")
            r = c.response()
            assert r.status == 200 and r.json()["live"] is True and r.h("connection") == "close", r
            assert c.closed(), "Connection: close was not honoured"
        assert grab(w, uniq=True) == (h3, "pipe", b"p3", b"three")
        w.close()


@test
def test_http10_closes_unless_keep_alive():
    with HttpServer() as s:
        with s.http() as c:
            r = c.roundtrip("GET", "/health", version="HTTP/1.0")
            assert r.status_line == "HTTP/1.0 200 OK" and r.h("connection") == "close", r
            assert c.closed(), "an HTTP/1.0 connection stayed open"
        with s.http() as c:
            for _ in range(2):
                r = c.roundtrip("GET", "/health", [("Connection", "Keep-Alive")], version="HTTP/1.0")
                assert r.status_line == "HTTP/1.0 200 OK" and r.h("connection") == "keep-alive", r
            assert not c.closed(0.2)
        # a job answer in HTTP/1.0 (the way gearmand's clients speak)
        w = worker(s, "old")
        with s.http() as c:
            c.request("POST", "/old", [("X-Gearman-Unique", "o")], b"x", version="HTTP/1.0")
            h, _, _ = grab_wait(w)
            w.send_packet("WORK_COMPLETE", h, b"RESULT")
            check_job_response(c.response(), h, "WORK_COMPLETE", b"RESULT", version="HTTP/1.0", keep_alive=False)
            assert c.closed()
        with s.http() as c:
            c.request("POST", "/old", [("X-Gearman-Unique", "o2"), ("Connection", "keep-alive")], b"x",
                      version="HTTP/1.0")
            h, _, _ = grab_wait(w)
            w.send_packet("WORK_COMPLETE", h, b"R2")
            check_job_response(c.response(), h, "WORK_COMPLETE", b"R2", version="HTTP/1.0", keep_alive=True)
            assert not c.closed(0.2)
        w.close()


@test
def test_connection_close_is_honoured():
    with HttpServer() as s:
        w = worker(s, "cc")
        with s.http() as c:
            c.request("POST", "/cc", [("X-Gearman-Unique", "c"), ("Connection", "close")], b"x")
            h, _, _ = grab_wait(w)
            w.send_packet("WORK_COMPLETE", h, b"bye")
            check_job_response(c.response(), h, "WORK_COMPLETE", b"bye", keep_alive=False)
            assert c.closed(), "Connection: close was not honoured after a job"
        with s.http() as c:
            c.request("GET", "/api/status", [("connection", "CLOSE")])
            r = c.response()
            assert r.status == 200 and r.h("connection") == "close", r
            assert c.closed()
        # what follows a Connection: close request is not answered
        with s.http() as c:
            c.send(build("GET", "/health", [("Connection", "close")]) + build("GET", "/health"))
            assert c.response().status == 200
            assert c.closed() and c.buf == b"", c.buf
        w.close()


@test
def test_connection_close_among_other_tokens_is_honoured():
    # Connection is a comma-separated list of options (RFC 9110 7.6.1)
    with HttpServer() as s:
        with s.http() as c:
            r = c.roundtrip("GET", "/health", [("Connection", "TE, close")])
            assert r.status == 200, r
            closed = c.closed(1.0)
            assert r.h("connection") == "close" and closed, \
                "Connection: TE, close -> Connection: %s, connection %s" % (
                    r.h("connection"), "closed" if closed else "left open")


# ----------------------------------------------------------------------
# malformed requests

def expect_error(s, data, status, reason, why=None):
    """Sends `data` on a fresh connection: the answer is `status reason`,
    with a text body giving the reason, then the connection closes."""
    out = raw_exchange(s.http_port, data)
    head, sep, body = out.partition(b"\r\n\r\n")
    assert sep, "no complete response to %r: %r" % (data[:80], out[:300])
    r = Response(head + sep, body)
    assert r.status == status and r.reason == reason, "%r -> %r, want %d %s" % (data[:80], r.status_line, status,
                                                                               reason)
    assert r.version in ("HTTP/1.1", "HTTP/1.0"), r
    assert len(body) == int(r.h("content-length")), r
    assert body.startswith(("%d %s: " % (status, reason)).encode()) and len(body) > len(reason) + 8, body
    if why:
        assert why.encode() in body, body
    assert r.h("connection") == "close", r
    return r


POST_OK = b"POST /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@test
def test_malformed_requests_get_an_error_and_the_server_keeps_serving():
    with HttpServer("--max-packet-size", "100000") as s:
        w = worker(s, "ok")
        expect_error(s, b"GARBAGE\r\n\r\n", 400, "Bad Request", "request line")
        expect_error(s, b"GET /health\r\n\r\n", 400, "Bad Request", "request line")
        expect_error(s, b"GET /health HTTP/2.0\r\n\r\n", 505, "HTTP Version Not Supported")
        expect_error(s, b"GET /health HTTP/1.2\r\n\r\n", 505, "HTTP Version Not Supported")
        expect_error(s, b"GET /health FTP/1.1\r\n\r\n", 505, "HTTP Version Not Supported")
        expect_error(s, b"BREW /coffee HTTP/1.1\r\n\r\n", 501, "Not Implemented")
        expect_error(s, b"get /health HTTP/1.1\r\n\r\n", 501, "Not Implemented")
        expect_error(s, b"TRACE /ok HTTP/1.1\r\n\r\n", 501, "Not Implemented")
        expect_error(s, POST_OK + b"Content-Length: abc\r\n\r\n", 400, "Bad Request", "Content-Length")
        expect_error(s, POST_OK + b"Content-Length: -1\r\n\r\n", 400, "Bad Request", "Content-Length")
        expect_error(s, POST_OK + b"Content-Length:\r\n\r\n", 400, "Bad Request", "Content-Length")
        expect_error(s, POST_OK + b"Content-Length: 99999999999999999999\r\n\r\n", 400, "Bad Request")
        expect_error(s, POST_OK + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411,
                     "Length Required")
        expect_error(s, POST_OK + b"Content-Length: 100001\r\n\r\n", 413, "Payload Too Large")
        expect_error(s, b"HEAD /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405, "Method Not Allowed")
        big = b"GET /ok HTTP/1.1\r\nX-Filler: " + b"a" * 65536
        expect_error(s, big[:65536], 431, "Request Header Fields Too Large")
        # a body at the limit goes through; the server still answers everyone
        with s.http() as c:
            body = (bytes(range(256)) * 400)[:100000]          # exactly --max-packet-size
            c.request("POST", "/ok", [("X-Gearman-Unique", "ok")], body)
            h, _, data = grab_wait(w)
            assert data == body
            w.send_packet("WORK_COMPLETE", h, b"fine")
            check_job_response(c.response(), h, "WORK_COMPLETE", b"fine")
            r = c.roundtrip("GET", "/api/nothing-here")
            assert r.status == 404 and r.h("connection") == "keep-alive", r
            r = c.roundtrip("GET", "/health")
            assert r.status == 200, r
        assert "gearmand" in open("/proc/%d/cmdline" % s.proc.pid).read() and s.proc.poll() is None
        w.close()


@test
def test_conflicting_content_lengths_are_rejected():
    # RFC 9112 6.3: differing Content-Length values make the framing invalid;
    # the server must answer 400 and close, not pick one (request smuggling)
    with HttpServer() as s:
        w = worker(s, "cl")
        with s.http() as c:
            c.send(b"POST /cl HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Gearman-Unique: cl\r\n"
                   b"Content-Length: 3\r\nContent-Length: 8\r\n\r\n"
                   b"abcdefgh")
            try:
                r = c.response(timeout=1.0)
            except (TimeoutError, OSError):
                got = grab(w)
                if got:
                    w.send_packet("WORK_COMPLETE", got[0], b"")
                fail("two Content-Lengths (3, 8): no answer within 1 s; the worker got %r" % (got,))
            assert r.status == 400 and r.h("connection") == "close", "two Content-Lengths (3, 8) -> %r" % r
        w.close()


@test
def test_an_error_after_good_pipelined_requests_comes_after_their_answers():
    with HttpServer() as s:
        out = raw_exchange(s.http_port, build("GET", "/health") + build("GET", "/api/workers")
                           + b"BREW /pot HTTP/1.1\r\n\r\n" + build("GET", "/health"))
        parts = out.split(b"HTTP/1.1 ")
        assert parts[0] == b"" and len(parts) == 4, out
        assert parts[1].startswith(b"200 OK\r\n") and b'"live":true' in parts[1], out
        assert parts[2].startswith(b"200 OK\r\n") and b'{"workers":[],"truncated":false}' in parts[2], out
        assert parts[3].startswith(b"501 Not Implemented\r\n") and b"Connection: close\r\n" in parts[3], out


@test
def test_head_request_gets_headers_only():
    with HttpServer() as s:
        with s.http() as c:
            g = c.roundtrip("GET", "/health")
            c.request("HEAD", "/health")
            r = c.response(head_only=True)
            assert r.status == 200 and r.h("content-length") == g.h("content-length"), (r, g)
            c.nothing(0.2)        # no body follows
            r = c.roundtrip("GET", "/health")
            assert r.body == g.body


# ----------------------------------------------------------------------
# large bodies, disconnects

@test
def test_eight_mib_body_through_a_worker_and_back():
    with HttpServer() as s:
        w = worker(s, "big")
        w.timeout = 30.0
        body = bytes(range(256)) * (8 * 1024 * 1024 // 256)
        with s.http(timeout=30.0) as c:
            c.request("POST", "/big", [("X-Gearman-Unique", "big")], body)
            h, fn, data = grab_wait(w, timeout=20.0)
            assert len(data) == len(body) and data == body, len(data)
            result = data[::-1]
            w.send_packet("WORK_DATA", h, result[:3 * 1024 * 1024])
            w.send_packet("WORK_COMPLETE", h, result[3 * 1024 * 1024:])
            r = c.response(timeout=30.0)
            assert r.status == 200 and r.h("content-length") == str(len(body)), r
            assert r.body == result, "the 8 MiB answer differs"
            r = c.roundtrip("GET", "/health")
            assert r.status == 200
        w.close()


@test
def test_a_streamed_result_past_max_output_size_is_answered_502_and_the_server_stays_small():
    # A worker streams WORK_DATA to an HTTP foreground job and never
    # completes.  The server used to join the whole stream into the
    # response (up to 4 GiB); now, past --max-output-size (2 MiB here, with
    # --max-packet-size 1 MiB), the request is answered 502 at once and its
    # connection closes, the server does not grow with the stream, and the
    # worker goes on: it ends the job and runs the next one.
    cap, chunk, stream = 2 << 20, 64 << 10, 96 << 20
    with HttpServer("--max-output-size", str(cap), "--max-packet-size", str(1 << 20),
                    env=gmtest.small_quarantine()) as s:
        w = worker(s, "stream")
        w.timeout = 60.0
        c = s.http(timeout=30.0)
        c.request("GET", "/stream")
        h, _, _ = grab_wait(w)
        base = gmtest.rss_kib(s.proc.pid)
        data = b"s" * chunk
        for i in range(stream // chunk):
            w.send_packet("WORK_DATA", h, data)
            if i % 64 == 63:
                sync(w)
        # 96 MiB streamed: the server grew by 97 MiB before, 3 MiB now (12
        # under AddressSanitizer with a small quarantine)
        grown = gmtest.rss_kib(s.proc.pid) - base
        assert grown < 32 * 1024, "the server grew by %d KiB while a worker streamed %d MiB" % (grown, stream >> 20)
        r = c.response(timeout=10.0)
        assert r.status == 502 and r.reason == "Bad Gateway", r
        assert r.h("x-gearman-job-handle") == h and r.h("x-gearman-command") == "WORK_DATA", r
        assert r.h("connection") == "close" and c.closed(), r
        assert b"passed %d bytes" % cap in r.body and b"--max-output-size" in r.body, r.body
        # the worker is not hurt: it ends the job, which nobody waits for now,
        # and runs the next
        w.send_packet("WORK_COMPLETE", h, "end")
        sync(w)
        assert admin_status(s, "stream") == (0, 0, 1)
        with s.http() as c2:
            c2.request("POST", "/stream", [("X-Gearman-Unique", "next")], "next")
            h2, _, d = grab_wait(w)
            assert d == b"next" and h2 != h, (h2, d)
            w.send_packet("WORK_COMPLETE", h2, "done")
            check_job_response(c2.response(), h2, "WORK_COMPLETE", b"done")
        w.close()


@test
def test_client_disconnecting_mid_job_does_not_break_the_server():
    with HttpServer() as s:
        w = worker(s, "gone")
        # gone while the worker runs the job
        c = s.http()
        c.request("POST", "/gone", [("X-Gearman-Unique", "g1")], b"x")
        h, _, _ = grab_wait(w)
        c.close()
        time.sleep(0.1)
        w.send_packet("WORK_DATA", h, b"nobody")
        w.send_packet("WORK_COMPLETE", h, b"listens")
        sync(w)
        # gone while the job is still queued, and gone half way through a request
        c = s.http()
        c.request("POST", "/gone", [("X-Gearman-Unique", "g2")], b"y")
        wait_until(lambda: admin_status(s, "gone")[0] == 1, what="the queued job")
        c.close()
        c = s.http()
        c.send(b"POST /gone HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nonly part")
        c.close()
        c = s.http()
        c.send(b"GET /heal")
        c.close()
        # the server goes on
        with s.http() as c2:
            c2.request("POST", "/gone", [("X-Gearman-Unique", "g3")], b"z")
            deadline = time.time() + 5
            while True:
                # the request comes on another connection (maybe another I/O
                # thread): it may not be queued yet when the worker first asks
                j = grab(w)
                assert j or time.time() < deadline, "the new job never reached the worker"
                if not j:
                    time.sleep(0.02)
                    continue
                if j[2] == b"z":
                    break
                w.send_packet("WORK_COMPLETE", j[0], b"")      # an abandoned job, if handed out
                assert time.time() < deadline
            w.send_packet("WORK_COMPLETE", j[0], b"still here")
            check_job_response(c2.response(), j[0], "WORK_COMPLETE", b"still here")
        wait_until(lambda: get_json(s, "/api/status")["totals"]["running"] == 0, what="nothing running")
        w.close()


# ----------------------------------------------------------------------
# JSON views

@test
def test_api_status_workers_and_jobs_describe_known_state():
    with HttpServer() as s:
        w = worker(s, "alpha", "beta", client_id="w-one")
        w2 = worker(s, "beta")
        handles = []
        with s.http() as c:
            for fn, u, prio in (("alpha", "a1", None), ("alpha", "a2", None), ("beta", "b1", "low"),
                                ("alpha", "a3", "high"), ("beta", "b2", None), ("alpha", "a4", None)):
                hdrs = [("X-Gearman-Background", "true"), ("X-Gearman-Unique", u)]
                if prio:
                    hdrs.append(("X-Gearman-Priority", prio))
                r = c.roundtrip("POST", "/" + fn, hdrs, "data " + u)
                assert r.status == 200, r
                handles.append((r.h("x-gearman-job-handle"), fn, u, prio or "normal"))
        # w2 would sleep, but beta has jobs: it is woken at once; w3 (gamma,
        # nothing queued) sleeps; w runs the high alpha job (a3 comes first)
        w2.send_packet("PRE_SLEEP")
        w2.expect_packet("NOOP")
        w3 = worker(s, "gamma")
        w3.send_packet("PRE_SLEEP")
        sync(w3)
        running, fn, data = grab(w)
        assert data == b"data a3", data
        st = get_json(s, "/api/status")
        srv = st["server"]
        assert srv["queue"] == {"backend": "builtin", "healthy": True, "batches": 0, "records": 0, "failures": 0,
                                "pending": 0}, srv
        assert srv["pid"] == s.proc.pid and srv["uptime_s"] >= 0 and srv["io_threads"] >= 1, srv
        assert st["totals"] == {"jobs": 6, "queued": 5, "running": 1, "functions": 3, "workers": 3,
                                "submitted": 6, "completed": 0, "failed": 0, "dead": 0}, st["totals"]
        fns = {f["name"]: f for f in st["functions"]}
        assert set(fns) == {"alpha", "beta", "gamma"}, fns
        a, b, g = fns["alpha"], fns["beta"], fns["gamma"]
        assert (g["total"], g["queued"], g["running"], g["workers"]) == (0, 0, 0, 1), g
        assert g["oldest_queued_age_s"] is None, g
        assert (a["total"], a["queued"], a["running"], a["workers"]) == (4, 3, 1, 1), a
        assert a["queued_by_priority"] == {"high": 0, "normal": 3, "low": 0}, a
        assert (b["total"], b["queued"], b["running"], b["workers"]) == (2, 2, 0, 2), b
        assert b["queued_by_priority"] == {"high": 0, "normal": 1, "low": 1}, b
        assert a["oldest_queued_age_s"] is not None and a["oldest_queued_age_s"] >= 0, a
        assert a["maxqueue"] == {"high": 0, "normal": 0, "low": 0}, a
        # workers
        ws = get_json(s, "/api/workers")["workers"]
        assert len(ws) == 3, ws
        one = [x for x in ws if x["client_id"] == "w-one"]
        two = [x for x in ws if x["functions"] == ["beta"]]
        three = [x for x in ws if x["functions"] == ["gamma"]]
        assert len(one) == 1 and len(two) == 1 and len(three) == 1, ws
        assert two[0]["client_id"] == "-" and three[0]["client_id"] == "-", ws
        assert sorted(one[0]["functions"]) == ["alpha", "beta"] and one[0]["current_job"] == running, one
        assert one[0]["running"] == 1 and one[0]["address"] == "127.0.0.1" and one[0]["port"] > 0, one
        assert two[0]["functions"] == ["beta"] and two[0]["current_job"] is None and two[0]["running"] == 0, two
        assert three[0]["sleeping"] is True and one[0]["sleeping"] is False, ws
        # jobs: all, by function, by state, paged
        allj = get_json(s, "/api/jobs")
        assert allj["total"] == 6 and allj["offset"] == 0 and allj["limit"] == 100, allj
        assert [j["handle"] for j in allj["jobs"]] == [h for h, _, _, _ in handles], allj
        for j, (h, fn, u, prio) in zip(allj["jobs"], handles):
            assert (j["function"], j["unique"], j["priority"], j["background"]) == (fn, u, prio, True), j
            assert j["state"] == ("running" if h == running else "queued"), j
            assert j["clients"] == 0 and j["retries"] == 0 and j["run_at"] == 0 and j["age_s"] >= 0, j
        alpha = get_json(s, "/api/jobs?function=alpha")
        assert alpha["total"] == 4 and [j["unique"] for j in alpha["jobs"]] == ["a1", "a2", "a3", "a4"], alpha
        r = get_json(s, "/api/jobs?state=running")
        assert r["total"] == 1 and [j["handle"] for j in r["jobs"]] == [running], r
        r = get_json(s, "/api/jobs?function=alpha&state=queued")
        assert r["total"] == 3 and [j["unique"] for j in r["jobs"]] == ["a1", "a2", "a4"], r
        r = get_json(s, "/api/jobs?function=beta&state=running")
        assert r["total"] == 0 and r["jobs"] == [], r
        r = get_json(s, "/api/jobs?function=nosuch")
        assert r["total"] == 0 and r["jobs"] == [], r
        pages = []
        for off in range(0, 7, 2):
            p = get_json(s, "/api/jobs?offset=%d&limit=2" % off)
            assert p["total"] == 6 and p["offset"] == off and p["limit"] == 2, p
            assert len(p["jobs"]) == min(2, max(0, 6 - off)), p
            pages += p["jobs"]
        assert [j["handle"] for j in pages] == [j["handle"] for j in allj["jobs"]], pages
        p = get_json(s, "/api/jobs?function=alpha&offset=1&limit=2")
        assert p["total"] == 4 and [j["unique"] for j in p["jobs"]] == ["a2", "a3"], p
        p = get_json(s, "/api/jobs?offset=100")
        assert p["total"] == 6 and p["jobs"] == [], p
        p = get_json(s, "/api/jobs?limit=0")
        assert p["total"] == 6 and p["jobs"] == [], p
        # the deepest page served is at offset 10,000 (issue 14.5: what a request may cost)
        p = get_json(s, "/api/jobs?offset=99999&limit=5000")
        assert p["total"] == 6 and p["offset"] == 10000 and p["limit"] == 1000 and p["jobs"] == [], p
        assert p["partial"] is False and "next_after" not in p, p
        # a cursor: after= a job goes on after it, in all or in its function; one that
        # has ended (or is another function's) is a 404
        order = [j["handle"] for j in allj["jobs"]]
        p = get_json(s, "/api/jobs?after=%s&limit=2" % order[1])
        assert [j["handle"] for j in p["jobs"]] == order[2:4] and p["total"] == 6, p
        p = get_json(s, "/api/jobs?function=alpha&after=%s&offset=1" % alpha["jobs"][0]["handle"])
        assert [j["unique"] for j in p["jobs"]] == ["a3", "a4"], p
        r = get(s, "/api/jobs?function=beta&after=%s" % alpha["jobs"][0]["handle"])
        assert r.status == 404 and "after=" in r.json()["error"], r
        r = get(s, "/api/jobs?after=%s:999999" % PREFIX)
        assert r.status == 404, r
        w.send_packet("WORK_COMPLETE", running, b"")
        sync(w)
        st = get_json(s, "/api/status")
        assert st["totals"]["completed"] == 1 and st["totals"]["jobs"] == 5, st["totals"]
        for x in (w, w2, w3):
            x.close()


@test
def test_cancel_needs_post_and_a_known_handle():
    with HttpServer() as s:
        with s.http() as c:
            r = c.roundtrip("POST", "/victim", [("X-Gearman-Background", "true"), ("X-Gearman-Unique", "v")], b"v")
            h = r.h("x-gearman-job-handle")
            r = c.roundtrip("GET", "/api/jobs/cancel?handle=" + h)
            assert r.status_line == "HTTP/1.1 405 Method Not Allowed" and r.h("allow") == "POST", r
            assert "error" in r.json()
            assert get_json(s, "/api/jobs")["total"] == 1
            r = c.roundtrip("POST", "/api/jobs/cancel")
            assert r.status == 400 and "error" in r.json(), r
            r = c.roundtrip("POST", "/api/jobs/cancel?handle=H:http:999")
            assert r.status == 404 and r.json() == {"error": "unknown job", "handle": "H:http:999"}, r
            # the handle in a form body, percent-encoded
            r = c.roundtrip("POST", "/api/jobs/cancel",
                            [("Content-Type", "application/x-www-form-urlencoded")],
                            "handle=" + h.replace(":", "%3A"))
            assert r.status == 200 and r.json() == {"ok": True, "cancelled": h}, r
            assert get_json(s, "/api/jobs")["total"] == 0
            assert admin_status(s, "victim") == (0, 0, 0)
            r = c.roundtrip("POST", "/api/jobs/cancel?handle=" + h)
            assert r.status == 404, r
        # cancelling a foreground job answers its HTTP client with WORK_FAIL
        w = worker(s, "victim")
        with s.http() as waiting, s.http() as c:
            waiting.request("POST", "/victim", [("X-Gearman-Unique", "fg")], b"fg")
            wait_until(lambda: get_json(s, "/api/jobs?function=victim")["total"] == 1, what="the job")
            h = get_json(s, "/api/jobs?function=victim")["jobs"][0]["handle"]
            r = c.roundtrip("POST", "/api/jobs/cancel?handle=" + h, [], b"")
            assert r.status == 200, r
            check_job_response(waiting.response(), h, "WORK_FAIL", b"")
            assert grab(w) is None
            m = metrics(s)
            assert m.get("gearman_jobs_failed_total", function="victim") >= 1
        w.close()


def non_loopback_ipv4():
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=5).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        m = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", line)
        if m and not m.group(1).startswith("127."):
            return m.group(1)
    return None


def remote_servers():
    """Yields (ip, allow, server): a server listening on every address,
    without then with --http-allow-remote-actions, and this machine's
    non-loopback address to reach it as another host would (the test is
    skipped without one)."""
    ip = non_loopback_ipv4()
    if not ip:
        gmtest.skip("this machine has no non-loopback IPv4 address")
    for allow in (False, True):
        args = ["--http-allow-remote-actions"] if allow else []
        with HttpServer(*args, listen=None) as s:
            yield ip, allow, s


@test
def test_cancel_from_a_non_loopback_peer_needs_the_option():
    for ip, allow, s in remote_servers():
        with s.http() as c:
            r = c.roundtrip("POST", "/remote", [("X-Gearman-Background", "true"), ("X-Gearman-Unique", "r")],
                            b"r")
            h = r.h("x-gearman-job-handle")
        with s.http(host=ip) as c:
            r = c.roundtrip("GET", "/api/jobs")               # reading is for anyone
            assert r.status == 200 and r.json()["total"] == 1, r
            r = c.roundtrip("POST", "/api/jobs/cancel?handle=" + h)
            if allow:
                assert r.status == 200 and r.json() == {"ok": True, "cancelled": h}, r
            else:
                assert r.status_line == "HTTP/1.1 403 Forbidden", r
                assert "http-allow-remote-actions" in r.json()["error"], r
            r = c.roundtrip("GET", "/api/workers")
            assert r.status == 200, r
        assert get_json(s, "/api/jobs")["total"] == (0 if allow else 1)
        if not allow:
            with s.http() as c:                              # loopback may
                r = c.roundtrip("POST", "/api/jobs/cancel?handle=" + h)
                assert r.status == 200, r


# ----------------------------------------------------------------------
# Host and Origin: DNS rebinding and other sites' pages

def refused(r, header):
    """A 403 from the Host or Origin rules, naming the header, closing."""
    assert r.status_line.endswith(" 403 Forbidden"), r
    assert r.h("connection") == "close", r
    assert r.h("content-type").startswith("text/plain"), r
    assert r.body.startswith(b"403 Forbidden: \"" + header.encode() + b": "), r.body
    return r


def one_request(s, method, path, headers=(), body=b"", version="HTTP/1.1", host="127.0.0.1"):
    """Sends one request on a fresh connection and reads its answer."""
    with s.http() as c:
        c.send(build(method, path, headers, body, version, host=host))
        return c.response(head_only=(method == "HEAD"))


def job_total(s):
    return get_json(s, "/api/jobs")["total"]


@test
def test_host_must_name_this_server_on_every_path():
    with HttpServer("--http-host", "gearbox.example, Other.Example.") as s:
        w = worker(s, "hostfn")
        paths = ["/", "/index.html", "/health", "/metrics", "/api/status", "/api/workers", "/api/jobs",
                 "/favicon.ico", "/api/nothing"]
        for p in paths:
            for method in ("GET", "HEAD"):
                r = one_request(s, method, p, host="evil.example")
                assert r.status == 403 and r.h("connection") == "close", (method, p, r)
            refused(one_request(s, "GET", p, host="evil.example:%d" % s.http_port), "Host")
            refused(one_request(s, "GET", p, version="HTTP/1.0", host=None,
                                headers=[("Host", "rebind.evil.example")]), "Host")
        # a job submission for a foreign name queues nothing
        r = refused(one_request(s, "POST", "/hostfn", [("X-Gearman-Background", "true")], b"x",
                                host="evil.example"), "Host")
        assert b"--http-host" in r.body, r.body
        assert job_total(s) == 0 and grab(w) is None
        # the server's own names, any port, any case; IP addresses
        ours = ["127.0.0.1:%d" % s.http_port, "127.0.0.1", "localhost", "LocalHost:1", "localhost.",
                "[::1]:%d" % s.http_port, "[::1]", "10.20.30.40:8080", socket.gethostname(),
                "gearbox.example", "GEARBOX.example:80", "other.example", "other.example.:%d" % s.http_port]
        for h in ours:
            r = one_request(s, "GET", "/api/status", host=h)
            assert r.status == 200, (h, r)
        r = one_request(s, "POST", "/hostfn", [("X-Gearman-Background", "true")], b"ok", host="gearbox.example")
        assert r.status == 200 and r.h("x-gearman-command") == "JOB_CREATED", r
        # HTTP/1.0 without Host: accepted (gearmand's clients); HTTP/1.1 without Host: 400
        r = one_request(s, "GET", "/health", version="HTTP/1.0", host=None)
        assert r.status == 200, r
        for bad, why in ((None, b"needs a Host"), ("", b"bad Host"), ("a b", b"bad Host"),
                         ("x:99999", b"bad Host"), ("x:1:2", b"bad Host"), ("[::1", b"bad Host"),
                         ("user@localhost", b"bad Host")):
            hdrs = [] if bad is None else [("Host", bad)]
            with s.http() as c:
                c.send(build("GET", "/api/status", hdrs, host=None))
                r = c.response()
            assert r.status == 400 and why in r.body and r.h("connection") == "close", (bad, r)
        with s.http() as c:
            c.send(build("GET", "/api/status", [("Host", "localhost"), ("Host", "evil.example")], host=None))
            r = c.response()
            assert r.status == 400 and b"more than one Host" in r.body, r
        # each refusal is logged once, at WARNING, with its reason
        log = [ln for ln in s.log_text().splitlines() if "http: refused" in ln]
        assert len(log) == len(paths) * 4 + 1, "\n".join(log)
        assert all(ln.startswith("WARNING") for ln in log), log
        assert "refused POST /hostfn: \"Host: evil.example\"" in log[-1], log[-1]
        w.close()


@test
def test_http_host_star_accepts_any_name_and_bad_names_are_refused_at_start():
    with HttpServer("--http-host", "*") as s:
        assert one_request(s, "GET", "/api/status", host="anything.example").status == 200
    for bad in ("bad/name", "a b", "x" * 254, ",".join("n%d" % i for i in range(40))):
        p = subprocess.run([gmtest.GEARMAND, "-p", str(free_port()), "-L", "127.0.0.1", "-l", "stderr",
                            "-r", "http", "--http-port", str(free_port()), "--http-host", bad],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        assert p.returncode == 1 and b"--http-host" in p.stderr, (bad[:40], p.returncode, p.stderr)


@test
def test_requests_that_change_state_from_another_origin_are_refused():
    with HttpServer() as s:
        port = s.http_port
        host = "127.0.0.1:%d" % port
        own = "http://" + host
        bg = [("X-Gearman-Background", "true")]
        # clients that send no Origin or Referer (curl, scripts): as before
        r = one_request(s, "POST", "/victim", bg + [("X-Gearman-Unique", "v1")], b"1", host=host)
        assert r.status == 200 and r.h("x-gearman-command") == "JOB_CREATED", r
        h = r.h("x-gearman-job-handle")
        cancel = "/api/jobs/cancel?handle=" + h
        for name, value in (("Origin", "http://evil.example"), ("Origin", "null"),
                            ("Origin", "http://127.0.0.1:%d" % (port + 1)),   # another port of this host
                            ("Origin", "http://localhost:%d" % port),          # another name for it
                            ("Origin", own + "/"), ("Origin", "file://"),
                            ("Referer", "http://evil.example/page.html"),
                            ("Referer", "http://127.0.0.1:%d/#jobs" % (port + 1))):
            r = refused(one_request(s, "POST", cancel, [(name, value)], host=host), name)
            assert b"another site" in r.body, r.body
        assert job_total(s) == 1
        # job submission: any method, also GET (gearmand submits on GET too)
        for method in ("GET", "POST", "PUT", "DELETE"):
            refused(one_request(s, method, "/victim", bg + [("Origin", "http://evil.example")], b"2", host=host),
                    "Origin")
            refused(one_request(s, method, "/victim", bg + [("Referer", "http://evil.example/")], b"3",
                                host=host), "Referer")
        assert job_total(s) == 1 and admin_status(s, "victim")[0] == 1
        # reading is not changing: another origin may ask (the browser keeps the answer from its page)
        r = one_request(s, "GET", "/api/jobs", [("Origin", "http://evil.example")], host=host)
        assert r.status == 200 and r.json()["total"] == 1, r
        # the server's own page: Origin (or Referer) is the origin the request went to
        own_pages = [([("Origin", own)], host),
                     ([("Origin", "HTTP://LOCALHOST:%d" % port)], "localhost:%d" % port),
                     ([("Origin", "http://localhost")], "localhost:80"),
                     ([("Origin", "https://localhost")], "localhost"),            # behind a TLS proxy
                     ([("Referer", own + "/?refresh=1#jobs")], host),
                     ([("Origin", own), ("Referer", "http://evil.example/")], host)]  # Origin decides
        for i, (hdrs, vhost) in enumerate(own_pages):
            r = one_request(s, "POST", "/victim", bg + hdrs + [("X-Gearman-Unique", "own%d" % i)], b"4", host=vhost)
            assert r.status == 200 and r.h("x-gearman-command") == "JOB_CREATED", (hdrs, r)
        r = one_request(s, "POST", cancel, [("Origin", own)], host=host)
        assert r.status == 200 and r.json() == {"ok": True, "cancelled": h}, r
        # HTTP/1.0 without Host: the Origin's host must be one of the server's, any port
        r = one_request(s, "POST", "/victim", bg + [("Origin", "http://evil.example")], b"5", version="HTTP/1.0",
                        host=None)
        refused(r, "Origin")
        r = one_request(s, "POST", "/victim", bg + [("Origin", "http://localhost:3000"), ("X-Gearman-Unique", "v9")],
                        b"5", version="HTTP/1.0", host=None)
        assert r.status == 200, r
        with s.http() as c:
            c.send(build("POST", "/victim", [("Origin", own), ("Origin", "http://evil.example")], b"6", host=host))
            r = c.response()
            assert r.status == 400 and b"more than one Origin" in r.body, r
        log = [ln for ln in s.log_text().splitlines() if "http: refused" in ln]
        assert len(log) == 8 + 8 + 1, "\n".join(log)
        assert all(ln.startswith("WARNING") for ln in log), log


# ----------------------------------------------------------------------
# /health

@test
def test_health_is_live_and_ready_with_the_builtin_queue():
    with HttpServer() as s:
        r = get(s, "/health")
        assert r.status_line == "HTTP/1.1 200 OK", r
        assert r.json() == {"live": True, "ready": True, "status": "ok",
                            "queue": {"backend": "builtin", "healthy": True}}, r.body


@test
def test_health_is_not_ready_while_postgres_is_down():
    try:
        pg = services.Postgres().start()
    except services.Unavailable as e:
        gmtest.skip(str(e))
    try:
        with HttpServer("-q", "Postgres", "--libpq-conninfo", pg.conninfo) as s:
            r = get(s, "/health")
            assert r.status == 200 and r.json()["ready"] is True, r
            assert r.json()["queue"] == {"backend": "Postgres", "healthy": True}, r.body
            with s.http() as c:
                r = c.roundtrip("POST", "/pgfn", [("X-Gearman-Background", "true"), ("X-Gearman-Unique", "up")],
                                b"1")
                assert r.status == 200 and r.h("x-gearman-command") == "JOB_CREATED", r
            pg.stop("immediate")
            # the server notices on its next write
            with s.http() as c:
                r = c.roundtrip("POST", "/pgfn", [("X-Gearman-Background", "true"), ("X-Gearman-Unique", "down")],
                                b"2")
                assert r.status == 503 and r.h("x-gearman-error") == "QUEUE_ERROR", r
            r = wait_until(lambda: (lambda r: r if r.status == 503 else None)(get(s, "/health")), timeout=10,
                           what="/health to say not ready")
            assert r.status_line == "HTTP/1.1 503 Service Unavailable", r
            h = r.json()
            assert h["live"] is True and h["ready"] is False and h["queue"]["healthy"] is False, h
            assert metrics(s).get("gearman_queue_healthy", backend="Postgres") == 0
            # foreground jobs do not need the queue: still answered
            w = worker(s, "pgfn")
            with s.http() as c:
                c.request("POST", "/pgfn", [("X-Gearman-Unique", "fg")], b"fg")
                while True:
                    j = grab_wait(w)
                    if j[2] == b"fg":
                        break
                    w.send_packet("WORK_COMPLETE", j[0], b"")
                w.send_packet("WORK_COMPLETE", j[0], b"fg ok")
                check_job_response(c.response(), j[0], "WORK_COMPLETE", b"fg ok")
            pg.start()
            r = wait_until(lambda: (lambda r: r if r.status == 200 else None)(get(s, "/health")), timeout=20,
                           what="/health to say ready again")
            assert r.json()["ready"] is True and r.json()["queue"]["healthy"] is True, r.body
            with s.http() as c:
                r = c.roundtrip("POST", "/pgfn", [("X-Gearman-Background", "true"), ("X-Gearman-Unique", "again")],
                                b"3")
                assert r.status == 200 and r.h("x-gearman-command") == "JOB_CREATED", r
            w.close()
    finally:
        pg.__exit__(None, None, None)


# ----------------------------------------------------------------------
# /metrics

@test
def test_metrics_parse_and_match_known_load():
    weird = 'we"ird\\fn'
    with HttpServer("--exceptions") as s:
        w = worker(s, "mx")
        cl = s.conn()
        # five foreground jobs: three complete, one fails, one throws
        outcomes = ["WORK_COMPLETE", "WORK_COMPLETE", "WORK_FAIL", "WORK_COMPLETE", "WORK_EXCEPTION"]
        for i, what in enumerate(outcomes):
            cl.send_packet("SUBMIT_JOB", "mx", "fg%d" % i, "d%d" % i)
            cl.expect("JOB_CREATED")
            h, _, _ = grab(w)
            if what == "WORK_FAIL":
                w.send_packet(what, h)
            else:
                w.send_packet(what, h, b"r")
            cl.expect(what)
        # four background jobs by HTTP (high, normal x2, low); the worker runs the high one
        with s.http() as c:
            for u, prio in (("b1", None), ("b2", "low"), ("b3", "high"), ("b4", None)):
                hdrs = [("X-Gearman-Background", "true"), ("X-Gearman-Unique", u)]
                if prio:
                    hdrs.append(("X-Gearman-Priority", prio))
                assert c.roundtrip("POST", "/mx", hdrs, u).status == 200
        h, _, data = grab(w)
        assert data == b"b3"
        # a function whose name needs escaping, with two workers and one job
        w2 = worker(s, weird)
        w3 = worker(s, weird, "mx")
        cl.send_packet("SUBMIT_JOB_BG", weird, "", "x")
        cl.expect("JOB_CREATED")
        # open connections now: w, cl, w2, w3 and the /metrics request's own
        wait_until(lambda: metrics(s).get("gearman_connections") == 5, what="5 connections")
        m = metrics(s)
        assert m.get("gearman_up") == 1
        version = get_json(s, "/api/status")["server"]["version"]
        assert m.series("gearman_version_info") == {frozenset({("version", version)}): 1.0}, m.text
        want = {
            "gearman_jobs": 4, "gearman_jobs_running": 1, "gearman_jobs_waiting": 3, "gearman_workers": 2,
            "gearman_jobs_submitted_total": 9, "gearman_jobs_completed_total": 3,
            "gearman_jobs_failed_total": 2,
        }
        for name, v in want.items():
            assert m.get(name, function="mx") == v, (name, m.get(name, function="mx"))
        wantw = {
            "gearman_jobs": 1, "gearman_jobs_running": 0, "gearman_jobs_waiting": 1, "gearman_workers": 2,
            "gearman_jobs_submitted_total": 1, "gearman_jobs_completed_total": 0, "gearman_jobs_failed_total": 0,
        }
        for name, v in wantw.items():
            assert m.get(name, function=weird) == v, (name, m.get(name, function=weird))
            assert len(m.series(name)) == 2, m.series(name)
        assert m.get("gearman_jobs_queued", function="mx", priority="high") == 0
        assert m.get("gearman_jobs_queued", function="mx", priority="normal") == 2
        assert m.get("gearman_jobs_queued", function="mx", priority="low") == 1
        assert m.get("gearman_jobs_queued", function=weird, priority="normal") == 1
        # the label is escaped on the wire: we\"ird\\fn
        assert 'gearman_jobs{function="we\\"ird\\\\fn"} 1\n' in m.text, m.text
        assert m.get("gearman_jobs_total_in_memory") == 5
        assert m.get("gearman_uptime_seconds") >= 0
        assert m.get("gearman_queue_healthy", backend="builtin") == 1
        for name in ("gearman_queue_batches_total", "gearman_queue_records_total", "gearman_queue_failures_total",
                     "gearman_queue_pending_jobs"):
            assert m.get(name) == 0, name
        cap = m.get("gearman_ring_capacity")
        assert cap > 0
        for d in ("in", "out"):
            assert 0 <= m.get("gearman_ring_messages", direction=d) <= cap
        assert len(m.series("gearman_ring_messages")) == 2
        for name, t in m.types.items():
            assert t in ("counter", "gauge"), (name, t)
            assert (t == "counter") == name.endswith("_total"), (name, t)
            assert m.helps.get(name), "no HELP text for %s" % name
        # completing the running job moves the figures
        w.send_packet("WORK_COMPLETE", h, b"")
        sync(w)
        m = metrics(s)
        assert m.get("gearman_jobs_completed_total", function="mx") == 4
        assert m.get("gearman_jobs_running", function="mx") == 0
        assert m.get("gearman_jobs", function="mx") == 3
        # the same figures in /api/status
        st = get_json(s, "/api/status")
        assert st["totals"]["submitted"] == 10 and st["totals"]["completed"] == 4 and st["totals"]["failed"] == 2
        for x in (w, w2, w3, cl):
            x.close()
        wait_until(lambda: metrics(s).get("gearman_connections") == 1, what="only the /metrics connection")
        m = metrics(s)
        assert m.get("gearman_workers", function="mx") == 0


@test
def test_json_and_metrics_are_valid_utf8_whatever_the_names():
    # names and unique keys are bytes; what the server shows of them is
    # UTF-8, with U+FFFD for what is not (as a browser's decoder does it).
    # Function names cannot hold control characters (issue 12.7); unique
    # keys can, so each unique key carries some.
    names = [b"lead\xf5\x80\x80", b"ff\xff", b"overlong\xe0\x80\xaf", b"overlong2\xc0\xaf",
             b"surrogate\xed\xa0\x80", b"above\xf4\x90\x80\x80", b"f0over\xf0\x80\x80\x80", b"cut\xe2\x82",
             b"euro\xe2\x82\xac", b"emoji\xf0\x9f\x98\x80", b'quote"back\\slash']
    shown = {n: n.decode("utf-8", "replace") for n in names}
    with HttpServer() as s:
        w = s.conn()
        for n in names:
            w.send_packet("CAN_DO", n)
        sync(w)
        c = s.conn()
        for n in names:
            gmtest.submit(c, "SUBMIT_JOB_BG", n, b"u\xf5\n\x01\x1f\x7f" + n[-4:], b"d")
        for path in ("/api/status", "/api/workers", "/api/jobs?limit=1000", "/metrics"):
            body = get(s, path).body
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as e:
                fail("%s is not UTF-8: %s in %r" % (path, e, body[max(0, e.start - 40):e.end + 40]))
        st = get_json(s, "/api/status")
        assert sorted(f["name"] for f in st["functions"]) == sorted(shown.values()), st["functions"]
        wk = get_json(s, "/api/workers")["workers"]
        assert len(wk) == 1 and sorted(wk[0]["functions"]) == sorted(shown.values()), wk
        jobs = get_json(s, "/api/jobs?limit=1000")["jobs"]
        assert {j["function"]: j["unique"] for j in jobs} == {
            shown[n]: (b"u\xf5\n\x01\x1f\x7f" + n[-4:]).decode("utf-8", "replace") for n in names}, jobs
        m = metrics(s)
        for family in ("gearman_workers", "gearman_jobs", "gearman_jobs_queued"):
            got = {dict(k)["function"] for k in m.series(family)}
            assert got == set(shown.values()), (family, got)
        # and escaped as the exposition format says: backslash, quote
        assert 'gearman_workers{function="quote\\"back\\\\slash"} 1\n' in m.text, m.text
        c.close()
        w.close()


@test
def test_pages_stay_within_max_output_size_whatever_the_functions():
    # 2,000 functions whose 512-byte names are quotes (twice as long
    # escaped), 20 workers of 100 of them each, and 1,000 jobs with unique
    # keys of control bytes (six times as long escaped): /metrics was 21 MB,
    # /api/status 2.5 MB, /api/workers 2.0 MB, /api/jobs 1.6 MB.  With
    # --max-output-size 1 MiB each page stops at 1 MiB with the items that
    # fit, whole and in order, and says it was cut; /metrics lists the same
    # functions in every family.
    page, n = 1 << 20, 2000
    names = [b'"' * 506 + b"%06d" % i for i in range(n)]
    with HttpServer("--max-output-size", str(page)) as s:
        workers = []
        for k in range(20):
            w = s.conn()
            w.send(b"".join(gmtest.packet("CAN_DO", x) for x in names[k * 100:(k + 1) * 100]))
            sync(w)
            workers.append(w)
        c = s.conn()
        c.send(b"".join(gmtest.packet("SUBMIT_JOB_BG", names[i], b"\x01" * 60 + b"%04d" % i, b"d")
                        for i in range(1000)))
        for _ in range(1000):
            c.expect("JOB_CREATED")
        for path in ("/metrics", "/api/status", "/api/workers", "/api/jobs?limit=1000"):
            r = get(s, path)
            assert r.status == 200, r
            assert len(r.body) <= page, "%s: %d bytes past --max-output-size %d" % (path, len(r.body), page)
            assert len(r.body) > page // 2, "%s: cut at %d bytes, far short of %d" % (path, len(r.body), page)
        m = metrics(s)
        assert m.get("gearman_metrics_truncated") == 1
        listed = {dict(k)["function"] for k in m.series("gearman_jobs")}
        assert 0 < len(listed) < n, len(listed)
        assert listed == {x.decode() for x in names[:len(listed)]}, "not the first functions, in order"
        for family in ("gearman_jobs_running", "gearman_jobs_waiting", "gearman_workers",
                       "gearman_jobs_submitted_total", "gearman_jobs_completed_total", "gearman_jobs_failed_total",
                       "gearman_jobs_queued"):
            assert {dict(k)["function"] for k in m.series(family)} == listed, family
        assert "\n# %d of %d functions listed: this page stops at --max-output-size (%d bytes)\n" % (
            len(listed), n, page) in m.text
        assert m.get("gearman_connections") >= 21  # the server's own samples after the cut are there
        st = get_json(s, "/api/status")
        assert st["truncated"] is True and st["totals"]["functions"] == n, st["totals"]
        assert 0 < len(st["functions"]) < n, len(st["functions"])
        assert [f["name"] for f in st["functions"]] == [x.decode() for x in names[:len(st["functions"])]]
        ws = get_json(s, "/api/workers")
        assert ws["truncated"] is True and 0 < len(ws["workers"]) < 20, len(ws["workers"])
        assert all(len(x["functions"]) == 100 for x in ws["workers"]), "a worker was cut in the middle"
        js = get_json(s, "/api/jobs?limit=1000")
        assert js["truncated"] is True and js["total"] == 1000 and 0 < len(js["jobs"]) < 1000, len(js["jobs"])
        # a page that fits is whole and says so
        js = get_json(s, "/api/jobs?limit=10")
        assert js["truncated"] is False and len(js["jobs"]) == 10, js
        for x in workers + [c]:
            x.close()


@test
def test_metrics_queue_figures_grow_with_sqlite():
    d = tempfile.mkdtemp(prefix="gmtest-http-")
    db = os.path.join(d, "queue.db")
    with HttpServer("-q", "libsqlite3", "--libsqlite3-db", db) as s:
        m0 = metrics(s)
        assert m0.get("gearman_queue_healthy", backend="libsqlite3") == 1
        b0, r0 = m0.get("gearman_queue_batches_total"), m0.get("gearman_queue_records_total")
        assert m0.get("gearman_queue_failures_total") == 0
        with s.http() as c:
            for i in range(3):
                r = c.roundtrip("POST", "/sq", [("X-Gearman-Background", "true"), ("X-Gearman-Unique", "s%d" % i)],
                                "d%d" % i)
                assert r.status == 200 and r.h("x-gearman-command") == "JOB_CREATED", r
        m = wait_until(lambda: (lambda m: m if m.get("gearman_queue_records_total") >= r0 + 3 else None)(metrics(s)),
                       what="3 queue records")
        assert m.get("gearman_queue_batches_total") > b0, m.text
        assert 1 <= m.get("gearman_queue_batches_total") - b0 <= 3
        assert m.get("gearman_queue_pending_jobs") == 0
        assert m.get("gearman_queue_failures_total") == 0
        st = get_json(s, "/api/status")["server"]["queue"]
        assert st["backend"] == "libsqlite3" and st["healthy"] is True, st
        assert st["records"] == m.get("gearman_queue_records_total"), st
        assert st["batches"] == m.get("gearman_queue_batches_total"), st
        # completing the jobs writes their removals
        w = worker(s, "sq")
        for _ in range(3):
            h, _, _ = grab(w)
            w.send_packet("WORK_COMPLETE", h, b"")
        sync(w)
        wait_until(lambda: metrics(s).get("gearman_queue_records_total") >= r0 + 6, what="3 removal records")
        h = get(s, "/health")
        assert h.status == 200 and h.json()["queue"] == {"backend": "libsqlite3", "healthy": True}, h
        w.close()


@test
def test_nothing_is_answered_before_the_queue_is_replayed():
    # readiness during a replay: the server replays its durable queue before
    # it listens, so the first answer it gives already has every job
    d = tempfile.mkdtemp(prefix="gmtest-http-")
    args = ["-q", "libsqlite3", "--libsqlite3-db", os.path.join(d, "queue.db")]
    n = 3000
    with HttpServer(*args) as s:
        with s.conn() as c:
            c.send(b"".join(gmtest.packet("SUBMIT_JOB_BG", "replayed", "u%d" % i, "data %d" % i)
                            for i in range(n)))
            for _ in range(n):
                c.expect("JOB_CREATED")
    s2 = HttpServer(*args)
    first = {}

    def poll():
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                sock = socket.create_connection(("127.0.0.1", s2.http_port), timeout=5)
            except OSError:
                time.sleep(0.001)
                continue
            sock.sendall(build("GET", "/api/status", [("Connection", "close")]))
            out = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
            sock.close()
            first["raw"] = out
            return
    t = threading.Thread(target=poll)
    t.start()
    with s2:
        t.join()
        assert "raw" in first, "the HTTP port never answered"
        head, _, body = first["raw"].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK"), first["raw"][:300]
        st = json.loads(body)
        assert st["totals"]["jobs"] == n and st["server"]["queue"]["healthy"] is True, st
        h = get(s2, "/health")
        assert h.status == 200 and h.json()["ready"] is True, h


# ----------------------------------------------------------------------
# the job lifecycle: dead letters, policies, a job's state, the actions

def admin_ok(s, line):
    with s.conn() as a:
        got = a.admin(line)
    assert got == b"OK\r\n", (line, got)


def fail_attempt(w, how="WORK_FAIL", data=b""):
    """The worker takes the next job (a retry may still be waiting out its
    backoff) and fails it; returns its handle."""
    h, _, _ = grab_wait(w)
    if how == "WORK_FAIL":
        w.send_packet(how, h)
    else:
        w.send_packet(how, h, data)
    sync(w)
    return h


def dead_of(s, path="/api/dead"):
    """The array /api/dead answers, with its two headers."""
    r = get(s, path)
    assert r.status == 200 and r.h("cache-control") == "no-cache", r
    body = r.json()
    assert isinstance(body, list), body
    return body, int(r.h("x-gearman-total")), r.h("x-gearman-truncated")


def admin_lines(s, line):
    with s.conn() as a:
        out = a.admin(line).decode()
    assert out.endswith(".\n"), out
    return [x.split("\t") for x in out[:-2].splitlines()]


@test
def test_dead_letters_job_state_and_their_exact_json():
    with HttpServer() as s:
        admin_ok(s, "policy deadfn retries=1 backoff=0")
        admin_ok(s, "policy other retries=0")
        w = worker(s, "deadfn", "other")
        c = s.conn()
        t0 = int(time.time())
        h1 = gmtest.submit(c, "SUBMIT_JOB_BG", "deadfn", "u1", "d1")
        assert fail_attempt(w) == h1
        boom = b'boom "x"\n\xff'
        assert fail_attempt(w, "WORK_EXCEPTION", boom) == h1            # its second and last attempt
        h2 = gmtest.submit(c, "SUBMIT_JOB_BG", "other", "u\x01two", "d2")
        assert fail_attempt(w) == h2
        wait_until(lambda: dead_of(s)[1] == 2, what="two dead letters")
        dead, total, cut = dead_of(s)
        assert total == 2 and cut == "false", (total, cut)
        assert [sorted(x) for x in dead] == [
            ["attempts", "died_at", "exception", "function", "handle", "reason", "unique"],
            ["attempts", "died_at", "function", "handle", "reason", "unique"]], dead
        assert all(t0 <= x["died_at"] <= time.time() + 1 for x in dead), dead
        assert dead[0] == {"handle": h1, "function": "deadfn", "unique": "u1", "attempts": 2,
                           "died_at": dead[0]["died_at"], "reason": "exception",
                           "exception": boom.decode("utf-8", "replace")}, dead[0]
        assert dead[1] == {"handle": h2, "function": "other", "unique": "u\x01two", "attempts": 1,
                           "died_at": dead[1]["died_at"], "reason": "fail"}, dead[1]
        # the admin port says the same
        shown = admin_lines(s, "show dead")
        assert [(x[0], x[1], int(x[3]), int(x[4]), x[5]) for x in shown] == [
            (d["handle"], d["function"], d["attempts"], d["died_at"], d["reason"]) for d in dead], shown
        # by function, paged
        assert dead_of(s, "/api/dead?function=other") == ([dead[1]], 1, "false")
        assert dead_of(s, "/api/dead?function=nosuch") == ([], 0, "false")
        assert dead_of(s, "/api/dead?offset=1") == ([dead[1]], 2, "false")
        assert dead_of(s, "/api/dead?limit=1") == ([dead[0]], 2, "false")
        assert dead_of(s, "/api/dead?limit=0") == ([], 2, "false")
        assert dead_of(s, "/api/dead?offset=99999&limit=99999") == ([], 2, "false")
        st = get_json(s, "/api/status")["totals"]
        assert st["dead"] == 2 and st["jobs"] == 0 and st["failed"] == 2, st
        # a job's state, as `show job`, with its handle percent-encoded or not
        want = {"handle": h1, "function": "deadfn", "unique": "u1", "state": "dead", "attempts": 2, "result_b64": ""}
        assert get_json(s, "/api/jobs/" + h1) == want
        assert get_json(s, "/api/jobs/" + h1.replace(":", "%3A")) == want
        assert admin_lines(s, "show job " + h1) == [[h1, "deadfn", "u1", "dead", "2", "0"]]
        h3 = gmtest.submit(c, "SUBMIT_JOB_BG", "deadfn", "u3", "d3")
        assert get_json(s, "/api/jobs/" + h3) == {"handle": h3, "function": "deadfn", "unique": "u3",
                                                  "state": "queued", "attempts": 0, "result_b64": ""}
        assert grab(w)[0] == h3
        assert get_json(s, "/api/jobs/" + h3)["state"] == "running"
        assert get_json(s, "/api/jobs/" + h3)["attempts"] == 1
        w.send_packet("WORK_FAIL", h3)
        sync(w)
        j = get_json(s, "/api/jobs/" + h3)
        assert j["state"] in ("scheduled", "queued") and j["attempts"] == 1, j
        # a background job that ended: its kept outcome, with the start of its result
        h4 = gmtest.submit(c, "SUBMIT_JOB_BG", "other", "u4", "d4")
        w2 = worker(s, "other")                    # w may be given the retry of h3 first
        assert grab_wait(w2)[0] == h4
        w2.send_packet("WORK_COMPLETE", h4, b"\x00result\xff")
        sync(w2)
        w2.close()
        assert get_json(s, "/api/jobs/" + h4) == {"handle": h4, "function": "other", "unique": "u4", "state": "complete",
                                                  "attempts": 1, "result_b64": "AHJlc3VsdP8="}
        assert admin_lines(s, "show job " + h4) == [[h4, "other", "u4", "complete", "1", "8"]]
        for bad in (PREFIX + ":999999", "nosuch", "x" * 300, "%zz"):
            r = get(s, "/api/jobs/" + bad)
            assert r.status == 404 and r.json()["error"] == "unknown job", (bad, r)
        assert get(s, "/api/jobs/" + PREFIX + ":999999").json() == {"error": "unknown job",
                                                                    "handle": PREFIX + ":999999"}
        assert get(s, "/api/jobs/%s/more" % h1).status == 404
        assert get(s, "/api/dead/" + h1).status == 404
        c.close()
        w.close()


@test
def test_dead_letters_retry_and_discard_over_http():
    with HttpServer() as s:
        admin_ok(s, "policy rd retries=0")
        w = worker(s, "rd")
        c = s.conn()
        hs = []
        for i in range(3):
            hs.append(gmtest.submit(c, "SUBMIT_JOB_BG", "rd", "k%d" % i, "d%d" % i))
            assert fail_attempt(w) == hs[-1]
        wait_until(lambda: dead_of(s)[1] == 3, what="three dead letters")
        with s.http() as hc:
            r = hc.roundtrip("GET", "/api/dead/%s/retry" % hs[0])
            assert r.status_line == "HTTP/1.1 405 Method Not Allowed" and r.h("allow") == "POST", r
            r = hc.roundtrip("POST", "/api/dead/%s/frobnicate" % hs[0])
            assert r.status == 404 and r.json() == {"error": "not found"}, r
            assert dead_of(s)[1] == 3
            r = hc.roundtrip("POST", "/api/dead/%s/retry" % hs[0].replace(":", "%3a"))
            assert r.status == 200 and r.json() == {"ok": True, "retried": hs[0]}, r
            assert [x["handle"] for x in dead_of(s)[0]] == hs[1:]
            assert get_json(s, "/api/jobs/" + hs[0]) == {"handle": hs[0], "function": "rd", "unique": "k0",
                                                        "state": "queued", "attempts": 0, "result_b64": ""}
            assert admin_status(s, "rd") == (1, 0, 1)
            r = hc.roundtrip("POST", "/api/dead/%s/retry" % hs[0])          # not a dead letter now
            assert r.status == 404 and r.json() == {"error": "no dead letter has that handle", "handle": hs[0]}, r
            r = hc.roundtrip("POST", "/api/dead/%s/discard" % hs[1])
            assert r.status == 200 and r.json() == {"ok": True, "discarded": hs[1]}, r
            assert [x["handle"] for x in dead_of(s)[0]] == [hs[2]]
            assert get(s, "/api/jobs/" + hs[1]).status == 404
            assert [x[0] for x in admin_lines(s, "show dead")] == [hs[2]]
            r = hc.roundtrip("POST", "/api/dead/%s/discard" % hs[1])
            assert r.status == 404, r
            r = hc.roundtrip("POST", "/api/dead/%s:999/retry" % PREFIX)
            assert r.status == 404, r
        # the retried job runs again
        j = grab_wait(w)
        assert j[0] == hs[0] and j[2] == b"d0", j
        st = get_json(s, "/api/status")["totals"]
        assert st["dead"] == 1 and st["jobs"] == 1, st
        c.close()
        w.close()


@test
def test_functions_pause_resume_purge_and_policies_over_http():
    with HttpServer() as s:
        with s.http() as hc:
            r = hc.roundtrip("GET", "/api/functions/pz/pause")
            assert r.status == 405 and r.h("allow") == "POST", r
            r = hc.roundtrip("POST", "/api/functions/pz/pause")
            assert r.status == 200 and r.json() == {"ok": True, "function": "pz", "paused": True}, r
        admin_ok(s, "policy zz retries=3 timeout=30 concurrency=4 backoff=250 max_backoff=9000")
        r = get(s, "/api/policies")
        assert r.status == 200 and r.h("x-gearman-total") == "2" and r.h("x-gearman-truncated") == "false", r
        pol = r.json()
        assert pol == [
            {"function": "pz", "retries": 0, "backoff": 1000, "max_backoff": 300000, "timeout": 0, "concurrency": 0,
             "paused": True},
            {"function": "zz", "retries": 3, "backoff": 250, "max_backoff": 9000, "timeout": 30, "concurrency": 4,
             "paused": False}], pol
        keys = ["retries", "backoff", "max_backoff", "timeout", "concurrency", "paused"]
        shown = admin_lines(s, "show policies")
        assert [x[0] for x in shown] == [p["function"] for p in pol], shown
        for line, p in zip(shown, pol):
            assert line[1:] == ["%s=%d" % (k, p[k]) for k in keys], (line, p)
        fns = {f["name"]: f for f in get_json(s, "/api/status")["functions"]}
        assert fns["zz"]["policy"] == {k: pol[1][k] for k in keys}, fns["zz"]
        # paused: nothing handed out; resume hands it out
        w = worker(s, "pz", "plain")
        c = s.conn()
        h = gmtest.submit(c, "SUBMIT_JOB_BG", "pz", "p1", "x")
        gmtest.submit(c, "SUBMIT_JOB_BG", "plain", "q1", "x")
        assert get_json(s, "/api/status")["functions"][-1]["policy"] is None
        assert grab(w)[1] == "plain" and grab(w) is None
        with s.http() as hc:
            r = hc.roundtrip("POST", "/api/functions/pz/resume")
            assert r.status == 200 and r.json() == {"ok": True, "function": "pz", "paused": False}, r
        assert grab_wait(w)[0] == h
        assert get_json(s, "/api/policies") == pol[1:]                 # no policy set, not paused: not listed
        # purge removes what waits, leaves what runs
        for i in range(2):
            gmtest.submit(c, "SUBMIT_JOB_BG", "pz", "p%d" % (i + 2), "x")
        with s.http() as hc:
            r = hc.roundtrip("POST", "/api/functions/pz/purge")
            assert r.status == 200 and r.json() == {"ok": True, "function": "pz", "purged": 2}, r
            assert get_json(s, "/api/jobs?function=pz")["total"] == 1
            # names: unknown, percent-encoded, refused
            for action in ("resume", "purge"):
                r = hc.roundtrip("POST", "/api/functions/nosuch/" + action)
                assert r.status == 404 and r.json() == {"error": "no such function", "function": "nosuch"}, r
            r = hc.roundtrip("POST", "/api/functions/a%2Fb%20c/pause")
            assert r.status == 200 and r.json()["function"] == "a/b c", r
            for bad in ("bad%01name", "x" * 513, "%00"):
                r = hc.roundtrip("POST", "/api/functions/%s/pause" % bad)
                assert r.status == 400 and "function name" in r.json()["error"], (bad, r)
            r = hc.roundtrip("POST", "/api/functions/pz/stop")
            assert r.status == 404, r
            r = hc.roundtrip("POST", "/api/functions//pause")
            assert r.status == 404, r
        assert [p["function"] for p in get_json(s, "/api/policies")] == ["zz", "a/b c"]
        log = s.log_text()
        assert "pz paused by 127.0.0.1:" in log and "purge of pz by 127.0.0.1:" in log, log[-2000:]
        c.close()
        w.close()


@test
def test_lifecycle_actions_follow_the_cancel_rules():
    # the Origin rule (any peer) ...
    with HttpServer() as s:
        admin_ok(s, "policy orf retries=0")
        host = "127.0.0.1:%d" % s.http_port
        for path in ("/api/functions/orf/pause", "/api/functions/orf/purge", "/api/dead/%s:1/retry" % PREFIX):
            refused(one_request(s, "POST", path, [("Origin", "http://evil.example")], host=host), "Origin")
        assert get_json(s, "/api/policies")[0]["paused"] is False
        r = one_request(s, "POST", "/api/functions/orf/pause", [("Origin", "http://" + host)], host=host)
        assert r.status == 200, r
    # ... and, from another host, --http-allow-remote-actions
    for ip, allow, s in remote_servers():
        admin_ok(s, "policy rem retries=0")
        w = worker(s, "rem")
        with s.conn() as c:
            h = gmtest.submit(c, "SUBMIT_JOB_BG", "rem", "r", "x")
        fail_attempt(w)
        with s.http(host=ip) as c:
            assert c.roundtrip("GET", "/api/dead").status == 200          # reading is for anyone
            assert c.roundtrip("GET", "/api/policies").status == 200
            for path in ("/api/functions/rem/pause", "/api/functions/rem/resume", "/api/functions/rem/purge",
                         "/api/dead/%s/retry" % h):
                r = c.roundtrip("POST", path)
                if allow:
                    assert r.status == 200 and r.json()["ok"] is True, (path, r)
                else:
                    assert r.status_line == "HTTP/1.1 403 Forbidden", (path, r)
                    assert "http-allow-remote-actions" in r.json()["error"], r
        assert get_json(s, "/api/status")["totals"]["dead"] == (0 if allow else 1)
        w.close()


@test
def test_metrics_count_retries_timeouts_and_dead_letters():
    with HttpServer("--dead-letter-max", "1") as s:
        admin_ok(s, "policy mf retries=1 backoff=0 timeout=1")
        w = worker(s, "mf", "plain")
        c = s.conn()
        a = gmtest.submit(c, "SUBMIT_JOB_BG", "mf", "a", "x")
        m = metrics(s)
        for name in ("gearman_job_retries_total", "gearman_job_timeouts_total", "gearman_dead_jobs",
                     "gearman_dead_jobs_total"):
            assert m.get(name, function="mf") == 0, name
            assert not m.has(name, function="plain"), name       # only functions with a policy
            assert m.types[name] == ("counter" if name.endswith("_total") else "gauge") and m.helps[name], name
        assert m.get("gearman_dead_jobs_dropped_total") == 0 and m.types["gearman_dead_jobs_dropped_total"] == "counter"
        assert m.has("gearman_jobs", function="plain")
        # a, first attempt: fails (a retry); second: runs past its time limit (a death)
        assert fail_attempt(w) == a
        assert grab_wait(w)[0] == a
        wait_until(lambda: dead_of(s)[1] == 1, timeout=5, what="the attempt to time out")
        assert dead_of(s)[0][0]["reason"] == "timeout"
        m = metrics(s)
        assert (m.get("gearman_job_retries_total", function="mf"), m.get("gearman_job_timeouts_total", function="mf"),
                m.get("gearman_dead_jobs", function="mf"), m.get("gearman_dead_jobs_total", function="mf")) == (1, 1, 1, 1)
        # b fails twice: a second death pushes a out (--dead-letter-max 1)
        b = gmtest.submit(c, "SUBMIT_JOB_BG", "mf", "b", "x")
        assert fail_attempt(w) == b and fail_attempt(w) == b
        m = metrics(s)
        assert (m.get("gearman_job_retries_total", function="mf"), m.get("gearman_job_timeouts_total", function="mf"),
                m.get("gearman_dead_jobs", function="mf"), m.get("gearman_dead_jobs_total", function="mf")) == (2, 1, 1, 2)
        assert m.get("gearman_dead_jobs_dropped_total") == 1
        assert [x["handle"] for x in dead_of(s)[0]] == [b]
        with s.http() as hc:
            assert hc.roundtrip("POST", "/api/dead/%s/discard" % b).status == 200
        m = metrics(s)
        assert m.get("gearman_dead_jobs", function="mf") == 0 and m.get("gearman_dead_jobs_total", function="mf") == 2
        c.close()
        w.close()


@test
def test_dead_letter_pages_are_bounded():
    # 1,005 dead letters: a page holds at most 1,000; 60 whose exceptions are
    # 4 KiB of control bytes (six times as long escaped) pass a 1 MiB page,
    # which stops at the last whole one and says so
    page = 1 << 20
    with HttpServer("--max-output-size", str(page)) as s:
        admin_ok(s, "policy many retries=0")
        admin_ok(s, "policy big retries=0")
        w = worker(s, "many", "big")
        c = s.conn()
        n = 1005
        c.send(b"".join(gmtest.packet("SUBMIT_JOB_BG", "many", "m%d" % i, "x") for i in range(n)))
        for _ in range(n):
            c.expect("JOB_CREATED")
        for _ in range(n):
            w.send_packet("GRAB_JOB")
            h = w.recv_packet().fields(3)[0]
            w.send_packet("WORK_FAIL", h)
        sync(w)
        for i in range(60):
            gmtest.submit(c, "SUBMIT_JOB_BG", "big", "b%d" % i, "x")
            fail_attempt(w, "WORK_EXCEPTION", b"\x01" * 5000)
        dead, total, cut = dead_of(s, "/api/dead?function=many&limit=5000")
        assert total == n and len(dead) == 1000 and cut == "false", (total, len(dead), cut)
        assert [x["unique"] for x in dead] == ["m%d" % i for i in range(1000)]
        dead, total, _ = dead_of(s, "/api/dead?function=many&offset=1000")
        assert [x["unique"] for x in dead] == ["m%d" % i for i in range(1000, n)], dead
        r = get(s, "/api/dead?function=big&limit=1000")
        assert len(r.body) <= page, len(r.body)
        dead = r.json()
        assert r.h("x-gearman-truncated") == "true" and r.h("x-gearman-total") == "60", r
        assert 0 < len(dead) < 60 and [x["unique"] for x in dead] == ["b%d" % i for i in range(len(dead))]
        assert all(x["exception"] == "\x01" * 4096 for x in dead)
        c.close()
        w.close()


# ----------------------------------------------------------------------
# the monitor page

@test
def test_monitor_page_is_self_contained_html():
    with HttpServer() as s:
        r = get(s, "/")
        assert r.status == 200 and r.h("content-type").startswith("text/html"), r
        page = r.body.decode("utf-8")
        assert "<html" in page.lower() and "</html>" in page.lower(), page[:200]
        assert not re.search(r"(?i)https?://", page), re.findall(r"(?i)https?://\S{0,60}", page)
        # protocol-relative references (//cdn.example/x.js) load from elsewhere too
        rel = re.findall(r"""(?i)(?:\b(?:src|href|action)\s*=\s*["']?|url\(\s*["']?|@import\s+["'])//[^\s"'<>)]*""",
                         page)
        assert not rel, "protocol-relative URLs in the monitor page: %r" % rel
        r2 = get(s, "/index.html")
        assert r2.status == 200 and r2.body == r.body
        r = get(s, "/", method="POST", body=b"x")
        assert r.status == 405, r


if __name__ == "__main__":
    gmtest.main()
