#!/usr/bin/env python3
"""A current ClickHouse behind the HTTP interface dropscope speaks.

Runs the `chdb` package (an embedded build of a current ClickHouse release)
in this process and answers ClickHouse-style HTTP requests with it, so the
very SQL dropscope's ClickHouse backend generates (schema migrations,
JSONEachRow inserts, every query) is checked on a modern engine too, not
only on the 18.16 server the other tests use:

    python3 scripts/chdb_http.py --port 18124 --path DIR

    GET  /ping                         -> "Ok.\\n"
    POST /?query=SQL&database=db&k=v   -> SQL + "\\n" + body (INSERT data)
    POST /?database=db&k=v  (body=SQL) -> the body's SQL

Other URL parameters are ClickHouse settings, applied with SET. Errors
answer 500 with ClickHouse's message. One request at a time (one session).
"""

import argparse
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

import chdb
from chdb import session as chs

SESSION = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def reply(self, status, body):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/ping"):
            self.reply(200, "Ok.\n")
        else:
            self.reply(404, "only /ping and POST queries\n")

    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        params = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n).decode("utf-8")
        query = None
        settings = []
        for k, v in params:
            if k == "query":
                query = v
            elif k == "database":
                continue
            else:
                settings.append((k, v))
        sql = query + "\n" + body if query is not None else body
        try:
            for k, v in settings:
                SESSION.query(f"SET {k} = {quote(v)}")
            # A FORMAT clause in the SQL wins over this default.
            res = SESSION.query(sql, "TabSeparated")
            out = res.bytes() if hasattr(res, "bytes") else bytes(res)
            self.reply(200, out)
        except Exception as e:  # ClickHouse's error text
            self.reply(500, f"{e}\n")


def quote(v):
    try:
        float(v)
        return v
    except ValueError:
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main():
    global SESSION
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=18124)
    ap.add_argument("--path", required=True, help="chdb data folder")
    a = ap.parse_args()
    SESSION = chs.Session(a.path)
    version = SESSION.query("SELECT version()", "TabSeparated").bytes().decode().strip()
    srv = HTTPServer(("127.0.0.1", a.port), Handler)
    print(f"chdb {chdb.__version__} (ClickHouse {version}) on http://127.0.0.1:{a.port}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
