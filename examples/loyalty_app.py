#!/usr/bin/env python3
"""A session app in a few lines of standard-library Python.

sessiond POSTs the app's declared inputs, {"public": {"loyaltyCard": {"value": ...}}},
signed with `x-sessiond-signature: sha256=<hex HMAC-SHA256 of the body>`; the app answers
its outputs, {"loyalty": {"tier": {"value": "gold" | "silver"}}} (null clears the tier).

    python3 examples/loyalty_app.py      # then: sessiond serve --config examples/loyalty.toml
"""
import hashlib
import hmac
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ.get("LOYALTY_SECRET", "loyalty-demo-secret").encode()  # = `secret` in loyalty.toml
GOLD_CARDS = {"1234", "4242"}


class Transform(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/_v/loyalty/session/transform":
            return self.answer(404, {"type": "NotFound", "message": f"no route {self.path}"})
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(self.headers.get("x-sessiond-signature", ""), expected):
            return self.answer(401, {"type": "Unauthorized", "message": "bad or missing x-sessiond-signature"})
        card = json.loads(body).get("public", {}).get("loyaltyCard", {}).get("value")
        tier = None if card is None else ("gold" if str(card) in GOLD_CARDS else "silver")
        self.answer(200, {"loyalty": {"tier": {"value": tier}}})

    def answer(self, status, payload):
        data = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", 9000), Transform).serve_forever()
