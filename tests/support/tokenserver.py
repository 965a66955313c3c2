#!/usr/bin/env python3
"""Docker registry token-auth ("Bearer" realm) server for acr's integration tests.

It issues RS256-signed JWTs of the kind CNCF distribution 2.8 (`docker-registry`)
verifies with

    auth:
      token:
        realm: http://HOST:PORT/token
        service: <service>
        issuer: <issuer>
        rootcertbundle: <the --cert file>

The JWT header carries the signing certificate in `x5c` (and a libtrust `kid`), so
distribution checks it against the root bundle.

Dependencies: python3 standard library. Signing uses python3-cryptography when it
imports and falls back to the `openssl` command line tool otherwise (or on demand with
`--signer openssl`).

Endpoints
  GET  /token?service=S&scope=T:NAME:ACTIONS[&scope=...][&offline_token=true]
       optional `Authorization: Basic ...`; anonymous callers get `pull` only with
       --anonymous-pull, otherwise an empty grant (the registry then answers 401).
  POST /token   (application/x-www-form-urlencoded, OAuth2 style as containerd sends)
       grant_type=password       username, password, service, scope, [access_type=offline]
       grant_type=refresh_token  refresh_token, service, scope
       A refresh_token is returned when access_type=offline (POST) or
       offline_token=true (GET) is asked for by an authenticated user.
  GET  /stats   JSON counters (token issues by kind, denials, requests).
  GET  /healthz 200 "ok".

Logging: one line per request on stderr, flushed at once, e.g.
  tokenserver: GET /token status=200 user=testuser grant=basic scope=repository:library/test:pull
At start it prints `tokenserver: listening on HOST:PORT ...` (the real port when --listen
asks for port 0).
"""
import argparse
import base64
import datetime
import hashlib
import json
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    CRYPTOGRAPHY_AVAILABLE = True
except ImportError:  # python3-cryptography is optional
    CRYPTOGRAPHY_AVAILABLE = False


def log(line):
    sys.stderr.write("tokenserver: " + line + "\n")
    sys.stderr.flush()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact_json(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def key_id(spki_der):
    """The libtrust key id distribution understands: base32 of the first 240 bits of
    sha256(SubjectPublicKeyInfo), in ':'-separated groups of four."""
    encoded = base64.b32encode(hashlib.sha256(spki_der).digest()[:30]).decode()
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


def run_openssl(args, data=None):
    return subprocess.run(["openssl"] + args, input=data, check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout


class Signer:
    """RS256 over the key in --key; the certificate in --cert goes into x5c."""

    def __init__(self, key_path, cert_path, mode):
        if mode == "auto":
            mode = "cryptography" if CRYPTOGRAPHY_AVAILABLE else "openssl"
        if mode == "cryptography" and not CRYPTOGRAPHY_AVAILABLE:
            raise SystemExit("tokenserver: --signer cryptography but python3-cryptography is missing")
        self.mode = mode
        self.key_path = key_path
        if mode == "cryptography":
            with open(key_path, "rb") as f:
                self._key = serialization.load_pem_private_key(f.read(), password=None)
            with open(cert_path, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            cert_der = cert.public_bytes(serialization.Encoding.DER)
            spki_der = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        else:
            cert_der = run_openssl(["x509", "-in", cert_path, "-outform", "DER"])
            pubkey_pem = run_openssl(["x509", "-in", cert_path, "-noout", "-pubkey"])
            spki_der = run_openssl(["pkey", "-pubin", "-outform", "DER"], pubkey_pem)
        self.kid = key_id(spki_der)
        self.x5c = [base64.b64encode(cert_der).decode("ascii")]

    def sign(self, data):
        if self.mode == "cryptography":
            return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return run_openssl(["dgst", "-sha256", "-sign", self.key_path], data)

    def jwt(self, claims):
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid, "x5c": self.x5c}
        signing_input = b64url(compact_json(header)) + "." + b64url(compact_json(claims))
        return signing_input + "." + b64url(self.sign(signing_input.encode("ascii")))


def parse_scope(text):
    """`type:name:actions`; the name may contain ':' (host:port/repo)."""
    kind, sep, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return {"type": kind, "name": name, "actions": sorted({a for a in actions.split(",") if a})}


def split_scopes(values):
    out = []
    for value in values:  # several scopes may come space-separated in one parameter
        out.extend(s for s in value.split(" ") if s)
    return out


class Authority:
    def __init__(self, signer, issuer, expires_in, users, anonymous_pull):
        self.signer = signer
        self.issuer = issuer
        self.expires_in = expires_in
        self.users = users
        self.anonymous_pull = anonymous_pull
        self.refresh_tokens = {}  # token -> user
        self.lock = threading.Lock()
        self.stats = {
            "requests": 0,          # every HTTP request, any path
            "token_requests": 0,    # requests to /token
            "issued": 0,            # access tokens handed out
            "issued_anonymous": 0,
            "issued_basic": 0,      # GET with Basic credentials
            "issued_password": 0,   # POST grant_type=password
            "issued_refresh": 0,    # POST grant_type=refresh_token
            "refresh_tokens_issued": 0,
            "denied": 0,            # 401/400 answers on /token
            "get": 0,
            "post": 0,
            "by_user": {},
        }

    def count(self, key, n=1):
        with self.lock:
            self.stats[key] += n

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.stats))

    def check_password(self, user, password):
        return user in self.users and self.users[user] == password

    def new_refresh_token(self, user):
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.refresh_tokens[token] = user
            self.stats["refresh_tokens_issued"] += 1
        return token

    def user_for_refresh_token(self, token):
        with self.lock:
            return self.refresh_tokens.get(token)

    def access_for(self, user, scopes):
        access = []
        for text in scopes:
            scope = parse_scope(text)
            if scope is None:
                continue
            if user is None:
                scope["actions"] = ["pull"] if self.anonymous_pull and "pull" in scope["actions"] else []
            elif scope["type"] == "registry" and scope["name"] == "catalog":
                scope["actions"] = ["*"]
            access.append(scope)
        return access

    def issue(self, user, service, scopes, kind):
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": service,
            "iat": now,
            "nbf": now - 30,
            "exp": now + self.expires_in,
            "jti": secrets.token_hex(16),
            "access": self.access_for(user, scopes),
        }
        token = self.signer.jwt(claims)
        with self.lock:
            self.stats["issued"] += 1
            self.stats["issued_" + kind] += 1
            key = user or ""
            self.stats["by_user"][key] = self.stats["by_user"].get(key, 0) + 1
        return token, claims


def make_handler(authority):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "acr-tokenserver/1"

        def log_message(self, fmt, *args):  # replaced by log_request_line
            pass

        def log_request_line(self, status, **fields):
            parts = [self.command, urlparse(self.path).path, "status=%d" % status]
            parts += ["%s=%s" % (k, v if v not in (None, "") else "-") for k, v in fields.items()]
            log(" ".join(parts))

        def reply(self, status, obj, headers=None, **fields):
            body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
            # Logged before the reply leaves: a test that reads the log after its client got
            # what this reply made possible must find the line.
            self.log_request_line(status, **fields)
            self.send_response(status)
            self.send_header("Content-Type",
                             "text/plain" if isinstance(obj, bytes) else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def deny(self, status, code, message, **fields):
            authority.count("denied")
            headers = {"WWW-Authenticate": 'Basic realm="acr-tokenserver"'} if status == 401 else {}
            self.reply(status, {"errors": [{"code": code, "message": message}],
                                "error": code.lower(), "error_description": message},
                       headers, **fields)

        def grant(self, user, service, scopes, kind, want_refresh, refresh=None):
            token, claims = authority.issue(user, service, scopes, kind)
            body = {
                "token": token,
                "access_token": token,
                "expires_in": authority.expires_in,
                "issued_at": datetime.datetime.fromtimestamp(
                    claims["iat"], datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            if refresh is None and want_refresh and user is not None:
                refresh = authority.new_refresh_token(user)
            if refresh is not None:
                body["refresh_token"] = refresh
            self.reply(200, body, user=user, grant=kind, service=service,
                       scope=",".join(scopes) or None)

        def handle_one(self):
            authority.count("requests")
            url = urlparse(self.path)
            if url.path == "/stats" and self.command == "GET":
                return self.reply(200, authority.snapshot())
            if url.path == "/healthz":
                return self.reply(200, b"ok")
            if url.path != "/token":
                return self.reply(404, {"error": "not found"})
            authority.count("token_requests")
            if self.command == "GET":
                authority.count("get")
                return self.token_get(parse_qs(url.query))
            if self.command == "POST":
                authority.count("post")
                return self.token_post()
            return self.reply(405, {"error": "method not allowed"}, {"Allow": "GET, POST"})

        def token_get(self, query):
            service = query.get("service", [""])[0]
            scopes = split_scopes(query.get("scope", []))
            want_refresh = query.get("offline_token", [""])[0].lower() == "true"
            header = self.headers.get("Authorization", "")
            if header[:6].lower() == "basic ":
                try:
                    user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    return self.deny(400, "INVALID_REQUEST", "malformed basic credentials")
                if not authority.check_password(user, password):
                    return self.deny(401, "UNAUTHORIZED", "bad credentials", user=user,
                                     grant="basic", service=service)
                return self.grant(user, service, scopes, "basic", want_refresh)
            return self.grant(None, service, scopes, "anonymous", False)

        def token_post(self):
            length = int(self.headers.get("Content-Length", "0") or "0")
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            field = lambda name: form.get(name, [""])[0]  # noqa: E731
            service = field("service")
            scopes = split_scopes(form.get("scope", []))
            grant_type = field("grant_type")
            if grant_type == "password":
                user, password = field("username"), field("password")
                if not authority.check_password(user, password):
                    return self.deny(401, "UNAUTHORIZED", "bad credentials", user=user,
                                     grant="password", service=service)
                return self.grant(user, service, scopes, "password",
                                  field("access_type") == "offline")
            if grant_type == "refresh_token":
                refresh = field("refresh_token")
                user = authority.user_for_refresh_token(refresh)
                if user is None:
                    return self.deny(401, "UNAUTHORIZED", "unknown refresh token",
                                     grant="refresh_token", service=service)
                return self.grant(user, service, scopes, "refresh", False, refresh=refresh)
            return self.deny(400, "UNSUPPORTED_GRANT_TYPE",
                             "unsupported grant_type %r" % grant_type, grant=grant_type)

        def do_GET(self):
            self.handle_one()

        def do_POST(self):
            self.handle_one()

        def do_HEAD(self):
            self.handle_one()

    return Handler


def serve(listen, handler, describe, log_line=None):
    """Serves `handler` on `listen` (HOST, PORT) until interrupted; the first line `log_line`
    (this module's `log` by default) writes says where (the tests read the port from it),
    then `describe`."""
    log_line = log_line or log
    server = ThreadingHTTPServer(listen, handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    log_line("listening on %s:%d %s" % (host, port, describe))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def parse_listen(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % text)
    return host.strip("[]") or "127.0.0.1", int(port)


def colon_pair(value_name):
    """An argparse type for NAME:<value_name> (a name, then anything after the first colon)."""
    def parse(text):
        name, sep, value = text.partition(":")
        if not sep or not name:
            raise argparse.ArgumentTypeError("expected NAME:%s, got %r" % (value_name, text))
        return name, value
    return parse


parse_user = colon_pair("PASSWORD")


def main():
    ap = argparse.ArgumentParser(description="Docker registry token server for tests")
    ap.add_argument("--key", required=True, help="PEM RSA private key")
    ap.add_argument("--cert", required=True, help="PEM certificate of that key (registry rootcertbundle)")
    ap.add_argument("--issuer", default="acr-test-issuer")
    ap.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 0),
                    help="HOST:PORT, port 0 picks a free one (default 127.0.0.1:0)")
    ap.add_argument("--expires-in", type=int, default=300, metavar="SECONDS")
    ap.add_argument("--user", type=parse_user, action="append", default=[], metavar="NAME:PASS")
    ap.add_argument("--anonymous-pull", action="store_true",
                    help="grant pull to callers without credentials")
    ap.add_argument("--signer", choices=["auto", "cryptography", "openssl"], default="auto")
    args = ap.parse_args()

    signer = Signer(args.key, args.cert, args.signer)
    authority = Authority(signer, args.issuer, args.expires_in, dict(args.user), args.anonymous_pull)
    serve(args.listen, make_handler(authority),
          "signer=%s issuer=%s kid=%s" % (signer.mode, args.issuer, signer.kid))


if __name__ == "__main__":
    main()
