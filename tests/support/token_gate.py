#!/usr/bin/env python3
"""A loopback bearer-token gate in front of a test registry.

It answers like a registry that uses token auth: requests to /v2/ without a
valid bearer token get 401 with a `WWW-Authenticate: Bearer realm=...`
challenge; /token hands out a token for the right basic-auth login; requests
with the token are proxied to the real registry. It also counts blob
downloads (GET /stats) and can slow them down (POST /control?rate=BYTES_PER_S)
so tests can see one download per blob and kill a pull half-way.
Test-only: it listens on 127.0.0.1 and nowhere else.
"""
import argparse
import base64
import http.client
import http.server
import json
import re
import secrets
import threading
import time
import urllib.parse

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--backend", type=int, required=True)
parser.add_argument("--user", required=True)
parser.add_argument("--password", required=True)
args = parser.parse_args()

TOKEN = secrets.token_hex(16)
state = {"rate": 0, "blob_gets": {}, "token_requests": 0}
lock = threading.Lock()


class Gate(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body=b"", headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/control":
            q = urllib.parse.parse_qs(url.query)
            with lock:
                state["rate"] = int(q.get("rate", ["0"])[0])
            return self.reply(200, b"ok")
        self.reply(404)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/stats":
            with lock:
                return self.reply(200, json.dumps(state).encode(), {"Content-Type": "application/json"})
        if url.path == "/token":
            auth = self.headers.get("Authorization", "")
            expected = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
            with lock:
                state["token_requests"] += 1
            if auth != expected:
                return self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"Content-Type": "application/json"})
            body = json.dumps({"token": TOKEN, "access_token": TOKEN, "expires_in": 300}).encode()
            return self.reply(200, body, {"Content-Type": "application/json"})
        if not url.path.startswith("/v2"):
            return self.reply(404)
        if self.headers.get("Authorization", "") != f"Bearer {TOKEN}":
            challenge = f'Bearer realm="http://127.0.0.1:{args.port}/token",service="berth-test"'
            m = re.match(r"^/v2/(.+)/(manifests|blobs|tags)/", url.path)
            if m:
                challenge += f',scope="repository:{m.group(1)}:pull"'
            return self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                              {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
        is_blob = self.command == "GET" and "/blobs/sha256:" in url.path
        if is_blob:
            digest = url.path.rsplit("/", 1)[1]
            with lock:
                state["blob_gets"][digest] = state["blob_gets"].get(digest, 0) + 1
        backend = http.client.HTTPConnection("127.0.0.1", args.backend, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "host")}
        backend.request(self.command, self.path, headers=headers)
        resp = backend.getresponse()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection"):
                self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        while True:
            chunk = resp.read(64 * 1024)
            if not chunk:
                break
            self.wfile.write(chunk)
            rate = state["rate"]
            if is_blob and rate > 0:
                time.sleep(len(chunk) / rate)


server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Gate)
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()
