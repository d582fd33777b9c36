#!/usr/bin/env python3
"""gearmand's command line, config file, log file, daemon mode and signals,
as gearmand 1.1.20 has them (reference gearmand-1.1.20.md section 4), with
the deliberate differences of design section 9 (-t default: one I/O thread
per CPU).

Error messages are compared by shape with 1.1.20's: `<argv0>: <message>` on
stderr, nothing on stdout, exit status 1.
"""

import atexit
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gmtest  # noqa: E402
from gmtest import Server, test, fail, skip, wait_until  # noqa: E402

BIN = gmtest.GEARMAND
TMP = tempfile.mkdtemp(prefix="gmtest-options-")
atexit.register(shutil.rmtree, TMP, True)
EMPTY_CONF = os.path.join(TMP, "empty.conf")
open(EMPTY_CONF, "w").close()


# ----------------------------------------------------------------------
# helpers

def run(*args, env=None, timeout=15):
    """Runs gearmand with args (an empty config file first, so no system
    config leaks in); returns (status, stdout, stderr) as text."""
    r = subprocess.run([BIN, "--config-file", EMPTY_CONF] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def run_bare(*args, timeout=15):
    r = subprocess.run([BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def expect_error(args, message_re):
    """The option error shape of 1.1.20: exit 1, nothing on stdout, and
    `<argv0>: <message>` on stderr (--check-args first, so that a server
    that misses the error exits instead of starting)."""
    rc, out, err = run("--check-args", *args)
    assert rc == 1, "%r: exit %s (stderr %r)" % (args, rc, err)
    assert out == "", "%r: stdout %r" % (args, out)
    want = "^" + re.escape(BIN) + ": " + message_re + "\n$"
    assert re.match(want, err), "%r: stderr %r does not match %r" % (args, err, want)


class Proc:
    """A gearmand started with exactly the given arguments (plus the empty
    config file unless one is given); waits until `port` accepts."""

    def __init__(self, *args, port=None, env=None, config=True):
        self.port = port
        argv = [BIN] + (["--config-file", EMPTY_CONF] if config else []) + list(args)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, **(env or {})))
        self.pid = self.proc.pid
        if port:
            deadline = time.time() + 10
            while True:
                if self.proc.poll() is not None:
                    out, err = self.proc.communicate()
                    fail("gearmand exited with %s: %r %r" % (self.proc.returncode, out, err))
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        self.kill()
                        fail("gearmand did not listen on %d" % port)
                    time.sleep(0.03)

    def conn(self):
        return gmtest.Conn(self.port)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            fail("gearmand still running %ss after signal %s" % (timeout, sig))
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def tmpfile(name):
    d = tempfile.mkdtemp(dir=TMP)
    return os.path.join(d, name)


def threads_of(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def alive(pid):
    """True if pid runs (a zombie counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def exits(server, timeout=5.0):
    """Waits for a Server to exit by itself; returns its status."""
    try:
        return server.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        fail("gearmand still running %.0fs later" % timeout)


def admin(port, line):
    with gmtest.Conn(port) as a:
        return a.burst(line.encode() + b"\r\n")


def sync(conn):
    """Returns once the dispatcher has handled everything conn sent before
    (a GET_STATUS goes through it, an ECHO_REQ might not)."""
    conn.send_packet("GET_STATUS", "sync")
    conn.expect("STATUS_RES")


# ----------------------------------------------------------------------
# --help, -V

# Every option of 1.1.20's --help (reference 4.1), as its left column.
# None: a default must be shown but it depends on the build (paths) or is
# a deliberate difference (-t: one thread per CPU, design 9).
HELP_ENTRIES = [
    ("-b [ --backlog ] arg", "32"),
    ("-d [ --daemon ]", ""),
    ("--exceptions", ""),
    ("-f [ --file-descriptors ] arg", ""),
    ("-h [ --help ]", ""),
    ("-j [ --job-retries ] arg", "0"),
    ("--job-handle-prefix arg", ""),
    ("--hashtable-buckets arg", "991"),
    ("--keepalive", ""),
    ("--keepalive-idle arg", "-1"),
    ("--keepalive-interval arg", "-1"),
    ("--keepalive-count arg", "-1"),
    ("-l [ --log-file ] arg", None),
    ("-L [ --listen ] arg", ""),
    ("-P [ --pid-file ] arg", None),
    ("-r [ --protocol ] arg", ""),
    ("-R [ --round-robin ]", ""),
    ("-q [ --queue-type ] arg", "builtin"),
    ("--config-file arg", None),
    ("--syslog", ""),
    ("--coredump", ""),
    ("-t [ --threads ] arg", None),
    ("-u [ --user ] arg", ""),
    ("--verbose arg", "ERROR"),
    ("-V [ --version ]", ""),
    ("-w [ --worker-wakeup ] arg", "0"),
    ("--http-port arg", "8080"),
    ("-p [ --port ] arg", "4730"),
    ("--ssl", ""),
    ("--ssl-ca-file arg", ""),
    ("--ssl-certificate arg", ""),
    ("--ssl-key arg", ""),
    ("--libmemcached-servers arg", ""),
    ("--libmemcached-prefix arg", "gear_"),
    ("--libsqlite3-db arg", ""),
    ("--store-queue-on-shutdown", ""),
    ("--libsqlite3-table arg", "gearman_queue"),
    ("--libpq-conninfo arg", ""),
    ("--libpq-table arg", "queue"),
    ("--redis-server arg", ""),
    ("--redis-port arg", ""),
    ("--redis-password arg", ""),
    ("--redis-prefix arg", ""),
    ("--mysql-host arg", "localhost"),
    ("--mysql-port arg", "3306"),
    ("--mysql-user arg", ""),
    ("--mysql-password arg", ""),
    ("--mysql-db arg", ""),
    ("--mysql-table arg", "gearman_queue"),
    ("--libdrizzle-host arg", ""),
    ("--libdrizzle-port arg", ""),
    ("--libdrizzle-uds arg", ""),
    ("--libdrizzle-user arg", ""),
    ("--libdrizzle-password arg", ""),
    ("--libdrizzle-db arg", ""),
    ("--libdrizzle-table arg", ""),
    ("--libdrizzle-mysql", ""),
    ("--libtokyocabinet-file arg", ""),
    ("--libtokyocabinet-optimize arg", "true"),
    # ours
    ("--max-packet-size arg", "67108864"),
]


@test
def test_help_lists_every_option_with_its_default():
    for flag in ("--help", "-h"):
        rc, out, err = run(flag)
        assert rc == 0 and err == "", (flag, rc, err)
        entries = {}
        for line in out.splitlines():
            m = re.match(r"^  (-\S.*?)(?: \(=([^)\s]*)\))?(?:\s{2,}.*)?$", line)
            if m:
                entries[m.group(1).rstrip()] = m.group(2)
        for left, default in HELP_ENTRIES:
            assert left in entries, "%s: %r missing from --help" % (flag, left)
            got = entries[left]
            if default is None:
                assert got, "%r shows no default" % left
            elif default == "":
                assert got is None, "%r shows a default %r; 1.1.20 shows none" % (left, got)
            else:
                assert got == default, "%r: default %r, 1.1.20 %r" % (left, got, default)
        # the paths keep gearmand's names
        assert entries["-l [ --log-file ] arg"].endswith("/log/gearmand.log"), entries
        assert entries["-P [ --pid-file ] arg"].endswith("/gearmand.pid"), entries
        assert entries["--config-file arg"].endswith("/gearmand.conf"), entries
        # sections, as boost prints them
        for section in ("General options:", "HTTP:", "Gear:", "libsqlite3:", "Postgres:",
                        "libmemcached:"):
            assert re.search(r"(?m)^" + re.escape(section) + r"$", out), section
        # each group once, its options together (gearmand(8) follows these groups)
        headings = re.findall(r"(?m)^(\S.*):$", out)
        assert len(headings) == len(set(headings)), "a group is split in --help: %r" % headings


@test
def test_help_names_the_queue_types_this_build_has():
    # --help ends with the -q types this build has, and for each optional
    # backend it lacks the library configure did not find (gm_missing_queues)
    rc, out, err = run("--help")
    line = [ln for ln in out.splitlines() if ln.startswith("Queue types in this build (-q):")]
    assert rc == 0 and len(line) == 1 and line[0].endswith("."), out[-800:]
    names = line[0].split(":", 1)[1].rstrip(".").replace(",", " ").split()
    assert "builtin" in names, line
    config = os.path.join(os.path.dirname(os.path.dirname(BIN)), "config.h")
    defines = ""
    if os.path.exists(config):
        with open(config) as f:
            defines = f.read()
    for define, name, lib in (("HAVE_LIBMARIADB", "MySQL", "libmariadb"), ("HAVE_HIREDIS", "redis", "hiredis"),
                              ("HAVE_TOKYOCABINET", "libtokyocabinet", "tokyocabinet")):
        missing = re.search(r"(?m)^Not built \(configure did not find %s.*\): %s\.$" % (lib, name), out)
        assert (name in names) != bool(missing), (name, line, out[-500:])
        if defines:
            assert (name in names) == ("#define %s 1" % define in defines), (name, line)
    # then whether it can tell systemd it is ready (the unit's Type=notify)
    built = "Readiness notification to systemd (Type=notify): built in (libsystemd)."
    missing = "Not built (configure did not find libsystemd): readiness notification to systemd (Type=notify)."
    lines = out.splitlines()
    assert (built in lines) != (missing in lines), out[-500:]
    if defines:
        assert (built in lines) == ("#define HAVE_LIBSYSTEMD 1" in defines), out[-500:]


@test
def test_help_wins_over_a_bad_port_but_not_over_a_bad_option():
    rc, out, err = run("--help", "-p", "1")
    assert rc == 0 and "--port" in out
    expect_error(["--help", "--nope"], r"unrecognised option '--nope'")


@test
def test_version_prints_a_blank_line_then_name_version_url():
    for flag in ("-V", "--version"):
        rc, out, err = run(flag)
        assert rc == 0 and err == "", (flag, rc, err)
        assert re.match(r"^\ngearmand \S+ - \S+\n$", out), "%s printed %r" % (flag, out)


# ----------------------------------------------------------------------
# option errors (shapes of 1.1.20's boost::program_options messages)

@test
def test_unknown_option_exits_1():
    expect_error(["--bogus"], r"unrecognised option '--bogus'")
    expect_error(["--bogus=3"], r"unrecognised option '--bogus=3'")
    expect_error(["-v"], r"unrecognised option '-v'")
    expect_error(["-Z"], r"unrecognised option '-Z'")
    # no abbreviations
    expect_error(["--log", "x"], r"unrecognised option '--log'")


@test
def test_stray_word_exits_1():
    expect_error(["stray"], r"unrecognised option 'stray'")
    expect_error(["-p", "4730", "4731"], r"unrecognised option '4731'")


@test
def test_bad_value_exits_1():
    expect_error(["-t", "abc"], r"the argument \('abc'\) for option '--threads' is invalid")
    expect_error(["--threads=abc"], r"the argument \('abc'\) for option '--threads' is invalid")
    expect_error(["--backlog", "x1"], r"the argument \('x1'\) for option '--backlog' is invalid")
    expect_error(["--verbose", "LOUD"], r"Invalid value for --verbose supplied")
    # the level names are upper case only, as in 1.1.20
    expect_error(["--verbose=info"], r"Invalid value for --verbose supplied")
    expect_error(["--exceptions=1"], r"option '--exceptions' does not take any arguments")


@test
def test_missing_argument_exits_1():
    expect_error(["-p"], r"the required argument for option '--port' is missing")
    expect_error(["--threads"], r"the required argument for option '--threads' is missing")
    expect_error(["--log-file"], r"the required argument for option '--log-file' is missing")


@test
def test_missing_argument_before_another_option_exits_1():
    # 1.1.20 does not take the next option as the value: `-l -d` is an
    # error, not a log file named "-d" (and no daemon)
    expect_error(["-l", "-d"], r"the required argument for option '--log-file' is missing")
    expect_error(["--job-handle-prefix", "-R"],
                 r"the required argument for option '--job-handle-prefix' is missing")


@test
def test_repeated_option_exits_1():
    expect_error(["-p", "1", "-p", "2"], r"option '--port' cannot be specified more than once")
    expect_error(["--port=1", "-p", "2"], r"option '--port' cannot be specified more than once")
    expect_error(["--verbose", "INFO", "--verbose", "INFO"],
                 r"option '--verbose' cannot be specified more than once")


@test
def test_hashtable_buckets_zero_exits_1():
    rc, out, err = run("--check-args", "--hashtable-buckets", "0")
    assert rc == 1 and out == "" and err.startswith(BIN + ": ") and "hashtable-buckets" in err, \
        (rc, out, err)


@test
def test_check_args_exits_0_without_serving():
    port = gmtest.free_port()
    t0 = time.time()
    rc, out, err = run("--check-args", "-p", str(port), "-L", "127.0.0.1", "-t", "2",
                       "--verbose=DEBUG", "-l", "none")
    assert (rc, out, err) == (0, "", ""), (rc, out, err)
    assert time.time() - t0 < 5
    assert refused(port)


# ----------------------------------------------------------------------
# config file

@test
def test_config_file_tokens_comments_and_command_line_wins():
    port = gmtest.free_port()
    log = tmpfile("gearmand.log")
    pidf = tmpfile("gearmand.pid")
    conf = tmpfile("gearmand.conf")
    with open(conf, "w") as f:
        f.write("# gearmand settings\n"
                "--port=%d --verbose=INFO -L 127.0.0.1   # several on one line\n"
                "--job-handle-prefix\n"
                "H:conf\n"
                "-t 2\n"
                "# --job-retries 3\n"
                "\n"
                "--log-file %s\n" % (port, log))
    with Proc("--config-file", conf, "-P", pidf, "--verbose", "WARNING", port=port,
              config=False) as p:
        # the command line's --verbose wins over the file's
        assert admin(port, "verbose") == b"OK WARNING\n"
        with p.conn() as c:
            c.send_packet("SUBMIT_JOB_BG", "f", "u", "x")
            p1 = c.expect("JOB_CREATED")
            assert p1.data == b"H:conf:1", p1
        wait_until(lambda: threads_of(p.pid) == 4, timeout=3, what="main + dispatcher + 2 I/O")
        # the commented-out -j 3 is not applied: a job survives 3 worker deaths
        for _ in range(3):
            with p.conn() as w:
                w.send_packet("CAN_DO", "f")
                w.send_packet("GRAB_JOB")
                w.expect("JOB_ASSIGN")
            requeued(port, "f", 1)
        with p.conn() as w:
            w.send_packet("CAN_DO", "f")
            w.send_packet("GRAB_JOB")
            w.expect("JOB_ASSIGN")
        assert os.path.exists(log), "the config file's --log-file was not used"
        assert p.stop() == 0


@test
def test_config_file_bad_option_exits_1():
    conf = tmpfile("bad.conf")
    with open(conf, "w") as f:
        f.write("--port=4730\n--bogus\n")
    rc, out, err = run_bare("--check-args", "--config-file", conf)
    assert rc == 1 and err == BIN + ": unrecognised option '--bogus'\n", (rc, err)
    with open(conf, "w") as f:
        f.write("--threads=x\n")
    rc, out, err = run_bare("--check-args", "--config-file", conf)
    assert rc == 1 and "the argument ('x') for option '--threads' is invalid" in err, (rc, err)


@test
def test_missing_named_config_file_exits_1():
    missing = os.path.join(TMP, "does-not-exist.conf")
    rc, out, err = run_bare("--check-args", "--config-file", missing)
    assert rc == 1 and out == "", (rc, out, err)
    assert err.startswith(BIN + ": Could not open configuration file"), err


# ----------------------------------------------------------------------
# -p, -L, GEARMAND_PORT

@test
def test_port_option_forms():
    for form in ("-p{}", "--port={}", "--port {}", "-p {}"):
        port = gmtest.free_port()
        args = form.format(port).split(" ")
        with Proc(*(args + ["-L", "127.0.0.1", "-l", "none", "-P", tmpfile("p.pid")]),
                  port=port) as p:
            assert admin(port, "status") == b".\n"
            assert p.stop() == 0


@test
def test_gearmand_port_environment_replaces_the_default_port_only():
    port = gmtest.free_port()
    with Proc("-L", "127.0.0.1", "-l", "none", "-P", tmpfile("p.pid"), port=port,
              env={"GEARMAND_PORT": str(port)}) as p:
        assert admin(port, "status") == b".\n"
        assert p.stop() == 0
    # an explicit -p wins
    port2, other = gmtest.free_port(), gmtest.free_port()
    with Proc("-p", str(port2), "-L", "127.0.0.1", "-l", "none", "-P", tmpfile("p.pid"),
              port=port2, env={"GEARMAND_PORT": str(other)}) as p:
        assert refused(other)
        assert p.stop() == 0


@test
def test_listen_address():
    ip = None
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.connect(("192.0.2.1", 9))
        ip = u.getsockname()[0]
        u.close()
    except OSError:
        pass
    if not ip or ip.startswith("127."):
        skip("no non-loopback IPv4 address")
    with Server() as s:   # -L 127.0.0.1
        try:
            socket.create_connection((ip, s.port), timeout=1).close()
            fail("-L 127.0.0.1 accepted a connection on %s" % ip)
        except OSError:
            pass
    with Server(listen=None) as s:   # every address
        socket.create_connection((ip, s.port), timeout=2).close()


# ----------------------------------------------------------------------
# -t

@test
def test_threads_option_sets_the_io_thread_count():
    for n in (1, 3):
        # main + dispatcher + n I/O threads; with one I/O thread the
        # dispatcher runs on it (as gearmand's -t 1 has no proc thread)
        want = 2 if n == 1 else n + 2
        with Server("-t", str(n)) as s:
            wait_until(lambda: threads_of(s.proc.pid) == want, timeout=3,
                       what="%d threads with -t %d (have %d)" % (want, n, threads_of(s.proc.pid)))
            assert admin(s.port, "status") == b".\n"


@test
def test_threads_default_and_zero_are_one_per_cpu_counting_the_dispatcher():
    cpus = os.sysconf("SC_NPROCESSORS_ONLN")
    # main + I/O threads (+ dispatcher): CPUs - 1 I/O threads and the
    # dispatcher; on 1-2 CPUs one I/O thread that runs the dispatcher
    want = 2 if cpus <= 2 else (cpus - 1) + 2
    for args in ((), ("-t", "0")):
        # binary given: GMTEST_SERVER_ARGS (a -t of its own) stays out
        with Server(*args, binary=BIN) as s:
            wait_until(lambda: threads_of(s.proc.pid) == want, timeout=3,
                       what="%d threads with %r (have %d)" % (want, args, threads_of(s.proc.pid)))


# ----------------------------------------------------------------------
# --busy-poll

def _echo_round_trips(port, n, pause):
    """n ECHO round trips on one connection, `pause` seconds apart."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        req = b"\0REQ" + (16).to_bytes(4, "big") + (4).to_bytes(4, "big") + b"ping"
        for _ in range(n):
            c.sendall(req)
            got = b""
            while len(got) < 16:
                chunk = c.recv(16 - len(got))
                assert chunk, "connection closed"
                got += chunk
            assert got == b"\0RES" + (17).to_bytes(4, "big") + (4).to_bytes(4, "big") + b"ping", got
            if pause:
                time.sleep(pause)


@test
def test_busy_poll_stops_once_traffic_stops():
    # one thread polling; then two I/O threads and the dispatcher thread
    for threads in ("1", "2"):
        with Server("-t", threads) as s:
            with s.conn() as c:  # jobs too, so the dispatcher thread polls
                for _ in range(200):
                    gmtest.submit(c, "SUBMIT_JOB_BG", "f", "")
            _echo_round_trips(s.port, 2000, 0)
            time.sleep(0.2)
            cpu0 = _cpu_seconds(s.proc.pid)
            time.sleep(1.0)
            used = _cpu_seconds(s.proc.pid) - cpu0
            assert used < 0.1, "-t %s: %.2f s of CPU in 1 s with no traffic after busy polling" % (threads, used)


@test
def test_busy_poll_window_closes_when_packets_are_far_apart():
    # one packet every 20 ms, far beyond the 200 µs window: polling would
    # be wasted, so the window must close and the thread sleep between them
    with Server("-t", "2") as s:
        cpu0 = _cpu_seconds(s.proc.pid)
        t0 = time.time()
        _echo_round_trips(s.port, 50, 0.02)
        elapsed = time.time() - t0
        used = _cpu_seconds(s.proc.pid) - cpu0
        assert used < 0.25 * elapsed, "%.2f s of CPU in %.2f s of sparse traffic" % (used, elapsed)


@test
def test_busy_poll_takes_microseconds_and_zero_turns_it_off():
    for value in ("0", "50", "100000"):
        with Server("--busy-poll", value, "-t", "1") as s:
            _echo_round_trips(s.port, 10, 0)
    expect_error(["--busy-poll", "100001"], r"the argument \('100001'\) for option '--busy-poll' is invalid")
    expect_error(["--busy-poll", "-1"], r"the argument \('-1'\) for option '--busy-poll' is invalid")


# ----------------------------------------------------------------------
# --reply-batch

@test
def test_reply_batch_holds_no_reply_once_the_server_is_idle():
    # A client with two jobs in flight: the first one's WORK_COMPLETE may wait
    # to be batched while the server is busy, but must go out as soon as the
    # server has nothing else to do, long before the (100 ms) limit.
    for threads in ("1", "2"):
        with Server("-t", threads, "--reply-batch", "100000") as s:
            with s.conn() as c, s.conn() as w:
                w.send_packet("CAN_DO", "f")
                gmtest.submit(c, "SUBMIT_JOB", "f", "u1", b"first")
                gmtest.submit(c, "SUBMIT_JOB", "f", "u2", b"second")
                for want in (b"first", b"second"):
                    w.send_packet("GRAB_JOB")
                    handle, _fn, data = w.expect("JOB_ASSIGN").fields(3)
                    assert data == want, (data, want)
                    t0 = time.time()
                    w.send_packet("WORK_COMPLETE", handle, b"done-" + data)
                    p = c.expect("WORK_COMPLETE", timeout=5)
                    waited = time.time() - t0
                    assert p.fields(2) == [handle, b"done-" + data], p
                    assert waited < 0.05, "-t %s: the reply waited %.0f ms with the server idle" % (
                        threads, waited * 1000)


@test
def test_reply_batch_takes_microseconds_and_zero_turns_it_off():
    for value in ("0", "1", "100000"):
        with Server("--reply-batch", value) as s:
            with s.conn() as c:
                c.send_packet("ECHO_REQ", "x")
                c.expect("ECHO_RES")
    expect_error(["--reply-batch", "100001"], r"the argument \('100001'\) for option '--reply-batch' is invalid")
    expect_error(["--reply-batch", "x"], r"the argument \('x'\) for option '--reply-batch' is invalid")


# ----------------------------------------------------------------------
# -j, -w, --job-handle-prefix, --exceptions, --max-packet-size

@test
def test_job_retries_fails_the_job_after_n_attempts():
    with Server("-j", "2", "--job-handle-prefix", "J") as s:
        with s.conn() as c:
            c.send_packet("SUBMIT_JOB", "r", "u", "x")
            assert c.expect("JOB_CREATED").data == b"J:1"
            for attempt in (1, 2):
                with s.conn() as w:
                    w.send_packet("CAN_DO", "r")
                    w.send_packet("GRAB_JOB")
                    p = w.expect("JOB_ASSIGN")
                    assert p.fields()[0] == b"J:1"
                # the worker dies with the job
                if attempt == 1:
                    requeued(s.port, "r", 1)
            p = c.recv_packet()
            assert p.name == "WORK_FAIL" and p.data == b"J:1", p
            assert admin(s.port, "show jobs") == b".\n"


@test
def test_job_retries_default_is_unlimited():
    with Server("--job-handle-prefix", "J") as s:
        with s.conn() as c:
            c.send_packet("SUBMIT_JOB", "r", "u", "x")
            c.expect("JOB_CREATED")
            for attempt in range(4):
                with s.conn() as w:
                    w.send_packet("CAN_DO", "r")
                    w.send_packet("GRAB_JOB")
                    w.expect("JOB_ASSIGN")
                requeued(s.port, "r", 1)
            c.nothing(0.2)
            assert admin(s.port, "show jobs") == b"J:1\t4\t0\t0\n.\n"


def sleeping_workers(s, n, fn="w"):
    ws = []
    for _ in range(n):
        w = s.conn()
        w.send_packet("CAN_DO", fn)
        w.send_packet("PRE_SLEEP")
        sync(w)
        ws.append(w)
    return ws


def noops(ws, wait=0.3):
    """Which workers got a NOOP within `wait` seconds."""
    got = []
    deadline = time.time() + wait
    for i, w in enumerate(ws):
        try:
            p = w.recv_packet(timeout=max(0.01, deadline - time.time()))
            assert p.name == "NOOP", p
            got.append(i)
        except (TimeoutError, socket.timeout):
            pass
    return got


@test
def test_worker_wakeup_limits_the_noops_per_job():
    with Server("-w", "1") as s:
        ws = sleeping_workers(s, 3)
        with s.conn() as c:
            c.send_packet("SUBMIT_JOB_BG", "w", "a", "x")
            c.expect("JOB_CREATED")
            first = noops(ws)
            assert len(first) == 1, "with -w 1, %d workers woken" % len(first)
            c.send_packet("SUBMIT_JOB_BG", "w", "b", "x")
            c.expect("JOB_CREATED")
            second = noops(ws)
            assert len(second) == 1 and second != first, (first, second)
        for w in ws:
            w.close()
    with Server() as s:
        ws = sleeping_workers(s, 3)
        with s.conn() as c:
            c.send_packet("SUBMIT_JOB_BG", "w", "a", "x")
            c.expect("JOB_CREATED")
            assert noops(ws) == [0, 1, 2], "without -w every sleeping worker is woken"
        for w in ws:
            w.close()


@test
def test_job_handle_prefix():
    with Server("--job-handle-prefix", "XYZ") as s:
        with s.conn() as c:
            c.send_packet("SUBMIT_JOB_BG", "f", "u1", "x")
            assert c.expect("JOB_CREATED").data == b"XYZ:1"
            c.send_packet("SUBMIT_JOB_BG", "f", "u2", "x")
            assert c.expect("JOB_CREATED").data == b"XYZ:2"
    with Server() as s:
        with s.conn() as c:
            c.send_packet("SUBMIT_JOB_BG", "f", "u1", "x")
            want = b"H:" + os.uname().nodename.encode() + b":1"
            assert c.expect("JOB_CREATED").data == want


def exception_seen_by_client(s):
    with s.conn() as w, s.conn() as c:
        w.send_packet("CAN_DO", "e")
        c.send_packet("SUBMIT_JOB", "e", "u", "x")
        h = c.expect("JOB_CREATED").data
        w.send_packet("GRAB_JOB")
        w.expect("JOB_ASSIGN")
        w.send_packet("WORK_EXCEPTION", h, "boom")
        return h, c.recv_packet()


@test
def test_exceptions_option_forwards_work_exception():
    with Server("--exceptions") as s:
        h, p = exception_seen_by_client(s)
        assert p.name == "WORK_EXCEPTION" and p.data == h + b"\0boom", p
    with Server() as s:
        h, p = exception_seen_by_client(s)
        # without it the client gets a WORK_FAIL (a clean one: design 9)
        assert p.name == "WORK_FAIL" and p.data == h, p


@test
def test_max_packet_size():
    with Server("--max-packet-size", "4096") as s:
        with s.conn() as c:
            c.send_packet("SUBMIT_JOB_BG", "f", "small", b"x" * 4000)
            c.expect("JOB_CREATED")
            c.send_packet("SUBMIT_JOB_BG", "f", "big", b"x" * 5000)
            p = c.recv_packet()
            assert p.name == "ERROR", p
            assert c.closed(3.0), "connection kept after an oversized packet"
        assert b"f\t1\t0\t0\n" in admin(s.port, "status")
    expect_error(["--max-packet-size", "lots"],
                 r"the argument \('lots'\) for option '--max-packet-size' is invalid")


def _recv_exactly(sock, n, timeout=120):
    """Reads exactly n bytes into one buffer (no quadratic joins: n may be
    a GiB)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    sock.settimeout(timeout)
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if not k:
            raise EOFError("closed after %d of %d bytes" % (got, n))
        got += k
    return buf


@test
def test_max_packet_size_ranges_from_1_kib_to_1_gib_and_big_jobs_reach_their_worker():
    # the low end: 1024 is the smallest, and is exact
    with Server("--max-packet-size", "1024") as s:
        with s.conn() as c:
            c.send_packet("ECHO_REQ", b"e" * 1024)
            c.expect_packet("ECHO_RES", b"e" * 1024)
            c.send_packet("ECHO_REQ", b"e" * 1025)
            assert c.expect("ERROR").fields(2)[0] == b"ARGUMENT_TOO_LARGE"
    expect_error(["--max-packet-size", "1023"],
                 r"the argument \('1023'\) for option '--max-packet-size' is invalid")
    # the high end: above 1 GiB, sizes made from a payload (a reply with a
    # handle added, an HTTP head and body) could pass 32 bits
    for v in ("1073741825", "2147483648", "4294967283"):
        expect_error(["--max-packet-size", v],
                     r"the argument \('%s'\) for option '--max-packet-size' is invalid" % v)
    limit = 1 << 30
    with Server("--max-packet-size", str(limit)) as s:
        with s.conn() as c:
            c.send(struct.pack(">4sII", b"\0REQ", 16, limit + 1))
            assert c.expect("ERROR").fields(2)[0] == b"ARGUMENT_TOO_LARGE"
        # a packet of exactly the limit is read as its bytes arrive: its
        # declared size is never allocated up front
        rss0 = gmtest.rss_kib(s.proc.pid)
        with s.conn() as c:
            c.send(struct.pack(">4sII", b"\0REQ", 16, limit) + b"e" * (1 << 20))
            with s.conn() as other:
                other.send_packet("ECHO_REQ", b"alive")
                other.expect_packet("ECHO_RES", b"alive")
            grown = gmtest.rss_kib(s.proc.pid) - rss0
            assert grown < 64 * 1024, "1 MiB of a 1 GiB packet took %d KiB" % grown
        # a job bigger than the unsent output a slow reader may hold
        # (256 MiB) still reaches its worker
        with s.conn(timeout=120) as c, s.conn(timeout=120) as w:
            n = (300 << 20) - 5
            data = bytes(range(256)) * (n // 256) + b"t" * (n % 256)
            c.send(struct.pack(">4sII", b"\0REQ", 7, n + 5) + b"big\0\0" + data)
            h = c.expect("JOB_CREATED", timeout=120).data
            w.send_packet("CAN_DO", "big")
            w.send_packet("GRAB_JOB")
            head = _recv_exactly(w.sock, 12)
            magic, ptype, size = struct.unpack(">4sII", head)
            assert (magic, ptype) == (b"\0RES", 11), head        # JOB_ASSIGN
            assert size == len(h) + 5 + n, (size, len(h))
            got = _recv_exactly(w.sock, size)
            assert got[:len(h) + 5] == h + b"\0big\0", bytes(got[:80])
            assert got[len(h) + 5:] == data, "the 300 MiB payload arrived changed"
            del got, data
            w.send_packet("WORK_COMPLETE", h, "ok")
            c.expect_packet("WORK_COMPLETE", h, "ok")


# ----------------------------------------------------------------------
# -P, -l

@test
def test_pid_file_written_and_removed_on_exit():
    s = Server().start()
    try:
        with open(s.pidfile) as f:
            assert f.read() == "%d\n" % s.proc.pid
    finally:
        assert s.stop() == 0
    assert not os.path.exists(s.pidfile), "pid file left after SIGTERM"


@test
def test_unwritable_named_pid_file_exits_1():
    port = gmtest.free_port()
    rc, out, err = run("-p", str(port), "-L", "127.0.0.1", "-l", "none",
                       "-P", os.path.join(TMP, "no", "such", "dir", "g.pid"))
    assert rc == 1 and err.startswith(BIN + ": "), (rc, err)


LOG_LINE = re.compile(r"^ *(FATAL|ALERT|CRITICAL|ERROR|WARNING|NOTICE|INFO|DEBUG) "
                      r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) \[ *([^\]]*?) *\] (.*)$")
LEVELS = ["FATAL", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"]


def log_lines(path):
    with open(path, errors="replace") as f:
        text = f.read()
    out = []
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        assert m, "log line %r is not '<level> <date time.usec> [<thread>] <message>'" % line
        out.append(m.groups())
    return out


def requeued(port, fn, total):
    """Waits until `status` shows fn with `total` jobs and none running (a
    dead worker's job is requeued when the server notices the close)."""
    want = b"%s\t%d\t0\t" % (fn.encode(), total)
    wait_until(lambda: want in admin(port, "status"), timeout=5, what="job requeued")


def some_traffic(port):
    with gmtest.Conn(port) as a:
        a.burst(b"status\r\n")
        a.send_packet("SUBMIT_JOB", "f", "u", "x")
        a.expect("JOB_CREATED")


@test
def test_log_file_lines_have_level_time_thread_message():
    with Server(log_level="INFO") as s:
        some_traffic(s.port)
        lines = wait_until(lambda: [g for g in log_lines(s.log) if g[0] == "INFO"], timeout=3,
                           what="INFO lines in the log")
        assert any("127.0.0.1" in g[3] for g in lines), lines
        for level, stamp, thread, msg in log_lines(s.log):
            assert LEVELS.index(level) <= LEVELS.index("INFO"), level
            assert thread, "empty thread tag"
            t = time.mktime(time.strptime(stamp.split(".")[0], "%Y-%m-%d %H:%M:%S"))
            assert abs(t - time.time()) < 3600, stamp


@test
def test_log_line_layout_matches_1_1_20():
    # 1.1.20: "%7s <date> [%6s ] <message>", e.g.
    # " NOTICE 2026-11-26 20:01:17.000000 [  proc ] accepted,rev,,0 -> file:line"
    with Server(log_level="INFO") as s:
        some_traffic(s.port)
        time.sleep(0.1)
        with open(s.log) as f:
            lines = f.read().splitlines()
    assert lines
    for line in lines:
        m = re.match(r"^( *)([A-Z]+) \d{4}-", line)
        assert m and m.group(2) in LEVELS, "no level first: %r" % line
        assert len(m.group(1) + m.group(2)) == max(7, len(m.group(2))), \
            "level not right-aligned in 7 columns: %r" % line
        m = re.search(r" \[([^\]]*)\] ", line)
        assert m and re.match(r"^ *\S+ $", m.group(1)) and len(m.group(1)) == 7, \
            "thread tag not '[%%6s ]': %r" % line


@test
def test_verbose_filters_the_log():
    with Server(log_level="WARNING") as s:
        some_traffic(s.port)
        time.sleep(0.1)
        levels = {g[0] for g in log_lines(s.log)}
        assert not levels & {"NOTICE", "INFO", "DEBUG"}, levels
    with Server(log_level="DEBUG") as s:
        some_traffic(s.port)
        wait_until(lambda: any(g[0] == "INFO" for g in log_lines(s.log)), timeout=3,
                   what="INFO lines with --verbose DEBUG")


@test
def test_log_file_stderr_and_none():
    # -l stderr: the log goes to fd 2
    port = gmtest.free_port()
    proc = subprocess.Popen([BIN, "--config-file", EMPTY_CONF, "-p", str(port), "-L", "127.0.0.1",
                             "-l", "stderr", "--verbose", "INFO", "-P", tmpfile("p.pid")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: not refused(port), timeout=10, what="listening")
        some_traffic(port)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    lines = err.decode(errors="replace").splitlines()
    assert any(LOG_LINE.match(l) and " INFO " in l for l in lines), lines
    # -l none: nothing written anywhere
    cwd = tempfile.mkdtemp(dir=TMP)
    port = gmtest.free_port()
    proc = subprocess.Popen([BIN, "--config-file", EMPTY_CONF, "-p", str(port), "-L", "127.0.0.1",
                             "-l", "none", "--verbose", "DEBUG", "-P", tmpfile("p.pid")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    try:
        wait_until(lambda: not refused(port), timeout=10, what="listening")
        some_traffic(port)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and out == b"" and err == b"", (out, err)
    assert os.listdir(cwd) == [], os.listdir(cwd)


# ----------------------------------------------------------------------
# -d

@test
def test_daemon_parent_exits_once_the_port_accepts():
    port = gmtest.free_port()
    log, pidf = tmpfile("d.log"), tmpfile("d.pid")
    outf = open(tmpfile("d.out"), "w+b")
    t0 = time.time()
    parent = subprocess.Popen([BIN, "--config-file", EMPTY_CONF, "-d", "-p", str(port),
                               "-L", "127.0.0.1", "-l", log, "-P", pidf, "--verbose", "INFO"],
                              stdout=outf, stderr=outf, stdin=subprocess.DEVNULL)
    child = None
    try:
        rc = parent.wait(timeout=15)
        assert rc == 0, "daemon parent exited %s" % rc
        # no retry: the port must accept right away
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError as e:
            fail("the parent exited before the daemon listened: %s" % e)
        with open(pidf) as f:
            child = int(f.read())
        assert child != parent.pid and alive(child), (child, parent.pid)
        assert admin(port, "getpid") == b"OK %d\n" % child
        # detached: its own session
        with open("/proc/%d/stat" % child) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        assert int(fields[3]) == child, "daemon is not a session leader (sid %s)" % fields[3]
        os.kill(child, signal.SIGTERM)
        wait_until(lambda: not alive(child), timeout=10, what="the daemon to exit on SIGTERM")
        child = None
        assert not os.path.exists(pidf), "pid file left by the daemon"
        outf.seek(0)
        assert outf.read() == b"", "the daemon wrote to its inherited stdout/stderr"
    finally:
        if child and alive(child):
            os.kill(child, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        outf.close()


@test
def test_daemon_parent_reports_a_failed_start():
    port = gmtest.free_port()
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        rc, out, err = run("-d", "-p", str(port), "-L", "127.0.0.1", "-l", "none",
                           "-P", tmpfile("p.pid"), timeout=60)
        # 1.1.20's parent exits 0 before bind; ours waits for the listener,
        # so a bind failure must not look like success
        assert rc != 0, "daemon parent exited 0 though the port was taken"
    finally:
        blocker.close()


# ----------------------------------------------------------------------
# under a service manager (systemd's Type=notify: $NOTIFY_SOCKET)

def built_with_systemd():
    """Whether configure found libsystemd (config.h beside the build's gearmand/)."""
    config = os.path.join(os.path.dirname(os.path.dirname(BIN)), "config.h")
    with open(config) as f:
        return "#define HAVE_LIBSYSTEMD 1" in f.read()


@test
def test_service_manager_hears_ready_from_the_server_itself_and_daemon_is_ignored():
    # Debian's PARAMS carry --daemon; under Type=notify the process systemd
    # started must be the server and say READY=1 once its port accepts.
    path = tmpfile("notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    port = gmtest.free_port()
    log, pidf = tmpfile("n.log"), tmpfile("n.pid")
    proc = subprocess.Popen([BIN, "--config-file", EMPTY_CONF, "-d", "-p", str(port), "-L", "127.0.0.1",
                             "-l", log, "-P", pidf, "--verbose", "NOTICE"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, NOTIFY_SOCKET=path))
    child = None
    try:
        if built_with_systemd():
            sock.settimeout(20)
            fields = sock.recv(4096).split(b"\n")
            assert b"READY=1" in fields, fields
            status = [f for f in fields if f.startswith(b"STATUS=")]
            assert status and (b"port %d" % port) in status[0], fields
            socket.create_connection(("127.0.0.1", port), timeout=2).close()  # no retry: it accepts now
            assert proc.poll() is None, "the started process exited (-d forked?)"
            assert admin(port, "getpid") == b"OK %d\n" % proc.pid
            with open(log) as f:
                assert "--daemon ignored" in f.read()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        else:
            # without libsystemd nothing is sent and -d forks as always
            assert proc.wait(timeout=15) == 0
            with open(pidf) as f:
                child = int(f.read())
            assert child != proc.pid and alive(child)
            sock.settimeout(0.3)
            try:
                fail("a build without libsystemd sent %r" % sock.recv(4096))
            except socket.timeout:
                pass
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if child and alive(child):
            os.kill(child, signal.SIGTERM)
            wait_until(lambda: not alive(child), timeout=10, what="the daemon to exit")


# ----------------------------------------------------------------------
# signals

@test
def test_sigterm_and_sigint_exit_0_at_once():
    for sig in (signal.SIGTERM, signal.SIGINT):
        s = Server().start()
        try:
            with s.conn() as w, s.conn() as c:
                w.send_packet("CAN_DO", "f")
                c.send_packet("SUBMIT_JOB", "f", "u1", "x")
                c.expect("JOB_CREATED")
                c.send_packet("SUBMIT_JOB_BG", "f", "u2", "x")
                c.expect("JOB_CREATED")
                w.send_packet("GRAB_JOB")
                w.expect("JOB_ASSIGN")
                t0 = time.time()
                s.proc.send_signal(sig)
                assert exits(s, 5.0) == 0, "exit status after %s" % sig
                assert time.time() - t0 < 3.0, "%s took %.1fs" % (sig, time.time() - t0)
                assert not os.path.exists(s.pidfile)
        finally:
            s.stop()


@test
def test_sigusr1_without_jobs_exits_0():
    s = Server().start()
    try:
        with s.conn() as a:
            a.burst(b"status\r\n")
            s.proc.send_signal(signal.SIGUSR1)
            assert exits(s, 5.0) == 0
    finally:
        s.stop()


@test
def test_sigusr1_with_a_queued_job_drains_then_exits():
    s = Server().start()
    try:
        with s.conn() as w, s.conn() as c, s.conn() as a:
            c.send_packet("SUBMIT_JOB_BG", "g", "u1", "x")
            h = c.expect("JOB_CREATED").data
            s.proc.send_signal(signal.SIGUSR1)
            wait_until(lambda: refused(s.port), timeout=3, what="new connections refused")
            time.sleep(0.2)
            assert s.proc.poll() is None, "exited with a job queued"
            # existing connections keep being served
            assert a.burst(b"status\r\n") == b"g\t1\t0\t0\n.\n"
            w.send_packet("CAN_DO", "g")
            w.send_packet("GRAB_JOB")
            p = w.expect("JOB_ASSIGN")
            assert p.fields()[0] == h
            time.sleep(0.2)
            assert s.proc.poll() is None, "exited with a job running"
            assert refused(s.port)
            w.send_packet("WORK_COMPLETE", h, "")
            assert exits(s, 5.0) == 0
    finally:
        s.stop()


@test
def test_sigterm_still_works_during_a_graceful_stop():
    s = Server().start()
    try:
        with s.conn() as c:
            c.send_packet("SUBMIT_JOB_BG", "nobody", "u1", "x")
            c.expect("JOB_CREATED")
            s.proc.send_signal(signal.SIGUSR1)
            wait_until(lambda: refused(s.port), timeout=3, what="new connections refused")
            s.proc.send_signal(signal.SIGTERM)
            assert exits(s, 5.0) == 0
    finally:
        s.stop()


@test
def test_sighup_reopens_the_log_file():
    with Server(log_level="INFO") as s:
        some_traffic(s.port)
        wait_until(lambda: os.path.exists(s.log) and os.path.getsize(s.log) > 0, timeout=3,
                   what="first log lines")
        old = s.log + ".1"
        os.rename(s.log, old)
        s.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: os.path.exists(s.log), timeout=3, what="log re-created after SIGHUP")
        before = open(old).read()
        with gmtest.Conn(s.port) as a:
            a.send_packet("SET_CLIENT_ID", "after-hup")
            assert a.burst(b"status\r\n").endswith(b".\n")
        wait_until(lambda: "Accepted" in open(s.log).read() or "127.0.0.1" in open(s.log).read(),
                   timeout=3, what="new lines in the new log")
        for g in log_lines(s.log):
            pass  # every line well-formed
        assert open(old).read().count("\n") <= before.count("\n") + 1, \
            "lines still going to the renamed file"
        assert os.path.exists(old)


# ----------------------------------------------------------------------
# -u and running out of descriptors

def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@test
def test_user_option_switches_to_the_user_after_binding():
    import pwd
    if os.geteuid() != 0:
        skip("needs root")
    nobody = pwd.getpwnam("nobody")
    with Server("-u", "nobody") as s:
        def uids():
            with open("/proc/%d/status" % s.proc.pid) as f:
                return [l for l in f if l.startswith("Uid:")][0].split()[1:]
        # the port answers from the moment it is bound, a moment before the
        # switch (seen under AddressSanitizer): wait for it
        wait_until(lambda: all(int(u) == nobody.pw_uid for u in uids()), timeout=10,
                   what="the switch to nobody")
        assert admin(s.port, "status") == b".\n"


@test
def test_running_out_of_descriptors_turns_new_connections_away_at_once_and_recovers():
    # 40 descriptors: a few for the loops and logs, the rest for connections;
    # a listen queue longer than the 60 connections, so that none of them
    # overflows it (the kernel would then leave it half-open, retried later)
    with Server("-f", "40", "-t", "1", "-b", "256") as s:
        conns = []
        for _ in range(60):
            try:
                conns.append(socket.create_connection(("127.0.0.1", s.port), timeout=2))
            except OSError:
                break
        # every connection is either served or closed by the server at once;
        # none is left waiting in the listen queue (where a peer that gives
        # up clogs it for the next ones)
        served, turned_away = 0, 0
        for c in conns:
            c.settimeout(5)
            try:
                c.sendall(b"version\n")
                reply = c.recv(100)
            except ConnectionResetError:
                reply = b""
            except socket.timeout:
                raise AssertionError("a connection waited in the listen queue for 5 s")
            if reply.startswith(b"OK "):
                served += 1
            else:
                assert reply == b"", reply
                turned_away += 1
        assert served >= 10 and turned_away >= 10, (served, turned_away)
        # out of descriptors, the server must not spin on the listener
        cpu0 = _cpu_seconds(s.proc.pid)
        time.sleep(1.0)
        used = _cpu_seconds(s.proc.pid) - cpu0
        assert used < 0.3, "the server spent %.2f s of CPU in 1 s while out of descriptors" % used
        # a line per episode, not one per connection turned away; the
        # start-up probe's connection may close after the table filled,
        # which ends a first episode
        log = s.log_text()
        assert 1 <= log.count("closing new connections at once") <= 2, log
        for c in conns:
            c.close()
        # once a descriptor is free again, the next connection is served
        def answered():
            try:
                return admin(s.port, "version").startswith(b"OK ")
            except OSError:
                return False
        wait_until(answered, timeout=5, what="a connection after the descriptors were given back")
        counts = re.findall(r"accepting connections again; (\d+) turned away", s.log_text())
        assert counts and sum(map(int, counts)) >= turned_away, s.log_text()


@test
def test_mysql_queue_start_up_errors_name_the_option():
    # -q MySQL under its libdrizzle name and spellings, with nothing
    # listening: start-up fails naming the options to look at (or, in a
    # build without libmariadb, saying that), never gearmand's bare
    # "Error while initializing the queue"
    port = gmtest.free_port()
    rc, out, err = run("-p", str(gmtest.free_port()), "-L", "127.0.0.1", "-l", "stderr", "-q", "libdrizzle",
                       "--libdrizzle-host", "127.0.0.1", "--libdrizzle-port", str(port),
                       "--libdrizzle-user", "u", "--libdrizzle-db", "gearman", "--libdrizzle-mysql", timeout=30)
    assert rc == 1, (rc, err)
    assert ("--mysql-host/--mysql-port" in err and "127.0.0.1:%d" % port in err) or \
        "built without the MySQL queue" in err, err
    rc, out, err = run("-p", str(gmtest.free_port()), "-L", "127.0.0.1", "-l", "stderr", "-q", "MySQL",
                       "--mysql-host", "127.0.0.1", "--mysql-port", str(port), timeout=30)
    assert rc == 1, (rc, err)
    assert "--mysql-db" in err or "built without the MySQL queue" in err, err


if __name__ == "__main__":
    gmtest.main()
