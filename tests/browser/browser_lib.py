"""Helpers shared by the browser tests (tests/browser/test_*.py): where the
build tree and playwright-core are, and the prerequisites (Debian's
Chromium, Node.js 18 or newer, playwright-core from npm installed once into
the build tree under tests/browser/node_modules and reused).  A missing one
fails the test with what to install.

Only the Python standard library is used.
"""

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gmtest  # noqa: E402
from gmtest import fail  # noqa: E402

# The build tree: make check sets TOP_BUILDDIR; by hand, GEARMAND's tree.
if os.environ.get("TOP_BUILDDIR"):
    BUILD = os.environ["TOP_BUILDDIR"]
elif os.environ.get("GEARMAND"):
    BUILD = os.path.dirname(os.path.dirname(os.path.abspath(os.environ["GEARMAND"])))
else:
    BUILD = gmtest.TOP_BUILDDIR
OUT_DIR = os.path.join(BUILD, "tests", "browser")
NODE_DIR = os.environ.get("PLAYWRIGHT_DIR") or OUT_DIR  # holds node_modules/playwright-core


def find_chromium():
    if os.environ.get("CHROMIUM"):
        c = os.environ["CHROMIUM"]
        if not (os.path.isfile(c) and os.access(c, os.X_OK)):
            fail("CHROMIUM=%s is not an executable file" % c)
        return c
    for c in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    fail("Chromium not found (looked for $CHROMIUM, /usr/bin/chromium, /usr/bin/chromium-browser): install "
         "Debian's packages with `apt-get install -y chromium chromium-driver`, or set CHROMIUM=/path/to/chromium")


def find_node():
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        fail("Node.js not found on PATH: install it (Debian: `apt-get install -y nodejs npm`); "
             "the monitor test drives Chromium with playwright-core from npm")
    v = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    try:
        major = int(v.lstrip("v").split(".")[0])
    except ValueError:
        major = 0
    if major < 18:
        fail("Node.js %s is too old for playwright-core (18 or newer is needed)" % (v or "?"))
    return node


def ensure_playwright():
    """playwright-core in NODE_DIR/node_modules: reused if there, else
    installed with npm (once per build tree; the browser tests run side by
    side under make -j, so one installs while the other waits for it)."""
    import fcntl
    pkg = os.path.join(NODE_DIR, "node_modules", "playwright-core", "package.json")
    if os.path.exists(pkg):
        return
    os.makedirs(NODE_DIR, exist_ok=True)
    with open(os.path.join(NODE_DIR, ".npm-install.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(pkg):
            install_playwright(pkg)


def install_playwright(pkg):
    npm = shutil.which("npm")
    if not npm:
        fail("npm not found on PATH and %s is missing: install npm (Debian: `apt-get install -y npm`) so the "
             "test can run `npm install playwright-core`" % pkg)
    cmd = [npm, "install", "--no-save", "--no-audit", "--no-fund", "--no-package-lock", "--prefix", NODE_DIR,
           "playwright-core@1"]
    # no browser download: playwright-core never fetches one, and we use Debian's Chromium
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if p.returncode != 0 or not os.path.exists(pkg):
        fail("`%s` failed (%s):\n%s" % (" ".join(cmd), p.returncode, (p.stdout + p.stderr)[-3000:]))


def run_spec(node, spec, env):
    """Runs a browser spec (node SPEC) with env, echoes its stderr as
    comments, and returns its result: the last JSON line it printed, with
    "seconds" added.  Fails the test if there is none or it says "fatal"."""
    import json
    import time
    name = os.path.basename(spec)
    t0 = time.time()
    p = subprocess.run([node, spec], capture_output=True, text=True, timeout=120, env=env)
    for line in p.stderr.splitlines():
        print("# " + line, flush=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        fail("%s printed no result (exit %s):\n%s" % (name, p.returncode, (p.stdout + p.stderr)[-3000:]))
    res = json.loads(lines[-1])
    if res.get("fatal"):
        fail("%s failed: %s" % (name, res["fatal"]))
    res["seconds"] = time.time() - t0
    return res


def spec_step(result, spec, name):
    """The data of step `name` of a spec's result; fails the test if the
    step did not run or failed in the browser."""
    st = result["steps"].get(name)
    if st is None:
        fail("%s did not run step %r" % (os.path.basename(spec), name))
    if not st["ok"]:
        fail("step %r failed in the browser:\n%s" % (name, st["error"]))
    return st["data"]
