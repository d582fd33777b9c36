#!/usr/bin/env python3
"""`make install DESTDIR=...` and what it lays out for running gearmand as a
service: gearmand in sbin, the tools in bin, the man pages (gearmand(8)
covering every option of --help in its group, and every signal), the
systemd unit (`systemd-analyze verify` clean; its default PARAMS are options
gearmand accepts), the logrotate file, the sample config file (every option,
commented out so that gearmand 1.1.20, which has no comments, reads none of
them).  `make uninstall` takes every file away again.

The build tree is $TOP_BUILDDIR (make check sets it); the package test
(tests/package/test_package.py) installs the Debian package for real.
"""

import os
import re
import shutil
import shlex
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gmtest  # noqa: E402
from gmtest import test, fail  # noqa: E402

BUILD = gmtest.TOP_BUILDDIR
SRC = gmtest.TOP_SRCDIR
TMP = tempfile.mkdtemp(prefix="gmtest-install-")
DEST = os.path.join(TMP, "dest")
EMPTY_CONF = os.path.join(TMP, "empty.conf")
open(EMPTY_CONF, "w").close()
SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGHUP")


def make(*args):
    """Runs make in the build tree (not as a part of the make running us:
    its jobserver flags are dropped); returns stdout, or fails with its output."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    r = subprocess.run(["make", "-s", "--no-print-directory", "-C", BUILD] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env, timeout=300)
    out = r.stdout.decode(errors="replace")
    if r.returncode != 0:
        fail("make %s: exit %d\n%s" % (" ".join(args), r.returncode, out[-3000:]))
    return out


DIRS = dict(kv.split("=", 1) for kv in make("print-install-dirs").split())


def dest(path):
    return os.path.join(DEST, path.lstrip("/"))


def installed():
    """Every file (and symlink) under DEST, as absolute install paths."""
    found = set()
    for root, _dirs, files in os.walk(DEST):
        for f in files:
            found.add("/" + os.path.relpath(os.path.join(root, f), DEST))
    return found


def expected_files():
    want = {DIRS["sbindir"] + "/gearmand", DIRS["bindir"] + "/gearman", DIRS["bindir"] + "/gearadmin",
            DIRS["man1dir"] + "/gearman.1", DIRS["man1dir"] + "/gearadmin.1", DIRS["man8dir"] + "/gearmand.8",
            DIRS["logrotatedir"] + "/gearman-job-server", DIRS["examplesdir"] + "/gearmand.conf"}
    if DIRS.get("systemdsystemunitdir"):
        want.add(DIRS["systemdsystemunitdir"] + "/gearmand.service")
    return want


_installed = []


def install(fresh=False):
    """make install into DEST (once, unless fresh)."""
    if _installed and not fresh:
        return
    shutil.rmtree(DEST, ignore_errors=True)
    make("install", "DESTDIR=" + DEST)
    _installed.append(True)


def unit_path():
    if not DIRS.get("systemdsystemunitdir"):
        gmtest.skip("configured --with-systemdsystemunitdir=no")
    return dest(DIRS["systemdsystemunitdir"] + "/gearmand.service")


def unit_settings(path):
    """The unit's settings: name -> list of values, in order."""
    settings = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")):
                k, v = line.split("=", 1)
                settings.setdefault(k, []).append(v)
    return settings


def unit_default_params(settings):
    """PARAMS as the unit's Environment= sets it (before any EnvironmentFile)."""
    for env in settings.get("Environment", []):
        for assignment in shlex.split(env):
            name, value = assignment.split("=", 1)
            if name == "PARAMS":
                return value.split()
    fail("the unit sets no default PARAMS: %r" % settings.get("Environment"))


def help_groups(gearmand):
    """--help's groups: [(group, [long option names])], in order."""
    out = subprocess.run([gearmand, "--config-file", EMPTY_CONF, "--help"], stdout=subprocess.PIPE,
                         check=True).stdout.decode()
    groups = []
    for line in out.splitlines():
        m = re.match(r"^(\S.*):$", line)
        if m and m.group(1) != "Allowed options":
            groups.append((m.group(1), []))
            continue
        m = re.match(r"^  (?:-\S \[ )?--([a-z0-9-]+)", line)
        if m:
            groups[-1][1].append(m.group(1))
    assert len(groups) > 5 and sum(len(o) for _, o in groups) > 60, groups
    return groups


def man_sections(path):
    """The man page's sections: {heading: text}, and its .SS groups under
    OPTIONS: [(group, [long options named in each .TP's tag line])]."""
    with open(path) as f:
        lines = f.read().splitlines()
    sections, groups = {}, []
    section, after_tp = None, False
    for line in lines:
        if line.startswith(".SH "):
            section = line[4:].strip('"')
            sections[section] = ""
            continue
        if section is None:
            continue
        sections[section] += line + "\n"
        if section == "OPTIONS" and line.startswith(".SS "):
            groups.append((line[4:].strip('"'), []))
        elif line == ".TP":
            after_tp = True
        elif after_tp:
            after_tp = False
            if section == "OPTIONS":
                names = re.findall(r"\\fB\\-\\-((?:[a-z0-9]|\\-)+)\\fR", line)
                assert names, "an option tag names no long option: %r" % line
                groups[-1][1].append(names[0].replace("\\-", "-"))
    return sections, groups


# ----------------------------------------------------------------------
# make install / make uninstall

@test
def test_make_install_lays_out_every_file():
    install(fresh=True)
    want, have = expected_files(), installed()
    assert have == want, "missing %s, unexpected %s" % (sorted(want - have), sorted(have - want))
    assert not os.path.exists(dest(DIRS["bindir"] + "/gearmand")), "gearmand is in bin (Debian's is in sbin)"
    for p in sorted(want):
        mode = stat.S_IMODE(os.stat(dest(p)).st_mode)
        program = p.startswith((DIRS["bindir"] + "/", DIRS["sbindir"] + "/"))
        assert mode == (0o755 if program else 0o644), "%s: mode %o" % (p, mode)
    # the installed programs run
    r = subprocess.run([dest(DIRS["sbindir"] + "/gearmand"), "--config-file", EMPTY_CONF, "--version"],
                       stdout=subprocess.PIPE, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith(b"\ngearmand "), r
    for tool, flag in (("gearman", "-H"), ("gearadmin", "--help")):
        r = subprocess.run([dest(DIRS["bindir"] + "/" + tool), flag], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10)
        assert r.returncode == 0 and tool.encode() in r.stdout, (tool, r)


@test
def test_make_uninstall_removes_every_file():
    install(fresh=True)
    make("uninstall", "DESTDIR=" + DEST)
    assert installed() == set(), sorted(installed())
    _installed.clear()


# ----------------------------------------------------------------------
# the systemd unit

@test
def test_unit_passes_systemd_analyze_verify():
    install()
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        fail("systemd-analyze not found (apt-get install systemd)")
    # verify checks that ExecStart's program exists: point it into DESTDIR
    with open(unit_path()) as f:
        text = f.read()
    sbin = DIRS["sbindir"] + "/gearmand"
    assert ("ExecStart=%s " % sbin) in text, text
    copy = os.path.join(TMP, "gearmand.service")
    with open(copy, "w") as f:
        f.write(text.replace("ExecStart=%s " % sbin, "ExecStart=%s " % dest(sbin)))
    r = subprocess.run([analyze, "verify", copy], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0 and out.strip() == "", "systemd-analyze verify: exit %d\n%s" % (r.returncode, out)


@test
def test_unit_is_type_notify_when_built_with_libsystemd_and_runs_as_gearman():
    install()
    with open(unit_path()) as f:
        text = f.read()
    assert not re.search(r"@[A-Za-z_]+@", text), "a configure variable is left in the unit"
    s = unit_settings(unit_path())
    with open(os.path.join(BUILD, "config.h")) as f:
        notify = "#define HAVE_LIBSYSTEMD 1" in f.read()
    assert s["Type"] == ["notify" if notify else "exec"], (s["Type"], notify)
    assert s["User"] == ["gearman"] and s["StateDirectory"] == ["gearman"], s
    assert s["EnvironmentFile"] == ["-/etc/default/gearman-job-server"], s
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"], s
    assert s["ExecStart"][0].endswith(" $PARAMS"), s["ExecStart"]
    assert "gearman-job-server.service" in s["Alias"], s
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert hardening in s, hardening


@test
def test_unit_default_params_and_debians_stock_params_are_options_gearmand_accepts():
    install()
    s = unit_settings(unit_path())
    start = s["ExecStart"][0].split()
    params = unit_default_params(s)
    gearmand = dest(DIRS["sbindir"] + "/gearmand")
    # the queue in the state directory, the log in the logs directory
    assert "--queue-type=libsqlite3" in params, params
    assert any(p.startswith("--libsqlite3-db=/var/lib/%s/" % s["StateDirectory"][0]) for p in params), params
    assert any(p.startswith("--log-file=/var/log/%s/" % s["LogsDirectory"][0]) for p in params), params
    assert any(p.startswith("--pid-file=/run/%s/" % s["RuntimeDirectory"][0]) for p in start), start
    debian_stock = ["--listen=localhost", "--daemon", "--log-file=/var/log/gearman-job-server/gearmand.log"]
    for p in (params, debian_stock):
        argv = [gearmand] + [a for a in start[1:] if a != "$PARAMS"] + p + ["--config-file", EMPTY_CONF,
                                                                            "--check-args"]
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        assert r.returncode == 0 and r.stdout == b"", (argv, r)


@test
def test_logrotate_file_rotates_the_units_log_and_signals_its_pid_file():
    install()
    with open(dest(DIRS["logrotatedir"] + "/gearman-job-server")) as f:
        text = f.read()
    s = unit_settings(unit_path())
    log = [p.split("=", 1)[1] for p in unit_default_params(s) if p.startswith("--log-file=")][0]
    pidf = [p.split("=", 1)[1] for p in s["ExecStart"][0].split() if p.startswith("--pid-file=")][0]
    assert (os.path.dirname(log) + "/*.log {") in text, text
    assert ("kill -HUP \"$(cat %s)\"" % pidf) in text, text
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if os.path.exists(logrotate):
        # -d: parse and say what would be done, touching nothing
        state = os.path.join(TMP, "logrotate.state")
        r = subprocess.run([logrotate, "-d", "-s", state, dest(DIRS["logrotatedir"] + "/gearman-job-server")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        out = r.stdout.decode(errors="replace")
        assert r.returncode == 0 and "error" not in out.lower(), out


# ----------------------------------------------------------------------
# gearmand(8)

@test
def test_man_page_documents_every_option_in_its_help_group():
    install()
    groups = help_groups(dest(DIRS["sbindir"] + "/gearmand"))
    _sections, man = man_sections(dest(DIRS["man8dir"] + "/gearmand.8"))
    assert [g for g, _ in man] == [g for g, _ in groups], "groups: man %r, --help %r" % (
        [g for g, _ in man], [g for g, _ in groups])
    for (group, opts), (_, man_opts) in zip(groups, man):
        extra = set(man_opts) - set(opts) - {"check-args"}  # --help does not list --check-args
        assert set(opts) <= set(man_opts), "%s: not in gearmand.8: %s" % (group, sorted(set(opts) - set(man_opts)))
        assert not extra, "%s: in gearmand.8 but not in --help: %s" % (group, sorted(extra))
        assert len(man_opts) == len(set(man_opts)), (group, man_opts)


@test
def test_man_page_documents_every_signal_and_renders_without_warnings():
    install()
    page = dest(DIRS["man8dir"] + "/gearmand.8")
    sections, _ = man_sections(page)
    for name in SIGNALS:
        assert name in sections.get("SIGNALS", ""), "%s missing from SIGNALS" % name
    assert "SIGHUP" in sections["SIGNALS"] and "log" in sections["SIGNALS"] and "acl" in sections["SIGNALS"]
    groff = shutil.which("groff")
    if groff:
        r = subprocess.run([groff, "-man", "-ww", "-z", page], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        assert r.returncode == 0 and r.stdout == b"", r.stdout.decode(errors="replace")


# ----------------------------------------------------------------------
# the sample config file

def sample_lines():
    with open(dest(DIRS["examplesdir"] + "/gearmand.conf")) as f:
        return f.read().splitlines()


@test
def test_sample_config_lists_every_option_commented_out_in_its_help_group():
    install()
    groups = help_groups(dest(DIRS["sbindir"] + "/gearmand"))
    names = [g for g, _ in groups]
    where, heading = {}, None
    for line in sample_lines():
        assert not line.startswith("--"), "an option is on: %r (the sample turns nothing on)" % line
        # a group's heading: "# <group as --help names it>", maybe with a remark in brackets
        m = re.match(r"^# (.+?)(?: \(.*)?$", line)
        if m and m.group(1) in names:
            heading = m.group(1)
        elif line.startswith("#--"):
            name = re.match(r"^#--([a-z0-9-]+)", line).group(1)
            assert name not in where, "--%s listed twice" % name
            where[name] = heading
    for group, opts in groups:
        for name in opts:
            if name in ("help", "version", "config-file"):  # not for a config file
                continue
            assert name in where, "--%s missing from the sample" % name
            assert where[name] == group, "--%s under %r, --help has it in %r" % (name, where[name], group)


@test
def test_sample_config_is_safe_for_gearmand_1_1_20_and_each_line_is_accepted_when_uncommented():
    install()
    lines = sample_lines()
    # 1.1.20 reads every word starting with a dash as an option, even after '#'
    for n, line in enumerate(lines, 1):
        for word in line.split():
            assert not word.startswith("-"), "line %d: %r would be an option to gearmand 1.1.20" % (n, word)
    gearmand = dest(DIRS["sbindir"] + "/gearmand")
    on = os.path.join(TMP, "uncommented.conf")
    with open(on, "w") as f:
        f.write("\n".join(line[1:] if line.startswith("#--") else line for line in lines) + "\n")
    for conf in (dest(DIRS["examplesdir"] + "/gearmand.conf"), on):
        r = subprocess.run([gearmand, "--config-file", conf, "--check-args"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10)
        assert r.returncode == 0 and r.stdout == b"", (conf, r)
    reference = "/usr/sbin/gearmand"
    if os.path.exists(reference):
        v = subprocess.run([reference, "--version"], stdout=subprocess.PIPE, timeout=10).stdout
        if b"1.1.20" in v:
            r = subprocess.run([reference, "--config-file", dest(DIRS["examplesdir"] + "/gearmand.conf"),
                                "--check-args"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
            assert r.returncode == 0 and r.stdout == b"", r


if __name__ == "__main__":
    try:
        gmtest.main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
