#!/usr/bin/env python3
"""The web monitor over HTTPS (gearmand -r http --ssl) in headless Chromium.

The server uses the test certificates of tests/lib/tlsfix.py.  Chromium
trusts the server's certificate through --ignore-certificate-errors-spki-list
with the SHA-256 hash of that certificate's public key (a pin on exactly our
test key: Debian's Chromium has no command-line option to add a CA, and a
scratch NSS database would need certutil from libnss3-tools).  Controls show
that the pin is what makes it load: without it, and with another key's hash,
the page does not load.

tests/browser/monitor_tls.spec.js drives the browser (playwright-core, set
up as for test_monitor.py by browser_lib.py); this script makes the state
(one function with 3 queued jobs and a worker, through TLS connections) and
decides.  The screenshot is tests/browser/monitor-tls.png in the build tree.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import gmtest  # noqa: E402
import tlsfix  # noqa: E402
from gmtest import Server, fail, submit, test  # noqa: E402
from browser_lib import (NODE_DIR, OUT_DIR, ensure_playwright, find_chromium, find_node, run_spec,  # noqa: E402
                         spec_step)

SPEC = os.path.join(HERE, "monitor_tls.spec.js")
FN = "tls.thumbnail"
R = {}


def run():
    """Starts the server, makes the state, runs the spec once."""
    if "result" in R:
        return R["result"]
    if "error" in R:
        fail(R["error"])
    try:
        chromium, node = find_chromium(), find_node()
        ensure_playwright()
        fix = tlsfix.get()
        port = gmtest.free_port()
        s = Server("-r", "http", "--http-port", str(port), "--ssl", "--ssl-certificate", fix.server,
                   "--ssl-key", fix.server_key, tls=tlsfix.client_context(fix))
        s.start()
        R["server"] = s
        gmtest.wait_until(lambda: gmtest.port_open(port), what="the HTTPS port")
        c, w = s.conn(), s.conn()
        R["conns"] = [c, w]
        for i in range(3):
            submit(c, "SUBMIT_JOB_BG", FN, "job-%d" % i)
        w.send_packet("CAN_DO", FN)
        gmtest.sync(w)
        os.makedirs(OUT_DIR, exist_ok=True)
        env = dict(os.environ, GM_HTTPS="https://127.0.0.1:%d" % port, GM_SPKI=fix.spki_sha256(fix.server),
                   GM_WRONG_SPKI=fix.spki_sha256(fix.server2), GM_FUNCTION=FN, GM_OUT_DIR=OUT_DIR,
                   PLAYWRIGHT_DIR=NODE_DIR, CHROMIUM=chromium)
        res = run_spec(node, SPEC, env)
        R["seconds"] = res["seconds"]
        R["result"] = res
        return res
    except Exception as e:  # noqa: BLE001 - every later test reports it
        R["error"] = "the browser run did not complete: %s: %s" % (type(e).__name__, e)
        raise


def step(name):
    return spec_step(run(), SPEC, name)


@test
def test_chromium_without_the_pin_does_not_load_the_page():
    d = step("untrusted")
    assert not d["loaded"], "Chromium loaded the HTTPS monitor without trusting the test certificate: %r" % d
    assert "ERR_CERT" in d["error"], "failed for another reason than the certificate: %s" % d["error"]


@test
def test_chromium_with_another_keys_pin_does_not_load_the_page():
    d = step("wrong_pin")
    assert not d["loaded"] and "ERR_CERT" in d["error"], d


@test
def test_monitor_over_https_shows_the_function_and_refreshes():
    d = step("trusted")
    assert d["status"] == 200 and d["protocol"] == "https:" and d["secure"] is True, d
    r = d["row"]
    assert r is not None, "the page does not list %s" % FN
    assert (r["normal"], r["workers"], r["queued"]) == ("3", "1", "3"), r
    assert d["health"] == "healthy", d["health"]
    assert len(d["api"]) >= 2 and all(u.startswith("https://") and st == 200 for u, st in d["api"]), d["api"]
    assert d["console"] == [], "errors in the browser console: %r" % d["console"]
    with open(d["screenshot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", d["screenshot"]
    print("# screenshot: %s; browser run %.1fs" % (d["screenshot"], R.get("seconds", 0)), flush=True)


@test
def test_the_browsers_connections_were_tls_and_the_server_stops_cleanly():
    run()
    s = R["server"]
    assert "TLS TLSv1.3 with 127.0.0.1:" in s.log_text(), "no TLS 1.3 connection in the log:\n" + s.log_text()[-2000:]
    for c in R.pop("conns"):
        c.close()
    rc = s.stop()
    assert rc == 0, "gearmand exited with %s" % rc


if __name__ == "__main__":
    try:
        gmtest.main()
    finally:
        if "server" in R:
            R["server"].stop()
