"""tcpproxy: a TCP proxy for tests that cut a server off from its peer.

    proxy = TcpProxy(target_port).start()    # listens on 127.0.0.1:proxy.port
    ... point the server at proxy.port instead of target_port ...
    proxy.freeze()      # nothing more is forwarded, either way; no socket is closed
    proxy.upstream_ports()   # the local ports of its connections to the target
    proxy.thaw()        # forwarding resumes with what waited meanwhile
    proxy.stop()        # closes everything

While frozen the proxy reads nothing from either side: bytes (and a close)
wait in the kernel's buffers, so each end sees a peer that is connected but
says nothing, as across a network partition.  (The proxy's own kernel still
acknowledges what fits in its buffers and answers TCP keepalives: a program
notices the silence only by its own deadlines, or by tcp_user_timeout once
the buffers are full.)  A connection accepted while frozen is held, not
connected onward, until thaw().

Threads: one accepts; each connection has one per direction.  freeze()
returns once no chunk read before it is still being written.  Only the
Python standard library is used.
"""

import select
import socket
import threading


class TcpProxy:
    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.cond = threading.Condition()
        self.frozen = False
        self.sending = 0        # chunks read and being written, under cond
        self.stopped = False
        self.pairs = []         # [(client socket, upstream socket)]

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(c,), daemon=True).start()

    def _connect(self, c):
        with self.cond:
            self.cond.wait_for(lambda: not self.frozen or self.stopped)
            if self.stopped:
                c.close()
                return
        try:
            u = socket.create_connection(self.target, timeout=10)
        except OSError:
            c.close()
            return
        u.settimeout(None)
        with self.cond:
            self.pairs.append((c, u))
        done = [0]
        for src, dst in ((c, u), (u, c)):
            threading.Thread(target=self._pump, args=(src, dst, c, u, done), daemon=True).start()

    def _pump(self, src, dst, c, u, done):
        """Copies src to dst until src ends (then dst's sending side is shut
        down) or the proxy stops; the second direction to end closes both."""
        while True:
            with self.cond:
                if self.stopped:
                    break
                if self.frozen:
                    self.cond.wait(0.1)
                    continue
            try:
                ready = select.select([src], [], [], 0.05)[0]
            except (OSError, ValueError):
                break
            if not ready:
                continue
            with self.cond:
                if self.frozen or self.stopped:
                    continue
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                self.sending += 1
            try:
                if data:
                    dst.sendall(data)
                else:
                    dst.shutdown(socket.SHUT_WR)
            except OSError:
                data = b""
            finally:
                with self.cond:
                    self.sending -= 1
                    self.cond.notify_all()
            if not data:
                break
        with self.cond:
            done[0] += 1
            last = done[0] == 2 or self.stopped
        if last:
            for s in (c, u):
                try:
                    s.close()
                except OSError:
                    pass

    def freeze(self):
        """Stops forwarding both ways; returns once nothing read before the
        call is still being written."""
        with self.cond:
            self.frozen = True
            self.cond.wait_for(lambda: self.sending == 0, timeout=10)

    def thaw(self):
        """Forwards again, starting with what waited meanwhile."""
        with self.cond:
            self.frozen = False
            self.cond.notify_all()

    def upstream_ports(self):
        """The local ports of the proxy's connections to the target (what
        the target sees as the client's port, such as PostgreSQL's
        pg_stat_activity.client_port)."""
        out = []
        with self.cond:
            pairs = list(self.pairs)
        for _, u in pairs:
            try:
                out.append(u.getsockname()[1])
            except OSError:
                pass
        return out

    def stop(self):
        """Closes the listener and every connection."""
        with self.cond:
            self.stopped = True
            self.frozen = False
            self.cond.notify_all()
            pairs = list(self.pairs)
        self.sock.close()
        for c, u in pairs:
            for s in (c, u):
                try:
                    s.close()
                except OSError:
                    pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()
