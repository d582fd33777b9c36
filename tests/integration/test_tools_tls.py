#!/usr/bin/env python3
"""Our `gearman` and `gearadmin` tools over TLS (-S, --ssl-ca-file,
--ssl-certificate, --ssl-key; bin/client_tls.c; docs/gearman.1 and
docs/gearadmin.1).

The tools under test are $TOP_BUILDDIR/bin/gearman and bin/gearadmin, as in
test_tools.py.  Certificates are made by the test with `openssl`
(tests/lib/tlsfix.py): a CA with a server certificate for localhost and
127.0.0.1 and a client certificate, a second CA and a client certificate of
it, and (here) a server certificate of the first CA for another name.

Each case that needs a TLS server runs twice: against stunnel4 in server mode
in front of our plain gearmand, and (suffix `_on_gearmand_ssl`) against our
gearmand's own `--ssl`, skipped while the server has no TLS code.  The cases: a
job round trip and admin commands over TLS; a wrong CA (or the system's
CAs) and a certificate for another host name are refused with the
verification error and exit status 1; a client certificate is presented to a
server that requires one (without it, or with one from another CA, the tool
says so and exits 1); -S to a plain-text port fails at once with a clear
error, and to a port that never answers within -t; fail-over passes a
server whose handshake fails; bad certificate files are named before
anything is sent.  In a build without OpenSSL only -S's refusal is tested.
Processes run with time-outs and are killed in finally blocks.
"""

import collections
import os
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gmtest  # noqa: E402
import tlsfix  # noqa: E402
import tlsutil  # noqa: E402
from gmtest import Server, fail, skip, test, wait_until  # noqa: E402

GEARMAN = os.path.join(gmtest.TOP_BUILDDIR, "bin", "gearman")
GEARADMIN = os.path.join(gmtest.TOP_BUILDDIR, "bin", "gearadmin")
ENV = {k: v for k, v in os.environ.items() if k not in ("GEARMAN_SERVER", "GEARMAN_SERVERS")}


def built_with_openssl():
    """Whether configure found OpenSSL for this build (its config.h)."""
    try:
        with open(os.path.join(gmtest.TOP_BUILDDIR, "config.h")) as f:
            return "#define HAVE_OPENSSL 1" in f.read()
    except OSError:
        return True


HAVE_OPENSSL = built_with_openssl()


# ----------------------------------------------------------------------
# certificates (made once), servers behind TLS, running the tools

class Certs:
    pass


Pem = collections.namedtuple("Pem", "cert key")  # file paths
_certs = None


def issue_for_another_name(fix):
    """A server certificate of the test CA for elsewhere.example only
    (tlsfix's are for localhost and 127.0.0.1)."""
    key, csr, cert, ext = (fix.path("elsewhere" + x) for x in (".key", ".csr", ".pem", ".ext"))
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                "subjectAltName=DNS:elsewhere.example\n")
    tlsfix.openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                   "-out", csr, "-subj", "/CN=elsewhere.example")
    tlsfix.openssl("x509", "-req", "-in", csr, "-CA", fix.ca, "-CAkey", fix.ca_key, "-set_serial",
                   "0x" + os.urandom(8).hex(), "-days", "30", "-extfile", ext, "-out", cert)
    return Pem(cert, key)


def certs():
    """The test's certificates, made on first use."""
    global _certs
    if not HAVE_OPENSSL:
        skip("built without OpenSSL (test_without_openssl_s_says_the_build_has_no_tls runs instead)")
    if _certs is None:
        if not tlsutil.have("openssl"):
            skip("openssl is not installed")
        fix = tlsfix.get()
        c = Certs()
        c.dir = fix.dir
        c.ca = Pem(fix.ca, fix.ca_key)
        c.server = Pem(fix.server, fix.server_key)
        c.client = Pem(*fix.client("tool-client"))
        c.elsewhere = issue_for_another_name(fix)
        c.other_ca = Pem(fix.rogue_ca, None)
        c.other_client = Pem(fix.rogue, fix.rogue_key)  # signed by other_ca
        _certs = c
    return _certs


def server_has_tls():
    """Whether the gearmand under test has TLS: until the server's TLS is
    built, --ssl is accepted on an OpenSSL build but serves plain text,
    and the binary calls no OpenSSL.  (Once it does, a gearmand --ssl that
    serves plain text fails these tests.)"""
    with open(gmtest.GEARMAND, "rb") as f:
        return b"SSL_CTX_new" in f.read()


class Front:
    """A gearmand reached over TLS on self.port: stunnel in front of a plain
    gearmand, or gearmand --ssl itself.  self.pid is the gearmand's."""

    def __init__(self, kind, server_cert=None, verify_client=False):
        self.kind = kind
        self.server_cert = server_cert or certs().server
        self.verify_client = verify_client
        self.server = self.tunnel = None

    def __enter__(self):
        c = certs()
        try:
            if self.kind == "stunnel":
                if not tlsutil.have("stunnel"):
                    skip("stunnel4 is not installed")
                self.server = Server().start()
                self.tunnel = tlsutil.Stunnel(self.server.port, self.server_cert.cert, self.server_cert.key,
                                              ca=c.ca.cert, verify_client=self.verify_client).start()
                self.port = self.tunnel.port
            else:
                if not server_has_tls():
                    skip("this gearmand has no TLS yet (it calls no SSL_CTX_new)")
                args = ["--ssl", "--ssl-certificate", self.server_cert.cert, "--ssl-key", self.server_cert.key,
                        "--ssl-ca-file", c.ca.cert] + (["--ssl-verify-client"] if self.verify_client else [])
                self.server = Server(*args).start()
                self.port = self.server.port
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.pid = self.server.proc.pid
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.tunnel:
            self.tunnel.stop()
        if self.server and self.server.proc:
            rc = self.server.stop()
            if exc_type is None and rc != 0:
                raise AssertionError("gearmand exited with %s; log:\n%s" % (rc, self.server.log_text()[-3000:]))


def on_both_fronts(fn):
    """Registers fn(kind) twice: through stunnel, and on gearmand --ssl."""
    def via_stunnel():
        fn("stunnel")

    def on_gearmand():
        fn("gearmand")
    via_stunnel.__name__ = fn.__name__
    on_gearmand.__name__ = fn.__name__ + "_on_gearmand_ssl"
    test(via_stunnel)
    test(on_gearmand)
    return fn


def tls(ca=None, cert=None, key=None):
    """The tools' TLS options: -S, the test CA unless another is given
    (ca=False: none, the system's), and a client certificate if asked."""
    args = ["-S"]
    ca = certs().ca.cert if ca is None else ca
    if ca:
        args += ["--ssl-ca-file", ca]
    if cert:
        args += ["--ssl-certificate", cert]
    if key:
        args += ["--ssl-key", key]
    return args


def run(tool, *args, port=None, host="127.0.0.1", input=b"", env=None, timeout=10.0):
    """Runs a tool (with -h HOST -p PORT first when port is given) to its
    end; returns the CompletedProcess.  A tool still running after timeout
    seconds fails the test (it hung)."""
    cmd = [tool] + (["-h", host, "-p", str(port)] if port else []) + list(args)
    try:
        return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout,
                              env=dict(ENV, **(env or {})))
    except subprocess.TimeoutExpired as e:
        fail("%s hung (%.0fs); stdout %r stderr %r" % (" ".join(cmd), timeout, e.stdout, e.stderr))


def ok(r):
    """r's stdout, after checking that it exited 0 with nothing on stderr."""
    assert r.returncode == 0 and r.stderr == b"", "%s: rc %d stdout %r stderr %r" % (
        " ".join(r.args[1:]), r.returncode, r.stdout[:500], r.stderr[:500])
    return r.stdout


def refused(r, *words):
    """Checks that r exited 1 with nothing on stdout and every word in its
    error message."""
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1 and r.stdout == b"" and all(w in err for w in words), \
        "%s: want rc 1 and %r in stderr; got rc %d stdout %r stderr %r" % (
            " ".join(r.args[1:]), words, r.returncode, r.stdout[:300], err[:500])
    return err


def status_line(port, fn, *extra):
    """fn's line of `gearadmin -S --status` (split), or None."""
    out = ok(run(GEARADMIN, *tls(*extra), "--status", port=port)).decode()
    for line in out.splitlines():
        f = line.split("\t")
        if f[0] == fn:
            return [int(x) for x in f[1:]]
    return None


class Worker:
    """`gearman -S -w ARGS` in the background, killed (by its pid) at the end."""

    def __init__(self, port, *args, tls_args=None):
        self.dir = tempfile.mkdtemp(prefix="gmtest-tlsworker-")
        self.err = os.path.join(self.dir, "err")
        with open(self.err, "wb") as e:
            self.proc = subprocess.Popen([GEARMAN, "-h", "127.0.0.1", "-p", str(port)] + (tls_args or tls()) +
                                         ["-w"] + list(args), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=e, env=ENV)

    def stderr(self):
        with open(self.err, "rb") as f:
            return f.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        shutil.rmtree(self.dir, True)


def wait_worker(port, fn, w, *extra):
    def ready():
        if w.proc.poll() is not None:
            fail("the worker exited with %s: %r" % (w.proc.returncode, w.stderr()))
        st = status_line(port, fn, *extra)
        return st is not None and st[2] >= 1
    wait_until(ready, timeout=10, what="a TLS worker for %s" % fn)


# ----------------------------------------------------------------------
# over TLS

@on_both_fronts
def test_job_round_trip_over_tls(kind):
    with Front(kind) as f, Worker(f.port, "-f", "tlsup", "--", "tr", "a-z", "A-Z") as w:
        wait_worker(f.port, "tlsup", w)
        assert ok(run(GEARMAN, *tls(), "-f", "tlsup", "hello", port=f.port)) == b"HELLO"
        # a host name checked against the certificate's DNS name, too
        assert ok(run(GEARMAN, *tls(), "-f", "tlsup", "named", port=f.port, host="localhost")) == b"NAMED"
        # many TLS records each way (and a worker that gets it in pieces)
        big = b"".join(b"line %06d of a big workload\n" % i for i in range(20000))
        assert ok(run(GEARMAN, *tls(), "-f", "tlsup", port=f.port, input=big)) == big.upper()
        # a background job: queued, then run by the worker
        ok(run(GEARMAN, *tls(), "-b", "-f", "tlsup", "bg", port=f.port))
        wait_until(lambda: status_line(f.port, "tlsup")[0] == 0, timeout=10, what="the background job to run")


@on_both_fronts
def test_admin_commands_over_tls(kind):
    with Front(kind) as f:
        out = ok(run(GEARADMIN, *tls(), "--getpid", "--create-function", "tlsf", "--status", "--workers",
                     "--show-jobs", "--server-version", port=f.port)).decode()
        lines = out.splitlines()
        assert lines[0] == str(f.pid) and lines[1] == "OK" and "tlsf\t0\t0\t0" in lines, out
        assert lines[-1] and lines[-2] == ".", out  # the version, after the last list
        # an ERR reply over TLS: exit 1, as in plain text
        r = run(GEARADMIN, *tls(), "--drop-function", "no-such-function", port=f.port)
        assert r.returncode == 1 and r.stderr.startswith(b"Error: "), r


@on_both_fronts
def test_a_wrong_ca_is_refused_with_the_verification_error(kind):
    c = certs()
    with Front(kind) as f:
        for ca in (c.other_ca.cert, False):  # another CA; the system's CAs
            for tool, args in ((GEARMAN, ["-f", "x", "job"]), (GEARADMIN, ["--status"]),
                               (GEARMAN, ["-w", "-f", "x"])):
                err = refused(run(tool, *tls(ca=ca), *args, port=f.port),
                              "127.0.0.1:%d" % f.port, "the server's certificate was not accepted: ")
                # stunnel sends the server's certificate alone, gearmand its chain up to the CA
                assert "unable to get local issuer certificate" in err or \
                    "self-signed certificate in certificate chain" in err, err


@on_both_fronts
def test_the_certificate_must_name_the_host(kind):
    with Front(kind, server_cert=certs().elsewhere) as f:
        refused(run(GEARADMIN, *tls(), "--status", port=f.port), "certificate was not accepted: IP address mismatch")
        refused(run(GEARMAN, *tls(), "-f", "x", "job", port=f.port, host="localhost"),
                "certificate was not accepted: hostname mismatch")


@on_both_fronts
def test_a_client_certificate_is_presented_to_a_server_that_requires_one(kind):
    c = certs()
    with Front(kind, verify_client=True) as f:
        mine = (None, c.client.cert, c.client.key)
        assert ok(run(GEARADMIN, *tls(*mine), "--getpid", port=f.port)) == b"%d\n" % f.pid
        ok(run(GEARMAN, *tls(*mine), "-b", "-f", "withcert", "x", port=f.port))
        assert status_line(f.port, "withcert", *mine) == [1, 0, 0]
        with Worker(f.port, "-c", "1", "-f", "withcert", tls_args=tls(*mine)) as w:
            w.proc.wait(10)
            assert w.proc.returncode == 0, w.stderr()
        # without one, or with one from a CA the server does not trust
        refused(run(GEARADMIN, *tls(), "--getpid", port=f.port), "requires a client certificate")
        refused(run(GEARADMIN, *tls(None, c.other_client.cert, c.other_client.key), "--getpid", port=f.port),
                "did not accept our certificate")
        r = run(GEARMAN, *tls(), "-f", "x", "job", port=f.port)
        assert r.returncode == 1 and b"client certificate" in r.stderr, r


@on_both_fronts
def test_fail_over_passes_a_server_whose_handshake_fails(kind):
    with Front(kind) as f, Server() as plain:
        servers = "127.0.0.1:%d,127.0.0.1:%d" % (plain.port, f.port)
        ok(run(GEARMAN, *tls(), "-b", "-f", "fo", "x", env={"GEARMAN_SERVER": servers}))
        assert status_line(f.port, "fo") == [1, 0, 0]


# ----------------------------------------------------------------------
# no TLS server there, bad files, no OpenSSL

@test
def test_tls_to_a_plain_text_port_fails_at_once_with_a_clear_error():
    certs()
    with Server() as s:
        for tool, args in ((GEARMAN, ["-f", "x", "job"]), (GEARADMIN, ["--status"]), (GEARMAN, ["-w", "-f", "x"])):
            # well within the 10 s handshake time-out: the server's answer is not TLS
            refused(run(tool, *tls(), *args, port=s.port, timeout=8),
                    "127.0.0.1:%d" % s.port, "did not answer in TLS (is it a plain-text port?)")


@test
def test_tls_to_a_silent_port_gives_up_after_the_timeout():
    certs()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        refused(run(GEARMAN, "-t", "300", *tls(), "-f", "x", "job", port=port), "no TLS handshake within 300 ms")
        refused(run(GEARADMIN, "-t", "300", *tls(), "--status", port=port), "no TLS handshake within 300 ms")


@test
def test_bad_tls_files_are_named_before_connecting():
    c = certs()
    missing = os.path.join(c.dir, "missing.pem")
    with open(os.path.join(c.dir, "junk.pem"), "w") as j:
        j.write("not a certificate\n")
    junk = j.name
    port = gmtest.free_port()  # nothing listens: the files fail first
    cases = [
        (tls(ca=missing), ["cannot read the CA file %s: No such file or directory" % missing]),
        (tls(ca=junk), ["no usable CA certificate in %s" % junk]),
        (tls(None, missing, c.client.key), ["cannot read the certificate %s" % missing]),
        (tls(None, c.client.cert, missing), ["cannot read the key %s" % missing]),
        (tls(None, c.client.cert, c.server.key), ["the key in %s does not match the certificate in %s" % (
            c.server.key, c.client.cert)]),
        (tls(None, c.client.cert), ["no private key in %s (give its file with --ssl-key)" % c.client.cert]),
        (tls(None, None, c.client.key), ["--ssl-key needs --ssl-certificate"]),
        (["--ssl-ca-file", c.ca.cert], ["need -S (--ssl)"]),
    ]
    for opts, words in cases:
        refused(run(GEARMAN, *opts, "-f", "x", "job", port=port), *words)
        refused(run(GEARADMIN, *opts, "--status", port=port), *words)


@test
def test_without_openssl_s_says_the_build_has_no_tls():
    if HAVE_OPENSSL:
        skip("built with OpenSSL")
    port = gmtest.free_port()
    refused(run(GEARMAN, "-S", "-f", "x", "job", port=port), "this build has no TLS")
    refused(run(GEARADMIN, "-S", "--status", port=port), "this build has no TLS")


@test
def test_help_shows_the_tls_options():
    for tool, flag in ((GEARMAN, "-H"), (GEARADMIN, "--help")):
        out = ok(run(tool, flag)).decode()
        for opt in ("-S", "--ssl", "--ssl-ca-file", "--ssl-certificate", "--ssl-key"):
            assert opt in out, "%s %s does not mention %s" % (tool, flag, opt)


if __name__ == "__main__":
    gmtest.main()
