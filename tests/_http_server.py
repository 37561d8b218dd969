"""A real HTTP server on 127.0.0.1 (http.server in a thread) for download tests: serves given bytes,
or a body cut short, or a slow body; anything else is a 404."""

from __future__ import annotations

import http.server
import threading
import time


class Server:
    """``routes[path] = (body, mode)``; mode "ok", "cut" (Content-Length says more than is sent) or
    "slow" (sent in pieces over ~1 s). ``hits[path]`` counts GETs."""

    def __init__(self):
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                if self.path not in outer.routes:
                    self.send_error(404, "Not Found")
                    return
                body, mode = outer.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "cut":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if mode == "slow":
                    step = max(1, len(body) // 10)
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i : i + step])
                        self.wfile.flush()
                        time.sleep(0.1)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
