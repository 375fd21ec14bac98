"""A TLS front the fault-matrix tests put between the plugin and OpenBao: the hostile peer.

One address (127.0.0.1:<port>, mutual TLS: the client certificate is required and verified
against the test CA) that the test switches at run time between
- "proxy": every request forwarded to the real OpenBao (its own mTLS connection) and the answer
  relayed unchanged, so the plugin works normally through it;
- a hostile mode (see MODES): every request answered with that kind of garbage;
- "flaky:<mode>": every second request hostile, the others proxied.

The server certificate is swappable too (`serve_cert`): the next handshake uses the new one and
every open connection is closed, as a server restart with a new certificate would. Nothing
here is the system under test; it is a deliberately broken peer, loopback only.
"""
from __future__ import annotations

import http.client
import itertools
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# mode -> (what it is, what the plugin's error message must contain)
MODES = {
    "truncated-json": "a 200 whose JSON body is cut in the middle",
    "missing-field": "a 200 with well-formed JSON lacking data.ciphertext / data.plaintext",
    "oversize-body": "a 200 with a 2 MiB body (over vault.max_response_bytes, 1 MiB)",
    "wrong-content-length": "a Content-Length larger than the body, then the connection closes",
    "html-proxy": "a 200 text/html page from a proxy (a login portal)",
    "html-502": "a 502 text/html page from a proxy (bad gateway)",
    "500-storm": "HTTP 500 for every request",
}

HTML = (b"<!DOCTYPE html><html><head><title>Proxy authentication required</title></head>"
        b"<body><h1>Corporate proxy</h1><p>Please log in to continue.</p></body></html>\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, front: "HostileFront", addr):
        self.front = front
        super().__init__(addr, _Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        ctx = self.front._server_ctx
        tls = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.front._lock:
            self.front._conns.add(tls)
        return tls, addr

    def shutdown_request(self, request):
        with self.front._lock:
            self.front._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        pass  # a hostile peer's own TLS / socket errors are expected; the plugin's side matters


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, fmt, *args):  # quiet
        pass

    def setup(self):
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError) as e:
            self.server.front._note_handshake_error(e)
            raise
        super().setup()

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status: int, body: bytes, ctype: str = "application/json",
              length: int | None = None, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _handle(self) -> None:
        front = self.server.front
        body = self._body()
        mode = front.next_mode()
        front.count(mode)
        if mode == "proxy":
            self._proxy(body)
            return
        self._hostile(mode)

    do_GET = do_POST = do_PUT = _handle

    def _proxy(self, body: bytes) -> None:
        front = self.server.front
        conn = http.client.HTTPSConnection("127.0.0.1", front.upstream_port,
                                           context=front._client_ctx, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "connection", "content-length")}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            r = conn.getresponse()
            data = r.read()
            self._send(r.status, data, r.getheader("Content-Type") or "application/json")
        except OSError:
            self._send(502, b'{"errors":["front: upstream unreachable"]}')
        finally:
            conn.close()

    def _hostile(self, mode: str) -> None:
        ok = {"request_id": "0f6a6b0e-1111-2222-3333-444455556666", "lease_id": "",
              "renewable": False, "lease_duration": 0,
              "data": {"ciphertext": "vault:v1:" + "A" * 60, "plaintext": "AAAA",
                       "latest_version": 1}}
        if mode == "truncated-json":
            full = json.dumps(ok).encode()
            self._send(200, full[: len(full) // 2])
        elif mode == "missing-field":
            self._send(200, json.dumps({"request_id": ok["request_id"], "data": {}}).encode())
        elif mode == "oversize-body":
            pad = b" " * (2 * 1024 * 1024)
            self._send(200, b'{"data":{"pad":"' + pad + b'"}}')
        elif mode == "wrong-content-length":
            full = json.dumps(ok).encode()
            self._send(200, full[:40], length=len(full) + 500, close=True)
        elif mode == "html-proxy":
            self._send(200, HTML, "text/html")
        elif mode == "html-502":
            self._send(502, HTML, "text/html")
        elif mode == "500-storm":
            self._send(500, b'{"errors":["1 error occurred:\\n\\t* internal error\\n\\n"]}')
        else:
            raise AssertionError(f"unknown mode {mode}")


class HostileFront:
    def __init__(self, pki, upstream_port: int, cert_file: str | None = None,
                 key_file: str | None = None):
        self.pki = pki
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._conns: set = set()
        self._mode = "proxy"
        self._flip = itertools.count()
        self.counts: dict[str, int] = {}
        self.handshake_errors: list[str] = []
        self._client_ctx = ssl.create_default_context(cafile=pki.ca_file)
        self._client_ctx.load_cert_chain(pki.client_cert_file, pki.client_key_file)
        self._server_ctx = self._make_server_ctx(cert_file or pki.server_cert_file,
                                                 key_file or pki.server_key_file)
        self._srv = _Server(self, ("127.0.0.1", 0))
        self.port = self._srv.server_address[1]
        self.addr = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    def _make_server_ctx(self, cert_file: str, key_file: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_file, key_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(self.pki.ca_file)
        return ctx

    def _note_handshake_error(self, e: Exception) -> None:
        with self._lock:
            self.handshake_errors.append(str(e))

    # ------------------------------------------------------------ control
    def set_mode(self, mode: str) -> None:
        base = mode.split(":", 1)[1] if mode.startswith("flaky:") else mode
        assert base == "proxy" or base in MODES, mode
        with self._lock:
            self._mode = mode
        self.drop_connections()

    def next_mode(self) -> str:
        with self._lock:
            mode = self._mode
        if mode.startswith("flaky:"):
            return mode.split(":", 1)[1] if next(self._flip) % 2 == 0 else "proxy"
        return mode

    def count(self, mode: str) -> None:
        with self._lock:
            self.counts[mode] = self.counts.get(mode, 0) + 1

    def serve_cert(self, cert_file: str, key_file: str) -> None:
        """New handshakes present this certificate; open connections are closed."""
        ctx = self._make_server_ctx(cert_file, key_file)
        with self._lock:
            self._server_ctx = ctx
        self.drop_connections()

    def drop_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
        self.drop_connections()
