#!/usr/bin/env python3
"""Stand-in for Azure Container Registry's login server and Azure AD, for acr's tests.

One HTTP server on 127.0.0.1 speaks, on the real wire protocols:

  Azure AD (the identity platform v2 token endpoint), for client secrets and workload
  identity (federated client assertions):
    POST /{tenant}/oauth2/v2.0/token        form: grant_type=client_credentials, client_id,
         scope (https://containerregistry.azure.net/.default or another `.../.default`),
         client_secret | client_assertion + client_assertion_type=
         urn:ietf:params:oauth:client-assertion-type:jwt-bearer
         -> {"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":A}
         A is a JWT-shaped AAD token (header alg=none, claims tid, oid, appid, aud, exp).

  Managed identity (IMDS, and the shape MSI_ENDPOINT points at):
    GET  /metadata/identity/oauth2/token?api-version=2018-02-01&resource=R[&client_id=C]
         header `Metadata: true` (400 without it)
         -> {"access_token":A,"expires_in":"3600","expires_on":"...","resource":R,
             "token_type":"Bearer","client_id":C}

  ACR's token service (what CNCF distribution's `auth.token.realm` points at):
    POST /oauth2/exchange   form: grant_type=access_token, service, tenant, access_token=A
         -> {"refresh_token":R}; R is an RS256 JWT with exp = now + --refresh-ttl.
         401 unless A is an AAD token this server issued and it has not expired.
    POST /oauth2/token      form: grant_type=refresh_token, service, scope, refresh_token=R
                            or grant_type=password, username=00000000-0000-0000-0000-000000000000,
                               password=R (or an admin --user)
    GET  /oauth2/token?service=S&scope=...   with Basic (user 00000000-..., password R,
                            or an admin --user)
         -> {"access_token":T}; T is the RS256 JWT distribution verifies, exp = now +
            --access-ttl, granting the actions asked for. With --send-expires-in the answer
            also carries "expires_in". 401 (reason=expired|unknown|anonymous|bad-password)
            otherwise.

  The registry API itself, so that one address is the whole login server as with ACR:
    /v2/...   forwarded as is (method, headers, body) to --backend (a CNCF distribution
              whose token realm is this server). With --referrers-api, GET
              /v2/NAME/referrers/DIGEST[?artifactType=X] is answered here from the referrers
              tag `sha256-<hex>` of the backend (an OCI index; empty when there is none;
              `OCI-Filters-Applied: artifactType` when filtered); without it the backend
              answers (distribution 2.8: 404, no referrers API).

  Test plumbing:
    GET  /stats             JSON counters
    GET  /healthz           200 ok
    GET  /_standin/config   the runtime settings
    POST /_standin/config   JSON object merged into them (backend, refresh_ttl, access_ttl,
                            aad_ttl, send_expires_in, referrers_api; and
                            "federated": {CLIENT_ID: [ASSERTION...]} replaces the
                            assertions accepted for those clients)

Every request is logged on stderr as one line, flushed at once, e.g.
  acr-standin: POST /oauth2/exchange status=200 grant=access_token tenant=... kind=secret
  acr-standin: POST /oauth2/token status=401 reason=expired grant=refresh_token scope=...
At start: `acr-standin: listening on 127.0.0.1:PORT ...`.

Dependencies: python3 standard library; signing is tokenserver.py's (imported from this
directory): python3-cryptography, or the openssl command line tool.
"""
import argparse
import base64
import http.client
import json
import os
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenserver  # noqa: E402  (Signer, b64url, compact_json, parse_scope, split_scopes)

TOKEN_USER = "00000000-0000-0000-0000-000000000000"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length"}


def log(line):
    sys.stderr.write("acr-standin: " + line + "\n")
    sys.stderr.flush()


def jwt_claims(token):
    """The claims of a JWT-shaped string, or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        return json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, UnicodeDecodeError):
        return None


class Authority:
    def __init__(self, args, signer):
        self.signer = signer
        self.issuer = args.issuer
        self.service = args.service
        self.tenant = args.tenant
        self.clients = dict(args.client)          # client id -> secret
        self.federated = {}                        # client id -> accepted assertions
        for client_id, assertion in args.federated:
            self.federated.setdefault(client_id, set()).add(assertion)
        self.msi_clients = set(args.msi_client_id)  # empty: any client id
        self.admins = dict(args.user)             # admin user -> password
        self.lock = threading.Lock()
        self.config = {
            "backend": args.backend,
            "refresh_ttl": args.refresh_ttl,
            "access_ttl": args.access_ttl,
            "aad_ttl": args.aad_ttl,
            "send_expires_in": args.send_expires_in,
            "referrers_api": args.referrers_api,
        }
        self.aad_tokens = {}      # token -> claims
        self.refresh_tokens = {}  # token -> claims
        self.stats = {
            "requests": 0,
            "aad_issued": 0, "aad_issued_secret": 0, "aad_issued_assertion": 0,
            "aad_issued_msi": 0, "aad_denied": 0,
            "exchanges": 0, "exchange_denied": 0,
            "access_issued": 0, "access_issued_refresh_token": 0,
            "access_issued_password": 0, "access_issued_basic": 0, "access_issued_admin": 0,
            "token_denied": 0, "token_denied_expired": 0, "token_denied_unknown": 0,
            "token_denied_anonymous": 0, "token_denied_bad_password": 0,
            "proxied": 0, "proxy_errors": 0, "referrers_api": 0,
        }

    def setting(self, name):
        with self.lock:
            return self.config[name]

    def count(self, *keys):
        with self.lock:
            for k in keys:
                self.stats[k] = self.stats.get(k, 0) + 1

    def snapshot(self):
        with self.lock:
            out = dict(self.stats)
            out["refresh_tokens_live"] = sum(
                1 for c in self.refresh_tokens.values() if c["exp"] > time.time())
            return out

    # --- AAD -----------------------------------------------------------------------------

    def new_aad_token(self, kind, client_id, audience):
        now = int(time.time())
        claims = {
            "aud": audience,
            "iss": "https://sts.windows.net/%s/" % self.tenant,
            "iat": now, "nbf": now, "exp": now + int(self.setting("aad_ttl")),
            "tid": self.tenant,
            "oid": "0b0b0b0b-%04x-4000-8000-%012x" % (len(kind), abs(hash(client_id)) % (1 << 48)),
            "appid": client_id,
            "idtyp": "app",
            "uti": secrets.token_urlsafe(12),
            "ver": "2.0" if kind != "msi" else "1.0",
        }
        header = {"alg": "none", "typ": "JWT"}
        token = "%s.%s.%s" % (tokenserver.b64url(tokenserver.compact_json(header)),
                              tokenserver.b64url(tokenserver.compact_json(claims)),
                              tokenserver.b64url(secrets.token_bytes(32)))
        with self.lock:
            self.aad_tokens[token] = claims
            self.stats["aad_issued"] += 1
            self.stats["aad_issued_" + kind] += 1
        return token, claims

    def _token_state(self, table, token):
        """(claims, None) for a live token of `table`; (claims, "expired") or (None, "unknown")."""
        with self.lock:
            claims = table.get(token)
        if claims is None:
            return None, "unknown"
        if claims["exp"] <= time.time():
            return claims, "expired"
        return claims, None

    def aad_token_state(self, token):
        return self._token_state(self.aad_tokens, token)

    # --- ACR -----------------------------------------------------------------------------

    def new_refresh_token(self, aad_claims, service):
        now = int(time.time())
        claims = {
            "jti": secrets.token_hex(16),
            "sub": aad_claims.get("oid", ""),
            "nbf": now, "iat": now, "exp": now + int(self.setting("refresh_ttl")),
            "iss": self.issuer,
            "aud": service or self.service,
            "version": "1.0",
            "grant_type": "refresh_token",
            "tenant": aad_claims.get("tid", ""),
            "permissions": {"actions": ["read", "write", "delete"]},
        }
        token = self.signer.jwt(claims)
        with self.lock:
            self.refresh_tokens[token] = claims
            self.stats["exchanges"] += 1
        return token, claims

    def refresh_token_state(self, token):
        return self._token_state(self.refresh_tokens, token)

    def new_access_token(self, subject, scopes, kind):
        now = int(time.time())
        access = []
        for text in scopes:
            scope = tokenserver.parse_scope(text)
            if scope is not None:
                access.append(scope)
        ttl = int(self.setting("access_ttl"))
        claims = {
            "iss": self.issuer, "sub": subject, "aud": self.service,
            "iat": now, "nbf": now, "exp": now + ttl,
            "jti": secrets.token_hex(16), "access": access,
        }
        token = self.signer.jwt(claims)
        self.count("access_issued", "access_issued_" + kind)
        return token, ttl


def read_body(handler):
    """The request body: Content-Length or chunked."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = b""
        while True:
            line = handler.rfile.readline()
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return out
            out += handler.rfile.read(size)
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length", "0") or "0")
    return handler.rfile.read(length) if length else b""


def make_handler(auth):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "acr-standin/1"

        def log_message(self, fmt, *args):
            pass

        def log_line(self, status, **fields):
            parts = [self.command, urlparse(self.path).path, "status=%d" % status]
            parts += ["%s=%s" % (k, v if v not in (None, "") else "-") for k, v in fields.items()]
            log(" ".join(parts))

        def send(self, status, body, content_type="application/json", headers=None, **fields):
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or []):
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.log_line(status, **fields)

        def form(self):
            body = read_body(self)
            return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

        # --- dispatch ------------------------------------------------------------------

        def handle_any(self):
            auth.count("requests")
            url = urlparse(self.path)
            path = url.path
            try:
                if path == "/healthz":
                    return self.send(200, b"ok", "text/plain")
                if path == "/stats" and self.command == "GET":
                    return self.send(200, auth.snapshot())
                if path == "/_standin/config":
                    return self.standin_config()
                if path == "/v2" or path.startswith("/v2/"):
                    return self.registry(url)
                if path == "/metadata/identity/oauth2/token":
                    return self.imds(url)
                if path == "/oauth2/exchange":
                    return self.exchange()
                if path == "/oauth2/token":
                    return self.acr_token(url)
                segments = path.split("/")
                if len(segments) == 5 and segments[2:] == ["oauth2", "v2.0", "token"]:
                    return self.aad(segments[1])
                read_body(self)
                return self.send(404, {"error": "not_found", "error_description": "no such endpoint"})
            except (BrokenPipeError, ConnectionResetError):
                return None

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any

        def standin_config(self):
            if self.command == "POST":
                try:
                    update = json.loads(read_body(self) or b"{}")
                except ValueError:
                    return self.send(400, {"error": "not json"})
                with auth.lock:
                    unknown = [k for k in update if k not in auth.config and k != "federated"]
                    if not unknown:
                        for client_id, assertions in (update.pop("federated", None) or {}).items():
                            auth.federated[client_id] = set(assertions)
                        auth.config.update(update)
                if unknown:
                    return self.send(400, {"error": "unknown settings %s" % unknown})
            with auth.lock:
                config = dict(auth.config)
            return self.send(200, config)

        # --- Azure AD ------------------------------------------------------------------

        def aad_error(self, status, error, description, code, **fields):
            auth.count("aad_denied")
            body = {"error": error, "error_description": description, "error_codes": [code],
                    "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
                    "trace_id": secrets.token_hex(8), "correlation_id": secrets.token_hex(8)}
            return self.send(status, body, reason=error, **fields)

        def aad(self, tenant):
            if self.command != "POST":
                read_body(self)
                return self.aad_error(405, "invalid_request",
                                      "AADSTS900561: The endpoint only accepts POST requests.", 900561)
            form = self.form()
            field = lambda name: form.get(name, [""])[0]  # noqa: E731
            client_id, scope = field("client_id"), field("scope")
            fields = {"tenant": tenant, "client_id": client_id, "scope": scope}
            if tenant != auth.tenant:
                return self.aad_error(400, "invalid_request",
                                      "AADSTS90002: Tenant '%s' not found." % tenant, 90002, **fields)
            if field("grant_type") != "client_credentials":
                return self.aad_error(400, "unsupported_grant_type",
                                      "AADSTS70003: The app requested an unsupported grant type '%s'."
                                      % field("grant_type"), 70003, **fields)
            if not scope.endswith("/.default"):
                return self.aad_error(400, "invalid_scope",
                                      "AADSTS1002012: The provided value for scope %s is not valid. "
                                      "Client credential flows must have a scope value with /.default "
                                      "suffixed to the resource identifier." % scope, 1002012, **fields)
            if client_id not in auth.clients and client_id not in auth.federated:
                return self.aad_error(400, "unauthorized_client",
                                      "AADSTS700016: Application with identifier '%s' was not found "
                                      "in the directory." % client_id, 700016, **fields)
            if field("client_secret"):
                if auth.clients.get(client_id) != field("client_secret"):
                    return self.aad_error(401, "invalid_client",
                                          "AADSTS7000215: Invalid client secret provided.", 7000215,
                                          **fields)
                kind = "secret"
            elif field("client_assertion"):
                if field("client_assertion_type") != JWT_BEARER:
                    return self.aad_error(400, "invalid_request",
                                          "AADSTS50027: client_assertion_type must be %s." % JWT_BEARER,
                                          50027, **fields)
                with auth.lock:
                    accepted = field("client_assertion") in auth.federated.get(client_id, ())
                if not accepted:
                    return self.aad_error(400, "invalid_client",
                                          "AADSTS700213: No matching federated identity record found "
                                          "for presented assertion.", 700213, **fields)
                kind = "assertion"
            else:
                return self.aad_error(401, "invalid_client",
                                      "AADSTS7000216: 'client_assertion', 'client_secret' or "
                                      "'request' is required for the 'client_credentials' grant type.",
                                      7000216, **fields)
            audience = scope[: -len("/.default")]
            token, claims = auth.new_aad_token(kind, client_id, audience)
            ttl = claims["exp"] - claims["iat"]
            return self.send(200, {"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl,
                                   "access_token": token}, kind=kind, **fields)

        def imds(self, url):
            read_body(self)
            query = parse_qs(url.query)
            q = lambda name: query.get(name, [""])[0]  # noqa: E731
            resource, client_id = q("resource"), q("client_id")
            fields = {"kind": "msi", "resource": resource, "client_id": client_id}
            if self.command != "GET":
                return self.aad_error(405, "invalid_request", "method not allowed", 405, **fields)
            if self.headers.get("Metadata", "").lower() != "true":
                auth.count("aad_denied")
                return self.send(400, {"error": "invalid_request",
                                       "error_description": "Required metadata header not specified"},
                                 reason="no-metadata-header", **fields)
            if not q("api-version"):
                auth.count("aad_denied")
                return self.send(400, {"error": "invalid_request",
                                       "error_description": "Required query variable 'api-version' is missing"},
                                 reason="no-api-version", **fields)
            if not resource:
                auth.count("aad_denied")
                return self.send(400, {"error": "invalid_request",
                                       "error_description": "Required query variable 'resource' is missing"},
                                 reason="no-resource", **fields)
            if client_id and auth.msi_clients and client_id not in auth.msi_clients:
                auth.count("aad_denied")
                return self.send(400, {"error": "invalid_request",
                                       "error_description": "Identity not found"},
                                 reason="unknown-identity", **fields)
            token, claims = auth.new_aad_token("msi", client_id or "system-assigned",
                                               resource.rstrip("/"))
            ttl = claims["exp"] - claims["iat"]
            return self.send(200, {
                "access_token": token, "client_id": client_id or "system-assigned",
                "expires_in": str(ttl), "expires_on": str(claims["exp"]),
                "ext_expires_in": str(ttl), "not_before": str(claims["nbf"]),
                "resource": resource, "token_type": "Bearer",
            }, **fields)

        # --- ACR -----------------------------------------------------------------------

        def acr_error(self, status, code, message, counter, **fields):
            auth.count(*counter)
            headers = [("WWW-Authenticate", 'Basic realm="acr-standin"')] if status == 401 else []
            return self.send(status, {"errors": [{"code": code, "message": message}]},
                             headers=headers, **fields)

        def exchange(self):
            if self.command != "POST":
                read_body(self)
                return self.acr_error(405, "UNSUPPORTED", "POST only", ["exchange_denied"])
            form = self.form()
            field = lambda name: form.get(name, [""])[0]  # noqa: E731
            grant, service, tenant = field("grant_type"), field("service"), field("tenant")
            fields = {"grant": grant, "service": service, "tenant": tenant}
            if grant != "access_token":
                return self.acr_error(400, "UNSUPPORTED", "unsupported grant_type %r" % grant,
                                      ["exchange_denied"], reason="grant", **fields)
            claims, problem = auth.aad_token_state(field("access_token"))
            if problem:
                return self.acr_error(401, "UNAUTHORIZED",
                                      "the AAD access token is %s" % problem,
                                      ["exchange_denied"], reason=problem, **fields)
            if tenant and tenant != claims["tid"]:
                return self.acr_error(401, "UNAUTHORIZED",
                                      "tenant %s does not match the token's tenant" % tenant,
                                      ["exchange_denied"], reason="tenant", **fields)
            token, rclaims = auth.new_refresh_token(claims, service)
            return self.send(200, {"refresh_token": token}, refresh_exp=rclaims["exp"],
                             aad_kind=claims.get("ver"), **fields)

        @staticmethod
        def check_refresh(token):
            """(subject, None) for a live refresh token, else (None, reason)."""
            claims, problem = auth.refresh_token_state(token)
            if problem:
                return None, problem
            return claims.get("sub") or TOKEN_USER, None

        def acr_token(self, url):
            if self.command == "POST":
                form = self.form()
                field = lambda name: form.get(name, [""])[0]  # noqa: E731
                grant = field("grant_type")
                service = field("service")
                scopes = tokenserver.split_scopes(form.get("scope", []))
                if grant == "refresh_token":
                    secret, user, kind = field("refresh_token"), TOKEN_USER, "refresh_token"
                elif grant == "password":
                    secret, user, kind = field("password"), field("username"), "password"
                else:
                    return self.acr_error(400, "UNSUPPORTED", "unsupported grant_type %r" % grant,
                                          ["token_denied"], grant=grant)
            elif self.command == "GET":
                query = parse_qs(url.query)
                service = query.get("service", [""])[0]
                scopes = tokenserver.split_scopes(query.get("scope", []))
                header = self.headers.get("Authorization", "")
                grant, kind = "basic", "basic"
                if header[:6].lower() != "basic ":
                    return self.acr_error(401, "UNAUTHORIZED", "authentication required",
                                          ["token_denied", "token_denied_anonymous"],
                                          reason="anonymous", grant=grant, service=service,
                                          scope=",".join(scopes))
                try:
                    user, _, secret = base64.b64decode(header[6:].strip()).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    return self.acr_error(400, "UNAUTHORIZED", "malformed basic credentials",
                                          ["token_denied"], grant=grant)
            else:
                read_body(self)
                return self.acr_error(405, "UNSUPPORTED", "GET or POST", ["token_denied"])
            fields = {"grant": grant, "user": user, "service": service, "scope": ",".join(scopes)}
            if user == TOKEN_USER:
                subject, problem = self.check_refresh(secret)
                if problem:
                    return self.acr_error(401, "UNAUTHORIZED", "the refresh token is %s" % problem,
                                          ["token_denied", "token_denied_" + problem],
                                          reason=problem, **fields)
            elif user in auth.admins and auth.admins[user] == secret:
                subject, kind = user, "admin"
            else:
                return self.acr_error(401, "UNAUTHORIZED", "bad username or password",
                                      ["token_denied", "token_denied_bad_password"],
                                      reason="bad-password", **fields)
            token, ttl = auth.new_access_token(subject, scopes, kind)
            body = {"access_token": token}
            if auth.setting("send_expires_in"):
                body["expires_in"] = ttl
            return self.send(200, body, kind=kind, **fields)

        # --- the registry API ----------------------------------------------------------

        def registry(self, url):
            backend = auth.setting("backend")
            parts = url.path.split("/")
            if (auth.setting("referrers_api") and self.command == "GET" and len(parts) >= 5
                    and parts[-2] == "referrers" and backend):
                read_body(self)
                return self.referrers(backend, "/".join(parts[2:-2]), parts[-1], url.query)
            body = read_body(self)
            if not backend:
                return self.send(503, {"errors": [{"code": "UNAVAILABLE",
                                                   "message": "the stand-in has no backend yet"}]})
            status, headers, data = self.forward(backend, self.command, self.path,
                                                 self.forward_headers(), body)
            if status is None:
                auth.count("proxy_errors")
                return self.send(502, {"errors": [{"code": "UNAVAILABLE", "message": data}]},
                                 proxied=1)
            auth.count("proxied")
            self.send_response_only(status)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            length = dict((k.lower(), v) for k, v in headers).get("content-length")
            if self.command == "HEAD" and length is not None:
                self.send_header("Content-Length", length)
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.log_line(status, proxied=1)

        def forward_headers(self):
            return [(k, v) for k, v in self.headers.items()
                    if k.lower() not in HOP_BY_HOP]

        @staticmethod
        def forward(backend, method, path, headers, body):
            target = urlparse(backend)
            conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=120)
            try:
                conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                if body or method in ("POST", "PUT", "PATCH"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.getheaders(), data
            except (OSError, http.client.HTTPException) as e:
                return None, [], "backend %s: %s" % (backend, e)
            finally:
                conn.close()

        def referrers(self, backend, name, digest, query_text):
            auth.count("referrers_api")
            query = parse_qs(query_text)
            artifact_type = query.get("artifactType", [""])[0]
            tag = digest.replace(":", "-")
            headers = [(k, v) for k, v in self.forward_headers()
                       if k.lower() in ("host", "authorization", "user-agent")]
            headers.append(("Accept", OCI_INDEX))
            status, rheaders, data = self.forward(backend, "GET",
                                                  "/v2/%s/manifests/%s" % (name, tag),
                                                  headers, b"")
            if status == 401:
                auth.count("proxied")
                keep = [(k, v) for k, v in rheaders if k.lower() == "www-authenticate"]
                return self.send(401, data, "application/json", keep, referrers=1)
            manifests = []
            if status == 200:
                try:
                    manifests = json.loads(data).get("manifests") or []
                except ValueError:
                    manifests = []
            elif status != 404:
                return self.send(502, {"errors": [{"code": "UNAVAILABLE",
                                                   "message": "backend answered %s" % status}]})
            extra = []
            if artifact_type:
                manifests = [m for m in manifests if m.get("artifactType") == artifact_type]
                extra.append(("OCI-Filters-Applied", "artifactType"))
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
            return self.send(200, index, OCI_INDEX, extra, referrers=len(manifests),
                             artifact_type=artifact_type)

    return Handler


pair = tokenserver.colon_pair("VALUE")


def main():
    ap = argparse.ArgumentParser(description="Azure Container Registry + Azure AD stand-in")
    ap.add_argument("--key", required=True, help="PEM RSA private key (the token issuer's)")
    ap.add_argument("--cert", required=True, help="its certificate (distribution's rootcertbundle)")
    ap.add_argument("--issuer", default="acr-standin-issuer")
    ap.add_argument("--service", default="acr-standin",
                    help="the audience of access tokens (distribution's auth.token.service)")
    ap.add_argument("--listen", type=tokenserver.parse_listen, default=("127.0.0.1", 0))
    ap.add_argument("--tenant", default="11111111-2222-3333-4444-555555555555")
    ap.add_argument("--client", type=pair, action="append", default=[], metavar="ID:SECRET",
                    help="an app registration with a client secret (repeatable)")
    ap.add_argument("--federated", type=pair, action="append", default=[], metavar="ID:ASSERTION",
                    help="an app taking this federated client assertion (repeatable, also "
                         "several assertions for one app)")
    ap.add_argument("--msi-client-id", action="append", default=[],
                    help="user-assigned identities IMDS knows (default: any)")
    ap.add_argument("--user", type=pair, action="append", default=[], metavar="NAME:PASS",
                    help="an admin user for Basic/password grants (repeatable)")
    ap.add_argument("--refresh-ttl", type=int, default=3 * 3600, metavar="SECONDS")
    ap.add_argument("--access-ttl", type=int, default=75 * 60, metavar="SECONDS")
    ap.add_argument("--aad-ttl", type=int, default=3600, metavar="SECONDS")
    ap.add_argument("--send-expires-in", action="store_true",
                    help="add expires_in to /oauth2/token answers (ACR sends none)")
    ap.add_argument("--backend", default="", help="http://HOST:PORT of the distribution behind /v2/")
    ap.add_argument("--referrers-api", action="store_true",
                    help="answer GET /v2/NAME/referrers/DIGEST from the referrers tag")
    ap.add_argument("--signer", choices=["auto", "cryptography", "openssl"], default="auto")
    args = ap.parse_args()
    if not args.client and not args.federated:
        args.client = [("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "standin-client-secret")]

    signer = tokenserver.Signer(args.key, args.cert, args.signer)
    auth = Authority(args, signer)
    tokenserver.serve(args.listen, make_handler(auth),
                      "service=%s issuer=%s tenant=%s refresh_ttl=%d access_ttl=%d signer=%s"
                      % (args.service, args.issuer, args.tenant, args.refresh_ttl,
                         args.access_ttl, signer.mode),
                      log)


if __name__ == "__main__":
    main()
