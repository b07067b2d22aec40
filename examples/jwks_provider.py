#!/usr/bin/env python3
"""A stand-in OpenID Connect provider: publishes a JWKS and signs identity tokens.

It makes a P-256 key (kept in jwks_provider.pem beside the working directory, so tokens stay
valid across restarts), serves its public half at http://127.0.0.1:9100/.well-known/jwks.json,
and prints an ES256 token with OpenID Connect claims (`sub` is the user id, `email` the email,
`aud` the store audience) for the customer given. Needs the `cryptography` package
(`pip install cryptography`); the rest is the standard library.

    python3 examples/jwks_provider.py alice@example.com c0a80101-0000-4000-8000-000000000001 > token.txt &
    sessiond serve --config examples/jwks.toml &
    curl -s -X PATCH 'http://127.0.0.1:8080/api/sessions?items=authentication.*,profile.firstName' \
      -H "cookie: VtexIdclientAutCookie_demo=$(cat token.txt)" -H 'content-type: application/json' -d '{}'

`--rotate` makes a new key (a new `kid`) and publishes it next to the old one: tokens signed
with it log in without restarting sessiond (it fetches the document again for an unknown kid).
"""
import argparse
import base64
import hashlib
import json
import os
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://idp.example.com/"  # = `issuer` in examples/jwks.toml
AUDIENCE = "webstore"                # = the store audience (the default)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_keys(path: str, rotate: bool) -> list:
    """The provider's keys, newest last; a new one when there is none or on --rotate."""
    pems = open(path).read().split("\n\n") if os.path.exists(path) else []
    keys = [serialization.load_pem_private_key(p.encode(), None) for p in pems if p.strip()]
    if not keys or rotate:
        keys.append(ec.generate_private_key(ec.SECP256R1()))
        with open(path, "w") as f:
            f.write("\n\n".join(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()).decode() for k in keys))
    return keys


def jwk(key) -> dict:
    numbers = key.public_key().public_numbers()
    x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
    return {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": hashlib.sha256(x + y).hexdigest()[:16], "x": b64(x), "y": b64(y)}


def sign(key, claims: dict) -> str:
    header = {"alg": "ES256", "typ": "JWT", "kid": jwk(key)["kid"]}
    signed = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(signed.encode(), ec.ECDSA(hashes.SHA256())))
    return signed + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("email")
    parser.add_argument("user_id")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--keys", default="jwks_provider.pem")
    parser.add_argument("--rotate", action="store_true")
    args = parser.parse_args()
    keys = load_keys(args.keys, args.rotate)
    now = int(time.time())
    print(sign(keys[-1], {"iss": ISSUER, "sub": args.user_id, "email": args.email, "aud": [AUDIENCE],
                          "iat": now, "nbf": now, "exp": now + 3600, "jti": str(uuid.uuid4())}), flush=True)
    document = json.dumps({"keys": [jwk(k) for k in keys]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/.well-known/jwks.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("cache-control", "public, max-age=600")
            self.send_header("content-length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *_):
            pass

    HTTPServer(("127.0.0.1", args.port), Jwks).serve_forever()


if __name__ == "__main__":
    main()
