#!/usr/bin/env python3
"""Bearer token server for CNCF distribution's `auth: token`, for lamina's end-to-end tests.

Standard library only; JWTs are signed RS256 by running `openssl dgst -sha256 -sign KEY`.

Endpoints (the two flows real registries use):
  GET  /token?service=S&scope=repository:NAME:pull,push[&scope=...]   optional Basic auth;
       `offline_token=true` with credentials also returns a refresh_token
  POST /token   OAuth2 form: grant_type=password (username, password) or
                grant_type=refresh_token (refresh_token); service, scope, client_id
Reply: {"token", "access_token", "expires_in", "issued_at"[, "refresh_token"]}

JWT: header {"typ","alg":"RS256","x5c":[cert]}; the registry's rootcertbundle holds that cert.
Claims: iss = --issuer, aud = service as a plain string, sub, iat, nbf, exp, jti,
access = [{"type","name","actions"}].

Policy:
  valid user/password (or refresh token) -> every requested action is granted
  anonymous                              -> only "pull" on repositories named public/...
  wrong password / unknown refresh token -> 401

Each request is logged as one JSON line on stdout: method, path (without the query), user,
service, requested and granted scopes, status. Passwords and tokens are never logged.
"""
import argparse
import base64
import binascii
import datetime
import hmac
import ipaddress
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 64 * 1024


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    def __init__(self, key: str, cert: str):
        self.key = key
        der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = [base64.b64encode(der).decode()]  # standard base64 (RFC 7515), not url-safe

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signing_input.encode(), check=True,
                             capture_output=True).stdout
        return signing_input + "." + b64url(sig)


def parse_scope(scope: str):
    """repository:name/with/slashes:pull,push -> ("repository", "name/with/slashes", [...])."""
    typ, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return typ, name, [a for a in actions.split(",") if a]


class AuthError(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    server_version = "lamina-test-token/1"

    def log_message(self, fmt, *args):  # replaced by the JSON lines of _log
        pass

    # -- authentication ----------------------------------------------------------------------
    def _user(self, params):
        """Returns the user name, None for anonymous; raises AuthError for bad credentials."""
        srv = self.server
        grant = params.get("grant_type", [None])[0]
        if self.command == "POST":
            if grant == "refresh_token":
                with srv.lock:
                    user = srv.refresh.get(params.get("refresh_token", [""])[0])
                if user is None:
                    raise AuthError("unknown refresh token")
                return user
            if grant == "password":
                return self._check(params.get("username", [""])[0],
                                   params.get("password", [""])[0])
            raise ValueError("unsupported grant_type")
        header = self.headers.get("Authorization", "")
        if header[:6].lower() == "basic ":
            try:
                user, sep, pw = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise AuthError("malformed Basic credentials") from None
            if not sep:
                raise AuthError("malformed Basic credentials")
            return self._check(user, pw)
        if header:
            raise AuthError("unsupported Authorization scheme")
        return None

    def _check(self, user, pw):
        expected = self.server.users.get(user)
        if not user or expected is None or not hmac.compare_digest(expected.encode(), pw.encode()):
            raise AuthError("bad credentials")
        return user

    # -- replies -----------------------------------------------------------------------------
    def _reply(self, code, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _log(self, user, service, requested, granted, status):
        print(json.dumps({"t": round(time.time(), 3), "method": self.command,
                          "path": urlsplit(self.path).path, "user": user, "service": service,
                          "requested": requested, "granted": granted, "status": status}),
              flush=True)

    def _handle(self, params):
        srv = self.server
        service = params.get("service", [srv.service])[0]
        requested = [one for s in params.get("scope", []) for one in s.split(" ") if one]
        if urlsplit(self.path).path != "/token":
            self._log(None, service, requested, [], 404)
            return self._reply(404, {"error": "not found"})
        try:
            user = self._user(params)
        except AuthError as e:
            self._log(None, service, requested, [], 401)
            return self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": str(e)}]},
                               [("WWW-Authenticate", 'Basic realm="lamina-test-token"')])
        except ValueError as e:
            self._log(None, service, requested, [], 400)
            return self._reply(400, {"error": "unsupported_grant_type", "error_description": str(e)})

        access = []
        for one in requested:
            typ, name, actions = parse_scope(one)
            if user is not None:
                granted = actions
            elif typ == "repository" and name.startswith("public/"):
                granted = [a for a in actions if a == "pull"]
            else:
                granted = []
            access.append({"type": typ, "name": name, "actions": granted})

        now = int(time.time())
        claims = {"iss": srv.issuer, "sub": user or "", "aud": service, "exp": now + srv.ttl,
                  "nbf": now - 1, "iat": now, "jti": secrets.token_hex(16), "access": access}
        token = srv.signer.sign(claims)
        out = {"token": token, "access_token": token, "expires_in": srv.ttl,
               "issued_at": datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
               .strftime("%Y-%m-%dT%H:%M:%SZ")}
        if user is not None and (self.command == "POST" or params.get("offline_token") == ["true"]):
            rt = secrets.token_urlsafe(24)
            with srv.lock:
                srv.refresh[rt] = user
            out["refresh_token"] = rt
        granted = [f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access if a["actions"]]
        self._log(user, service, requested, granted, 200)
        self._reply(200, out)

    def do_GET(self):
        self._handle(parse_qs(urlsplit(self.path).query))

    def do_POST(self):
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self._log(None, None, [], [], 400)
            return self._reply(400, {"error": "invalid_request"})
        params = parse_qs(self.rfile.read(n).decode("utf-8", "replace"))
        for k, v in parse_qs(urlsplit(self.path).query).items():
            params.setdefault(k, v)
        self._handle(params)


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:5104", help="loopback HOST:PORT")
    ap.add_argument("--key", required=True, help="RSA private key (PEM) that signs tokens")
    ap.add_argument("--cert", required=True, help="certificate of --key (sent as x5c)")
    ap.add_argument("--users", required=True, help="file of user:password lines")
    ap.add_argument("--issuer", default="lamina-test-issuer")
    ap.add_argument("--service", default="lamina-test-registry")
    ap.add_argument("--ttl", type=int, default=300, help="token lifetime in seconds")
    a = ap.parse_args()

    host, _, port = a.listen.rpartition(":")
    host = host.strip("[]")
    if not loopback(host):
        sys.exit(f"tokenserver: refusing to listen on non-loopback address {host!r}")
    if a.ttl <= 0:
        sys.exit("tokenserver: --ttl must be positive")
    users = {}
    with open(a.users, encoding="utf-8") as f:
        for line in f:
            u, sep, p = line.rstrip("\n").partition(":")
            if u and sep:
                users[u] = p
    if not users:
        sys.exit(f"tokenserver: no user:password lines in {a.users}")

    ThreadingHTTPServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = ThreadingHTTPServer((host, int(port)), Handler)
    srv.daemon_threads = True
    srv.signer = Signer(a.key, a.cert)
    srv.issuer, srv.service, srv.ttl, srv.users = a.issuer, a.service, a.ttl, users
    srv.refresh, srv.lock = {}, threading.Lock()
    print(json.dumps({"listening": a.listen, "issuer": a.issuer, "service": a.service,
                      "ttl": a.ttl}), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
