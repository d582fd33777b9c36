"""tlsfix: the certificates of the TLS tests, made with the `openssl` command.

Every TLS test (tests/integration/test_tls.py, the interop tests through
stunnel, the browser test of the HTTPS monitor) takes its files from here,
so they are made one way, in a scratch folder, once per test process (and
removed when it exits):

  fix = tlsfix.get()          # makes them on first use (about 0.2 s)
  fix.ca, fix.ca_key          the test CA ("gmtest CA", self-signed)
  fix.server, fix.server_key  CN=localhost, subjectAltName DNS:localhost and
                              IP:127.0.0.1, serverAuth, signed by the CA
  fix.server2, fix.server2_key  the same names with another key and serial
                              (O=second): the "new" certificate of the SIGHUP
                              tests
  fix.client("billing")       (cert, key) of a client certificate CN=billing
                              signed by the CA (made on first use; any name)
  fix.rogue, fix.rogue_key    CN=billing signed by a second, unrelated CA
                              (fix.rogue_ca)
  fix.expired, fix.expired_key  CN=billing signed by the CA, valid from
                              2001-01-01 to 2002-01-01 only
  fix.fingerprint(cert)       its SHA-256 fingerprint ("AB:CD:...", as openssl
                              prints it)
  fix.spki_sha256(cert)       base64 SHA-256 of its public key (what
                              Chromium's --ignore-certificate-errors-spki-list
                              takes)

and the Python side of a client:

  tlsfix.client_context(fix, cert=None, key=None, verify=True, version=None)
      an ssl.SSLContext that trusts the test CA (verify=False: trusts
      nothing, checks nothing), presents cert/key when given, and with
      version="1.1" / "1.2" / "1.3" offers exactly that TLS version (1.1 at
      OpenSSL security level 0, so this client really can offer it).

Keys are EC P-256 (fast to make and to use).  Leaf certificates go through
`openssl ca` (one small CA folder per CA, with its index and serial), which
can date a certificate in the past.  Only the standard library and the
openssl program are used.
"""

import atexit
import base64
import hashlib
import os
import shutil
import ssl
import subprocess
import tempfile

SAN = "DNS:localhost,IP:127.0.0.1"

_CA_CNF = """\
[ ca ]
default_ca = gmtest

[ gmtest ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
preserve = yes

[ any ]
organizationName = optional
commonName = supplied

[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ client_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def openssl(*args, cwd=None):
    """Runs `openssl ARGS`; fails with its output if it does."""
    exe = shutil.which("openssl")
    if not exe:
        raise AssertionError("the openssl command is not installed (Debian: apt-get install openssl)")
    r = subprocess.run([exe] + list(args), cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("openssl %s failed (%d): %s" % (" ".join(args), r.returncode,
                                                             (r.stdout + r.stderr)[-2000:]))
    return r.stdout


class _CA:
    """A CA folder: its key, its self-signed certificate, `openssl ca`'s
    database."""

    def __init__(self, root, name, cn):
        self.dir = os.path.join(root, name)
        os.makedirs(os.path.join(self.dir, "newcerts"))
        open(os.path.join(self.dir, "index.txt"), "w").close()
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("%s\n" % os.urandom(8).hex().upper())
        self.cnf = os.path.join(self.dir, "ca.cnf")
        with open(self.cnf, "w") as f:
            f.write(_CA_CNF.format(dir=self.dir, san=SAN))
        self.cert = os.path.join(root, name + ".pem")
        self.key = os.path.join(root, name + ".key")
        openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.key, "-out", self.cert, "-days", "3650", "-sha256", "-subj", "/CN=" + cn,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-addext", "subjectKeyIdentifier=hash")

    def issue(self, root, name, subj, ext, start=None, end=None):
        """A new key and a certificate for subj signed by this CA; returns
        (cert path, key path)."""
        key = os.path.join(root, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(root, name + ".pem")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-out", csr, "-subj", subj)
        if start:
            dates = ["-startdate", start, "-enddate", end]
        else:
            # from a day back, so a clock a little behind ours accepts it too
            dates = ["-startdate", _utc_days_ago(1), "-days", "825"]
        openssl("ca", "-batch", "-notext", "-config", self.cnf, "-cert", self.cert, "-keyfile", self.key,
                "-extensions", ext, "-in", csr, "-out", cert, *dates)
        os.chmod(key, 0o600)
        return cert, key


def _utc_days_ago(n):
    import datetime
    t = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=n)
    return t.strftime("%Y%m%d%H%M%SZ")


class Fixture:
    """The files of one test process (see the top of this file)."""

    def __init__(self, root=None):
        self.dir = root or tempfile.mkdtemp(prefix="gmtest-tls-")
        self._ca = _CA(self.dir, "ca", "gmtest CA")
        self.ca, self.ca_key = self._ca.cert, self._ca.key
        self._rogue_ca = _CA(self.dir, "rogue-ca", "gmtest other CA")
        self.rogue_ca = self._rogue_ca.cert
        self.server, self.server_key = self._ca.issue(self.dir, "server", "/CN=localhost", "server_ext")
        self.server2, self.server2_key = self._ca.issue(self.dir, "server2", "/O=second/CN=localhost",
                                                        "server_ext")
        self._clients = {}
        self.rogue, self.rogue_key = self._rogue_ca.issue(self.dir, "rogue-billing", "/CN=billing", "client_ext")
        self.expired, self.expired_key = self._ca.issue(self.dir, "expired-billing", "/CN=billing", "client_ext",
                                                        start="20010101000000Z", end="20020101000000Z")

    def client(self, name):
        """(cert, key) of a client certificate CN=name signed by the test CA."""
        if name not in self._clients:
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
            self._clients[name] = self._ca.issue(self.dir, "client-" + safe, "/CN=" + name, "client_ext")
        return self._clients[name]

    def path(self, name):
        """A path in the scratch folder (for files a test makes itself)."""
        return os.path.join(self.dir, name)

    @staticmethod
    def fingerprint(cert):
        """SHA-256 fingerprint of a PEM certificate, "AB:CD:..."."""
        with open(cert) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        h = hashlib.sha256(der).hexdigest().upper()
        return ":".join(h[i:i + 2] for i in range(0, len(h), 2))

    @staticmethod
    def der_fingerprint(der):
        h = hashlib.sha256(der).hexdigest().upper()
        return ":".join(h[i:i + 2] for i in range(0, len(h), 2))

    @staticmethod
    def spki_sha256(cert):
        """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate."""
        pub = openssl("x509", "-in", cert, "-noout", "-pubkey")
        der = subprocess.run([shutil.which("openssl"), "pkey", "-pubin", "-outform", "DER"], input=pub.encode(),
                             capture_output=True, timeout=30, check=True).stdout
        return base64.b64encode(hashlib.sha256(der).digest()).decode()


_fixture = None


def get():
    """The fixture of this process, made on first use."""
    global _fixture
    if _fixture is None:
        _fixture = Fixture()
        atexit.register(shutil.rmtree, _fixture.dir, True)
    return _fixture


_VERSIONS = {
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def client_context(fix=None, cert=None, key=None, verify=True, version=None):
    """An ssl.SSLContext for a test client (see the top of this file)."""
    fix = fix or get()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(fix.ca)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    if version:
        v = _VERSIONS[version]
        if version == "1.1":
            # Debian's openssl.cnf allows TLS 1.2 and newer at security
            # level 2; a client that must offer 1.1 lowers both
            ctx.set_ciphers("DEFAULT@SECLEVEL=0")
        ctx.minimum_version = v
        ctx.maximum_version = v
    return ctx


def server_context(fix=None, version=None):
    """An ssl.SSLContext for a stand-in TLS server with the test server
    certificate (a control: shows that a client context really can do what
    a test says our server refuses)."""
    fix = fix or get()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(fix.server, fix.server_key)
    if version:
        v = _VERSIONS[version]
        if version == "1.1":
            ctx.set_ciphers("DEFAULT@SECLEVEL=0")
        ctx.minimum_version = v
        ctx.maximum_version = v
    return ctx
