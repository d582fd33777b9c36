"""tcfile.py: a Tokyo Cabinet queue file as the tests see it, read and
written through libtokyocabinet itself (ctypes), binary-safe.  Used by
test_persistence.py, test_crash.py and the bench for -q libtokyocabinet.

The layout is plugins/queue/tokyocabinet.c's (docs/persistence.md): a job
is key NUL "J" <handle>, value version 1, priority, sequence (8 bytes), run
time (8), four 4-byte lengths, then function, unique, data, lifecycle bytes;
NUL "C" is the handle counter, NUL "S" the next sequence number, NUL "P"
<function> a policy.  Records without the leading NUL are gearmand 1.1.20's
(reference 5.8): key <function>-<unique>, value function NUL unique NUL
priority digit NUL run time NUL data (put_1_1_20 writes one, with the
library, since Debian's gearmand is built without Tokyo Cabinet).

jobs() reads a copy of the file, never the file a server holds: Tokyo
Cabinet opening a file whose write-ahead log is not empty (a transaction in
progress) plays that log back into it, even for a reader without a lock,
which undoes the server's transaction under its feet (seen as jobs stored
twice and completions lost).  A copy taken in the middle of a batch may be
inconsistent: such records are skipped, not fatal (callers poll).
"""

import ctypes
import ctypes.util
import os
import shutil
import struct
import tempfile

_lib = None


def lib():
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("tokyocabinet")
        if not name:
            raise RuntimeError("libtokyocabinet is not installed (apt-get install libtokyocabinet-dev)")
        _lib = ctypes.CDLL(name)
        vp, cp, ip = ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)
        for fn, res, args in (
                ("tcadbnew", vp, []), ("tcadbdel", None, [vp]), ("tcadbopen", ctypes.c_bool, [vp, cp]),
                ("tcadbclose", ctypes.c_bool, [vp]), ("tcadbiterinit", ctypes.c_bool, [vp]),
                ("tcadbiternext", vp, [vp, ip]), ("tcadbget", vp, [vp, cp, ctypes.c_int, ip]),
                ("tcadbput", ctypes.c_bool, [vp, cp, ctypes.c_int, cp, ctypes.c_int]),
                ("tcadbout", ctypes.c_bool, [vp, cp, ctypes.c_int]), ("tcfree", None, [vp])):
            f = getattr(_lib, fn)
            f.restype = res
            f.argtypes = args
    return _lib


class TcFile:
    """An open database: with TcFile(path, "re") as db: ..."""

    def __init__(self, path, mode="wc"):
        self.l = lib()
        self.db = self.l.tcadbnew()
        if not self.l.tcadbopen(self.db, ("%s#mode=%s" % (path, mode)).encode()):
            self.l.tcadbdel(self.db)
            raise OSError("tcadbopen %s (mode %s) failed" % (path, mode))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.db:
            self.l.tcadbclose(self.db)
            self.l.tcadbdel(self.db)
            self.db = None

    def _take(self, ptr, n):
        if not ptr:
            return None
        b = ctypes.string_at(ptr, n.value)
        self.l.tcfree(ptr)
        return b

    def keys(self):
        out = []
        n = ctypes.c_int()
        self.l.tcadbiterinit(self.db)
        while True:
            k = self._take(self.l.tcadbiternext(self.db, ctypes.byref(n)), n)
            if k is None:
                return out
            out.append(k)

    def get(self, key):
        n = ctypes.c_int()
        return self._take(self.l.tcadbget(self.db, key, len(key), ctypes.byref(n)), n)

    def put(self, key, value):
        assert self.l.tcadbput(self.db, key, len(key), value, len(value)), "tcadbput failed"

    def out(self, key):
        return self.l.tcadbout(self.db, key, len(key))

    def items(self):
        return [(k, self.get(k)) for k in self.keys()]


def decode_job(value):
    """(seq, priority, when, function, unique, data, lifecycle), or None."""
    if value is None or len(value) < 34 or value[0] != 1:
        return None
    prio, seq, when, fl, ul, dl, ll = struct.unpack(">BQqIIII", value[1:34])
    if 34 + fl + ul + dl + ll != len(value):
        return None
    p = 34
    f = value[p:p + fl]
    p += fl
    u = value[p:p + ul]
    p += ul
    d = value[p:p + dl]
    p += dl
    return seq, prio, when, f, u, d, value[p:p + ll]


def encode_job(seq, priority, when, function, unique, data, lifecycle=b""):
    return (struct.pack(">BBQqIIII", 1, priority, seq, when, len(function), len(unique), len(data),
                        len(lifecycle)) + function + unique + data + lifecycle)


def jobs(path):
    """Every job stored, in replay order: [(handle, prio, when, function,
    unique, data)].  Records that do not decode are left out."""
    d = tempfile.mkdtemp(prefix="gmtest-tccopy-")
    try:
        copy = os.path.join(d, "copy.tch" if path.endswith(".tch") else "copy.tcb")
        shutil.copyfile(path, copy)
        got = []
        try:
            db = TcFile(copy, "re")
        except OSError:
            return [("<unreadable copy>", None, None, None, None, None)]  # caught mid-write: poll again
        with db:
            for k, v in db.items():
                if not k.startswith(b"\0J"):
                    continue
                j = decode_job(v)
                if j:
                    got.append((j[0], k[2:].decode(errors="replace")) + j[1:6])
    finally:
        shutil.rmtree(d, ignore_errors=True)
    got.sort()
    return [g[1:] for g in got]


def put_job(path, handle, function, unique, priority, data, when=0, seq=None):
    """Stores a job record as the server writes one (priority may be one the
    server refuses); seq defaults to after every stored one."""
    with TcFile(path, "wc") as db:
        if seq is None:
            s = db.get(b"\0S")
            seq = struct.unpack(">Q", s)[0] if s else 0
            db.put(b"\0S", struct.pack(">Q", seq + 1))
        db.put(b"\0J" + handle.encode(), encode_job(seq, priority, when, function, unique, data))


def put_1_1_20(path, function, unique, priority, data, when=0):
    """Stores a job as gearmand 1.1.20 built with Tokyo Cabinet does
    (reference 5.8)."""
    with TcFile(path, "wc") as db:
        db.put(function + b"-" + unique,
               function + b"\0" + unique + b"\0" + str(priority).encode() + b"\0" + str(when).encode() + b"\0" + data)
