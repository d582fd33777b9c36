#!/usr/bin/env python3
"""The Debian package, for real, on this machine (as root): tests/run-suite
runs it last, after every other test, since for a minute or two it puts our
gearmand in /usr/sbin in place of Debian's gearmand 1.1.20 (which other
tests compare against) and our tools in /usr/bin in place of gearman-tools.

  1. dpkg-buildpackage -us -uc -b of a clean copy of the sources, with
     DEB_BUILD_OPTIONS=nocheck (our suite must not run inside it); lintian
     shows no error;
  2. dpkg -i of both packages in place of gearman-job-server and
     gearman-tools; systemd-analyze verify of the installed unit;
  3. the unit's ExecStart line, with PARAMS as systemd would make it (the
     unit's default, or /etc/default/gearman-job-server's), run directly as
     the gearman user (no systemd as PID 1 here), with NOTIFY_SOCKET as
     systemd sets it: READY=1 arrives, the queue is /var/lib/gearman's, a
     job round-trips through the installed tools, a stored background job
     survives a restart of that command and a reinstall (an upgrade's
     path), logrotate rotates the log and the server reopens it; Debian's
     stock PARAMS (with --daemon) work too;
     and the unit under a real systemd, PID 1 of namespaces of its own
     (skipped where they cannot be made): it starts with its whole sandbox,
     as gearman, Type=notify; restart keeps a stored job; reload reopens the
     log; stop ends it cleanly;
  4. dpkg -r removes the binaries and keeps the queue; dpkg --purge removes
     the queue;
  5. the machine is left as it was: Debian's packages reinstalled from
     their .deb files (kept from /var/cache/apt/archives, or fetched with
     apt-get download before anything changes), their files and systemd
     links as before.  Nothing is started by their maintainer scripts
     (policy-rc.d, as tests/run-suite does).

Usage: test_package.py SRCDIR WORKDIR.  Output: TAP.
"""

import atexit
import glob
import grp
import hashlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gmtest  # noqa: E402
from gmtest import test, fail, wait_until  # noqa: E402

if len(sys.argv) != 3:
    sys.exit("usage: %s SRCDIR WORKDIR" % sys.argv[0])
SRC = os.path.abspath(sys.argv[1])
WORK = os.path.abspath(sys.argv[2])
DEBIAN_PACKAGES = ("gearman-job-server", "gearman-tools")
OURS = ("gearmand-c", "gearmand-c-tools")
UNIT = "/lib/systemd/system/gearmand.service"
DEFAULT_FILE = "/etc/default/gearman-job-server"
QUEUE = "/var/lib/gearman/gearmand-queue.sqlite"
LOG = "/var/log/gearman-job-server/gearmand.log"
POLICY_RC = "/usr/sbin/policy-rc.d"
ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")

state = {"debs": [], "saved": {}, "before": None, "procs": [], "policy_added": False,
         "run_dir_added": False, "restored": False}


def sh(*argv, check=True, timeout=600, env=None, cwd=None):
    """Runs argv; returns its output (stdout and stderr); fails with it on a bad exit if check."""
    r = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                       env=env or ENV, cwd=cwd)
    out = r.stdout.decode(errors="replace")
    if check and r.returncode != 0:
        fail("%s: exit %d\n%s" % (" ".join(argv), r.returncode, out[-4000:]))
    return out


def status_of(package):
    """dpkg's status of package ("install ok installed", "deinstall ok config-files", ...) or None."""
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", package], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        return None
    return r.stdout.decode().strip()


def installed(package):
    s = status_of(package)
    return bool(s) and s.startswith("install ok installed")


def snapshot():
    """What the packages touch and a test must leave as it was: package states,
    the gearman files under /etc and their systemd and rc links, the helper
    state of deb-systemd-helper, the gearman user and directories."""
    snap = {}
    for p in DEBIAN_PACKAGES + OURS:
        snap["status " + p] = status_of(p)
    for pattern in ("/etc/default/gearman*", "/etc/logrotate.d/gearman*", "/etc/init.d/gearman*",
                    "/etc/gearmand*", "/etc/rc?.d/*gearman*", "/etc/systemd/system/*gearman*",
                    "/etc/systemd/system/*/*gearman*", "/var/lib/systemd/deb-systemd-helper-enabled/*gearman*",
                    "/var/lib/systemd/deb-systemd-helper-enabled/*/*gearman*", "/usr/sbin/gearmand",
                    "/usr/bin/gearman", "/usr/bin/gearadmin", "/lib/systemd/system/gearman*",
                    "/run/gmtest-notify-*", "/sys/fs/cgroup/*/gmtest-systemd-*", "/sys/fs/cgroup/gmtest-systemd-*"):
        for path in sorted(glob.glob(pattern)):
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                snap[path] = "dir"
            elif stat.S_ISLNK(st.st_mode):
                snap[path] = "-> " + os.readlink(path)
            else:
                with open(path, "rb") as f:
                    snap[path] = "%o %s" % (stat.S_IMODE(st.st_mode), hashlib.sha256(f.read()).hexdigest()[:16])
    for d in ("/var/lib/gearman", "/var/log/gearman-job-server", "/run/gearman"):
        if os.path.isdir(d):
            st = os.stat(d)
            snap[d] = "dir %o %d:%d %s" % (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, sorted(os.listdir(d)))
    try:
        pw = pwd.getpwnam("gearman")
        snap["user gearman"] = "%d:%d %s %s" % (pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell)
    except KeyError:
        snap["user gearman"] = None
    return snap


# ----------------------------------------------------------------------
# the unit's command line, as systemd makes it

def unit_settings():
    settings = {}
    with open(UNIT) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")):
                k, v = line.split("=", 1)
                settings.setdefault(k, []).append(v)
    return settings


def service_argv():
    """ExecStart with $PARAMS as systemd expands it: Environment= first, then
    EnvironmentFile= (read here by sh, which parses these files alike), which
    wins; $PARAMS splits at white space."""
    s = unit_settings()
    params = None
    for env in s.get("Environment", []):
        for assignment in shlex.split(env):
            name, value = assignment.split("=", 1)
            if name == "PARAMS":
                params = value
    for envfile in s.get("EnvironmentFile", []):
        path = envfile.lstrip("-")
        if os.path.exists(path):
            out = sh("sh", "-c", '. "$1"; printf "%s" "${PARAMS-\x01unset}"', "sh", path)
            if out != "\x01unset":
                params = out
    argv = []
    for word in s["ExecStart"][0].split():
        argv += params.split() if word == "$PARAMS" else [word]
    return argv, s


class Service:
    """The unit's ExecStart run as the gearman user in the foreground, with
    NOTIFY_SOCKET and the port moved by GEARMAND_PORT (which replaces the
    default port only); waits for READY=1."""

    def __init__(self):
        self.port = gmtest.free_port()
        self.argv, self.settings = service_argv()
        # where the gearman user can reach it (WORK may be under /root)
        if "sockdir" not in state:
            state["sockdir"] = tempfile.mkdtemp(prefix="gmtest-notify-", dir="/run")
        sockdir = state["sockdir"]
        os.chmod(sockdir, 0o755)
        self.sockpath = os.path.join(sockdir, "notify-%d.sock" % self.port)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sockpath)
        os.chmod(self.sockpath, 0o666)
        env = dict(ENV, NOTIFY_SOCKET=self.sockpath, GEARMAND_PORT=str(self.port))
        user, group = self.settings["User"][0], self.settings["Group"][0]
        self.proc = subprocess.Popen(["setpriv", "--reuid=" + user, "--regid=" + group, "--init-groups", "--"]
                                     + self.argv, env=env, cwd="/", stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        state["procs"].append(self.proc)
        self.sock.settimeout(60)
        try:
            msg = self.sock.recv(4096)
        except socket.timeout:
            self.kill()
            fail("no READY=1 from %s in 60 s: %s" % (self.argv, self.proc.stdout.read()[-2000:]))
        assert b"READY=1" in msg.split(b"\n"), msg
        assert self.proc.poll() is None, "the started process exited (-d forked?)"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        state["procs"].remove(self.proc)
        self.sock.close()
        os.unlink(self.sockpath)
        assert rc == 0, "gearmand exited %d: %s" % (rc, self.proc.stdout.read()[-2000:])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()



def tool(port, program, *args, timeout=30):
    """Runs an installed tool (/usr/bin/gearman, ...) against the server on port; returns (status, output)."""
    r = subprocess.run([program, "-h", "127.0.0.1", "-p", str(port)] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace")


def admin(port, line):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(line.encode() + b"\n")
        buf = b""
        while not (buf.endswith(b"\n.\n") or buf == b".\n" or (buf.startswith(b"OK") and buf.endswith(b"\n"))):
            chunk = c.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf.decode()


def status_row(port, function):
    for line in admin(port, "status").splitlines():
        f = line.split("\t")
        if f[0] == function:
            return tuple(int(x) for x in f[1:])
    return None


def round_trip(port):
    """A worker (the installed /usr/bin/gearman running rev) and a client: the job comes back reversed."""
    worker = subprocess.Popen(["/usr/bin/gearman", "-h", "127.0.0.1", "-p", str(port), "-w", "-f", "rev",
                               "--", "rev"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (status_row(port, "rev") or (0, 0, 0))[2] == 1, timeout=20,
                   what="the worker to register")
        rc, out = tool(port, "/usr/bin/gearman", "-f", "rev", "hello")
        assert rc == 0 and out.strip() == "olleh", (rc, out)
    finally:
        worker.kill()
        worker.wait()


# ----------------------------------------------------------------------
# restoring the machine

def restore():
    """Our packages purged, Debian's reinstalled from their saved .debs (their
    maintainer scripts start nothing: policy-rc.d); idempotent."""
    if state["restored"]:
        return
    state["restored"] = True
    for p in list(state["procs"]):
        if p.poll() is None:
            p.kill()
            p.wait()
    present = [p for p in OURS if status_of(p)]
    if present:
        sh("dpkg", "--purge", *present, check=False)
    debs = [state["saved"][p] for p in DEBIAN_PACKAGES if p in state["saved"]]
    if debs:
        sh("dpkg", "-i", "--force-confdef", "--force-confold", *debs, check=False)
    if state["run_dir_added"] and os.path.isdir("/run/gearman"):
        shutil.rmtree("/run/gearman", ignore_errors=True)
    if state["policy_added"]:
        os.unlink(POLICY_RC)
    if state.get("sockdir"):
        shutil.rmtree(state["sockdir"], ignore_errors=True)


def _stopped(signum, _frame):
    sys.exit(128 + signum)  # atexit still runs: the machine is put back


atexit.register(restore)
signal.signal(signal.SIGTERM, _stopped)
signal.signal(signal.SIGINT, _stopped)


# ----------------------------------------------------------------------
# tests

@test
def test_package_builds_without_running_the_suite_under_nocheck():
    if os.geteuid() != 0:
        fail("run as root (tests/run-suite does)")
    for prog in ("dpkg-buildpackage", "dh", "lintian", "systemd-analyze", "setpriv", "logrotate"):
        if not shutil.which(prog) and not os.path.exists("/usr/sbin/" + prog):
            fail("%s not found (apt-get install debhelper lintian systemd logrotate)" % prog)
    shutil.rmtree(WORK, ignore_errors=True)
    tree = os.path.join(WORK, "gearmand-c")
    os.makedirs(tree)
    # a clean copy: the files git knows (or the tree without builds)
    if subprocess.run(["git", "-C", SRC, "rev-parse"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode == 0:
        files = subprocess.run(["git", "-C", SRC, "ls-files", "-z", "-co", "--exclude-standard"],
                               stdout=subprocess.PIPE, check=True).stdout
        tar = subprocess.Popen(["tar", "-C", SRC, "--null", "--ignore-failed-read", "-T", "-", "-cf", "-"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        untar = subprocess.Popen(["tar", "-C", tree, "-xf", "-"], stdin=tar.stdout)
        tar.stdin.write(files)
        tar.stdin.close()
        tar.stdout.close()
        assert untar.wait() == 0 and tar.wait() == 0
    else:
        sh("sh", "-c", 'tar -C "$1" --exclude=./build-suite -cf - . | tar -C "$2" -xf -', "sh", SRC, tree)
        sh("sh", "-c", "make distclean >/dev/null 2>&1 || rm -f config.status", cwd=tree, check=False)
    t0 = time.time()
    env = dict(ENV, DEB_BUILD_OPTIONS="nocheck parallel=%d" % min(2, os.cpu_count() or 1),
               DEB_BUILD_PROFILES="nocheck")
    out = sh("nice", "dpkg-buildpackage", "-us", "-uc", "-b", env=env, cwd=tree, timeout=1200)
    print("# built in %.0f s" % (time.time() - t0))
    assert "make check" not in out and not glob.glob(os.path.join(tree, "**", "test-suite.log"),
                                                      recursive=True), "the package build ran tests"
    for p in OURS:
        debs = glob.glob(os.path.join(WORK, "%s_*.deb" % p))
        assert len(debs) == 1, (p, os.listdir(WORK))
        state["debs"].append(debs[0])


@test
def test_lintian_reports_no_errors():
    changes = glob.glob(os.path.join(WORK, "gearmand-c_*.changes"))
    assert len(changes) == 1, os.listdir(WORK)
    t0 = time.time()
    out = sh("lintian", "--tag-display-limit", "0", changes[0], check=False, timeout=600)
    print("# lintian: %.0f s" % (time.time() - t0))
    for line in out.splitlines():
        print("# " + line)
    errors = [line for line in out.splitlines() if line.startswith("E: ")]
    assert not errors, errors


@test
def test_installs_in_place_of_gearman_job_server_and_gearman_tools():
    assert len(state["debs"]) == 2, "no packages built"
    # keep what is needed to put the machine back, before anything changes
    for p in DEBIAN_PACKAGES:
        s = status_of(p)
        if not s or not s.startswith("install ok installed"):
            continue
        version = s.split()[-1]
        arch = sh("dpkg-query", "-W", "-f=${Architecture}", p)
        cached = "/var/cache/apt/archives/%s_%s_%s.deb" % (p, version.replace(":", "%3a"), arch)
        dest = os.path.join(WORK, "saved")
        os.makedirs(dest, exist_ok=True)
        if os.path.exists(cached):
            shutil.copy(cached, dest)
            state["saved"][p] = os.path.join(dest, os.path.basename(cached))
        else:
            sh("apt-get", "download", "%s=%s" % (p, version), cwd=dest, timeout=300)
            found = glob.glob(os.path.join(dest, "%s_*.deb" % p))
            assert len(found) == 1, "cannot keep %s %s: %s" % (p, version, found)
            state["saved"][p] = found[0]
    state["before"] = snapshot()
    # which conffiles of Debian's package are as it shipped them (dpkg then
    # hands them to ours without a question) and which were changed (kept)
    as_shipped = {}
    if installed("gearman-job-server"):
        for line in sh("dpkg-query", "-W", "-f=${Conffiles}", "gearman-job-server").splitlines():
            f = line.split()
            if len(f) >= 2 and os.path.exists(f[0]):
                with open(f[0], "rb") as fh:
                    as_shipped[f[0]] = hashlib.md5(fh.read()).hexdigest() == f[1]
    if not os.path.exists(POLICY_RC):
        with open(POLICY_RC, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(POLICY_RC, 0o755)
        state["policy_added"] = True
    sh("dpkg", "-i", "--force-confdef", "--force-confold", *state["debs"])
    for p in OURS:
        assert installed(p), (p, status_of(p))
    for p in DEBIAN_PACKAGES:
        assert not installed(p), "%s is still installed: %s" % (p, status_of(p))
    v = sh("/usr/sbin/gearmand", "--config-file", "/dev/null", "--version")
    assert re.match(r"^\ngearmand 0\.", v), v
    # built with every library of Build-Depends: every queue, systemd's readiness
    helped = sh("/usr/sbin/gearmand", "--config-file", "/dev/null", "--help")
    assert "Not built" not in helped and "built in (libsystemd)" in helped, helped[-600:]
    assert "gearadmin" in sh("/usr/bin/gearadmin", "--help")
    pw = pwd.getpwnam("gearman")
    for d in ("/var/lib/gearman", "/var/log/gearman-job-server"):
        st = os.stat(d)
        assert st.st_uid == pw.pw_uid, "%s is owned by %d" % (d, st.st_uid)
    for conffile in (DEFAULT_FILE, "/etc/logrotate.d/gearman-job-server"):
        with open(conffile) as f:
            ours = "gearmand-c" in f.read()
        assert ours == as_shipped.get(conffile, True), (conffile, ours, as_shipped)


@test
def test_installed_unit_passes_systemd_analyze_verify():
    out = sh("systemd-analyze", "verify", UNIT, check=False)
    assert out.strip() == "", out


@test
def test_service_command_runs_as_gearman_with_its_queue_in_var_lib_gearman_and_a_job_round_trips():
    if not os.path.isdir("/run/gearman"):
        # RuntimeDirectory=gearman: systemd makes it before ExecStart
        state["run_dir_added"] = True
        gid = grp.getgrnam("gearman").gr_gid
        os.mkdir("/run/gearman", 0o755)
        os.chown("/run/gearman", pwd.getpwnam("gearman").pw_uid, gid)
    svc = Service()
    try:
        assert "--queue-type=libsqlite3" in svc.argv and "--libsqlite3-db=" + QUEUE in svc.argv, svc.argv
        with open("/proc/%d/status" % svc.proc.pid) as f:
            uid = [line.split()[1] for line in f if line.startswith("Uid:")][0]
        assert int(uid) == pwd.getpwnam("gearman").pw_uid, uid
        assert admin(svc.port, "getpid") == "OK %d\n" % svc.proc.pid
        st = os.stat(QUEUE)
        assert st.st_uid == pwd.getpwnam("gearman").pw_uid, st
        round_trip(svc.port)
        # a background job with no worker: stored before it is acknowledged
        rc, out = tool(svc.port, "/usr/bin/gearman", "-b", "-f", "kept", "across restarts")
        assert rc == 0, out
        assert status_row(svc.port, "kept") == (1, 0, 0), admin(svc.port, "status")
    finally:
        svc.stop()


@test
def test_stored_job_survives_a_restart_of_the_service_command_and_a_reinstall():
    svc = Service()
    try:
        assert status_row(svc.port, "kept") == (1, 0, 0), admin(svc.port, "status")
    finally:
        svc.stop()
    # an upgrade's path: the same packages installed over themselves
    sh("dpkg", "-i", "--force-confdef", "--force-confold", *state["debs"])
    svc = Service()
    try:
        assert status_row(svc.port, "kept") == (1, 0, 0), admin(svc.port, "status")
        rc, out = tool(svc.port, "/usr/bin/gearman", "-w", "-c", "1", "-f", "kept", timeout=30)
        assert rc == 0 and out == "across restarts", (rc, out)
        wait_until(lambda: status_row(svc.port, "kept") in (None, (0, 0, 0)), timeout=10, what="the job to end")
    finally:
        svc.stop()


@test
def test_logrotate_rotates_the_log_and_the_server_reopens_it():
    svc = Service()
    try:
        assert ("--log-file=" + LOG) in svc.argv, svc.argv
        assert os.path.exists(LOG), "no log file"
        # a line in it (logrotate leaves an empty log alone): ERROR for a bad packet
        with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as c:
            c.sendall(b"\0REQ" + (9999).to_bytes(4, "big") + (0).to_bytes(4, "big"))
            c.recv(4096)
        wait_until(lambda: os.path.getsize(LOG) > 0, timeout=10, what="a line in the log")
        logstate = os.path.join(WORK, "logrotate.state")
        sh("logrotate", "-f", "-s", logstate, "/etc/logrotate.d/gearman-job-server")
        assert os.path.exists(LOG + ".1"), os.listdir(os.path.dirname(LOG))
        # SIGHUP from the postrotate script: the server opens a new file by its name
        wait_until(lambda: os.path.exists(LOG), timeout=10, what="the log to be reopened")
        assert os.stat(LOG).st_uid == pwd.getpwnam("gearman").pw_uid
        assert admin(svc.port, "getpid") == "OK %d\n" % svc.proc.pid
    finally:
        svc.stop()


@test
def test_debians_stock_params_line_is_honoured_and_its_daemon_ignored():
    with open(DEFAULT_FILE) as f:
        ours = f.read()
    stock = ('PARAMS="--listen=localhost \\\n --daemon \\\n'
             ' --log-file=/var/log/gearman-job-server/gearmand.log"\n')
    try:
        with open(DEFAULT_FILE, "w") as f:
            f.write(stock)
        svc = Service()
        try:
            assert "--daemon" in svc.argv and "--queue-type=libsqlite3" not in svc.argv, svc.argv
            # in the foreground all the same, on localhost, and with the memory queue it asked for
            assert admin(svc.port, "getpid") == "OK %d\n" % svc.proc.pid
            rc, out = tool(svc.port, "/usr/bin/gearman", "-b", "-f", "in-memory", "x")
            assert rc == 0, out
        finally:
            svc.stop()
    finally:
        with open(DEFAULT_FILE, "w") as f:
            f.write(ours)


# ----------------------------------------------------------------------
# the unit under a real systemd: PID 1 of a PID namespace of its own

INNER = r"""#!/bin/sh
# In new PID, mount, UTS, IPC and cgroup namespaces: what a container
# manager gives systemd (a /run, /dev, cgroup mounts and journal of its
# own; the machine's files otherwise), then systemd as PID 1 with a target
# that wants gearmand.service only (no sysinit.target: nothing else starts).
set -e
port=$1 cgroup_kind=$2
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/systemd/system/gearmand.service.d /run/lock
printf '[Unit]\nDefaultDependencies=no\n[Service]\nEnvironment=GEARMAND_PORT=%s\n' "$port" \
    >/run/systemd/system/gearmand.service.d/gmtest.conf
printf '[Unit]\nDescription=gearmand only\nDefaultDependencies=no\nWants=gearmand.service\n' \
    >/run/systemd/system/gmtest.target
mount -t tmpfs -o mode=755 tmpfs /dev
mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9; mknod -m 666 /dev/tty c 5 0
mkdir /dev/pts /dev/shm; mount -t devpts -o newinstance,ptmxmode=666 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx; mount -t tmpfs tmpfs /dev/shm
if [ "$cgroup_kind" = unified ]; then
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
else
    mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
    mkdir /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
    if [ "$cgroup_kind" = hybrid ]; then
        mkdir /sys/fs/cgroup/unified; mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
    fi
fi
for d in /var/log/journal /var/lib/systemd; do [ ! -d $d ] || mount -t tmpfs tmpfs $d; done
exec env -i container=gmtest PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd --system \
    --unit=gmtest.target --log-target=console --show-status=no
"""


class NamespacedSystemd:
    """systemd as PID 1 of new namespaces, in a cgroup of its own under the
    machine's (removed afterwards); skip() where that cannot be made."""

    def __init__(self, port):
        self.cgroups = []
        fstype = sh("stat", "-fc", "%T", "/sys/fs/cgroup").strip()
        if fstype == "cgroup2fs":
            kind, roots = "unified", ["/sys/fs/cgroup"]
        elif os.path.isdir("/sys/fs/cgroup/systemd"):
            kind = "hybrid" if os.path.isdir("/sys/fs/cgroup/unified") else "legacy"
            roots = ["/sys/fs/cgroup/systemd"] + (["/sys/fs/cgroup/unified"] if kind == "hybrid" else [])
        else:
            gmtest.skip("no cgroup hierarchy for systemd here (%s)" % fstype)
        name = "gmtest-systemd-%d" % os.getpid()
        for root in roots:
            try:
                os.mkdir(os.path.join(root, name))
            except OSError as e:
                self.close()
                gmtest.skip("cannot make a cgroup under %s: %s" % (root, e))
            self.cgroups.append(os.path.join(root, name))
        inner = os.path.join(WORK, "systemd-inner.sh")
        with open(inner, "w") as f:
            f.write(INNER)
        os.chmod(inner, 0o755)
        self.log = os.path.join(WORK, "systemd.log")
        moves = "; ".join('echo $$ > "%s/cgroup.procs"' % c for c in self.cgroups)
        self.proc = subprocess.Popen(
            ["setsid", "sh", "-c", moves + "; exec unshare --pid --fork --kill-child --mount --uts --ipc --cgroup --mount-proc "
             + "%s %d %s" % (inner, port, kind)], stdin=subprocess.DEVNULL,
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        state["procs"].append(self.proc)
        self.pid1 = None
        deadline = time.time() + 30
        while time.time() < deadline and self.proc.poll() is None:
            children = open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)).read().split()
            if children and self.systemctl_ok(int(children[0])):
                self.pid1 = int(children[0])
                break
            time.sleep(0.2)
        if not self.pid1:
            with open(self.log, errors="replace") as f:
                tail = f.read()[-1500:]
            self.close()
            gmtest.skip("systemd does not come up in a namespace here: %r" % tail)

    def systemctl_ok(self, pid):
        r = subprocess.run(["nsenter", "-t", str(pid), "-m", "-p", "systemctl", "is-system-running"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
        return r.stdout.strip() not in (b"", b"offline")

    def run(self, *argv, check=True):
        return sh("nsenter", "-t", str(self.pid1), "-m", "-p", *argv, check=check)

    def show(self, *props):
        out = self.run("systemctl", "show", "gearmand.service", *["-p" + p for p in props])
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def close(self):
        if getattr(self, "proc", None) is not None:
            if self.pid1:
                os.kill(self.pid1, signal.SIGKILL)  # every process of its namespace dies with it
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            state["procs"].remove(self.proc)
            self.proc = None
        # the cgroups empty as the namespace's processes finish dying
        for c in reversed(self.cgroups):
            wait_until(lambda: _rmtree_cgroup(c), timeout=20, what="cgroup %s to be removed" % c)
        self.cgroups = []


def _rmtree_cgroup(top):
    """Removes the cgroup top and those under it, deepest first; False while one is still busy."""
    for root, dirs, _files in os.walk(top, topdown=False):
        for d in dirs:
            try:
                os.rmdir(os.path.join(root, d))
            except OSError:
                return False
    try:
        os.rmdir(top)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


@test
def test_unit_starts_and_reloads_under_systemd_with_its_sandbox():
    for prog in ("unshare", "nsenter", "setsid"):
        if not shutil.which(prog):
            gmtest.skip("%s not found" % prog)
    port = gmtest.free_port()
    sd = NamespacedSystemd(port)
    try:
        def active():
            v = sd.show("ActiveState", "SubState", "Result")
            # failed, or waiting to be started again after a failure (Restart=on-failure)
            if v["ActiveState"] == "failed" or v["SubState"] == "auto-restart":
                fail("gearmand.service did not start: %s\n%s" % (v, sd.run(
                    "systemctl", "status", "--no-pager", "-l", "gearmand.service", check=False)))
            return v["ActiveState"] == "active"
        wait_until(active, timeout=60, what="gearmand.service to be active")
        v = sd.show("MainPID", "StatusText", "Type")
        assert v["Type"] == "notify" and v["StatusText"].startswith("serving on port %d" % port), v
        user = sd.run("ps", "-o", "user=", "-p", v["MainPID"]).strip()
        assert user == "gearman", user
        assert admin(port, "getpid") == "OK %s\n" % v["MainPID"]
        round_trip(port)
        rc, out = tool(port, "/usr/bin/gearman", "-b", "-f", "kept-by-systemd", "through a restart")
        assert rc == 0, out
        sd.run("systemctl", "restart", "gearmand.service")
        assert status_row(port, "kept-by-systemd") == (1, 0, 0), admin(port, "status")
        rc, out = tool(port, "/usr/bin/gearman", "-w", "-c", "1", "-f", "kept-by-systemd")
        assert rc == 0 and out == "through a restart", (rc, out)
        # reload: SIGHUP, the log reopened by its name
        os.rename(LOG, LOG + ".old")
        sd.run("systemctl", "reload", "gearmand.service")
        wait_until(lambda: os.path.exists(LOG), timeout=10, what="the log to be reopened")
        os.unlink(LOG + ".old")
        sd.run("systemctl", "stop", "gearmand.service")
        v = sd.show("ActiveState", "Result", "ExecMainStatus")
        assert v == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, v
    finally:
        sd.close()


@test
def test_dpkg_r_removes_the_binaries_and_keeps_the_queue():
    sh("dpkg", "-r", *OURS)
    for path in ("/usr/sbin/gearmand", "/usr/bin/gearman", "/usr/bin/gearadmin", UNIT):
        assert not os.path.exists(path), "%s left after dpkg -r" % path
    assert os.path.exists(QUEUE), "dpkg -r removed the queue"
    assert os.path.exists(DEFAULT_FILE), "dpkg -r removed a conffile"


@test
def test_dpkg_purge_removes_the_queue():
    sh("dpkg", "--purge", *OURS)
    assert not os.path.exists(QUEUE), "the queue is left after a purge"
    assert not glob.glob(QUEUE + "*")


@test
def test_the_machine_is_left_as_it_was():
    before = state["before"]
    assert before is not None, "nothing was installed"
    restore()
    after = snapshot()
    diff = {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert not diff, "changed: %r" % diff


if __name__ == "__main__":
    gmtest.main()
