#!/usr/bin/env python3
"""Verify tokengate's access tokens with an independent JOSE library (PyJWT).

Usage: jwks_check.py BASE_URL [ALG]   (ALG: the server's signing_alg, checked when given)

Against a fresh tokengate (the first user signed up becomes the admin):
  1. sign up and sign in;
  2. fetch /.well-known/jwks.json and check it holds no private or symmetric key material;
  3. verify the access token offline with PyJWT and the JWKS key matched by `kid`
     (the algorithm of the token's key, audience and issuer "tokengate"), and check the
     claims `jti`, `sid`, `sub` and the header `typ: at+jwt`;
  4. introspect it (RFC 7662) as the admin, with a second sign-in's token: active;
  5. sign out with the first token: 204;
  6. introspect again: inactive; GET /v1/verify with it: 401.

Prints one PASS/FAIL line per step and exits 1 if any failed. A failed introspection step
does not stop the later ones; any other failure does.
"""

import json
import sys
import uuid

import jwt
import requests

PASSWORD = "correct horse battery staple"
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")
TIMEOUT = 30


class CheckFailed(Exception):
    pass


def passed(step, detail=""):
    print(f"PASS {step}" + (f": {detail}" if detail else ""), flush=True)


def check(condition, step, detail):
    if not condition:
        raise CheckFailed(f"{step}: {detail}")


def show(resp):
    return f"{resp.status_code} {resp.text[:500]!r}"


FAILURES = []


def soft(step_fn):
    """Run a step whose failure is reported without stopping the later steps."""
    try:
        step_fn()
    except CheckFailed as e:
        print(f"FAIL {e}", flush=True)
        FAILURES.append(str(e))


def main(base, expected_alg=None):
    base = base.rstrip("/")
    http = requests.Session()
    http.headers["User-Agent"] = "tokengate-jwks-check"

    # 1. sign up (first user: admin) and sign in
    step = "signup"
    email = f"jwks-{uuid.uuid4().hex}@example.com"
    r = http.post(f"{base}/v1/auth/signup", json={"email": email, "password": PASSWORD}, timeout=TIMEOUT)
    check(r.status_code == 201, step, f"expected 201, got {show(r)}")
    user = r.json()
    check(user.get("role") == "admin", step, f"the first user should be admin: {user}")
    passed(step, f"{email} role=admin")

    step = "signin"
    r = http.post(f"{base}/v1/auth/signin", json={"email": email, "password": PASSWORD}, timeout=TIMEOUT)
    check(r.status_code == 200, step, f"expected 200, got {show(r)}")
    tokens = r.json()
    token = tokens.get("access_token")
    check(isinstance(token, str) and token.count(".") == 2, step, f"no compact JWS access_token: {tokens}")
    passed(step, f"session {tokens.get('session_id')}")

    # 2. the JWKS
    step = "jwks"
    r = http.get(f"{base}/.well-known/jwks.json", timeout=TIMEOUT)
    check(r.status_code == 200, step, f"expected 200, got {show(r)}")
    jwks = r.json()
    keys = jwks.get("keys")
    check(isinstance(keys, list) and keys, step, f"no keys: {jwks}")
    for key in keys:
        leaked = [m for m in PRIVATE_MEMBERS if m in key]
        check(not leaked, step, f"key {key.get('kid')} publishes private/symmetric members {leaked}")
        check(key.get("kty") != "oct", step, f"symmetric key published: {key.get('kid')}")
    passed(step, f"{len(keys)} public key(s), no private or symmetric material")

    # 3. verify offline with PyJWT
    step = "pyjwt-verify"
    header = jwt.get_unverified_header(token)
    check(header.get("typ") == "at+jwt", step, f"header typ should be at+jwt: {header}")
    kid = header.get("kid")
    alg = header.get("alg")
    if expected_alg:
        check(alg == expected_alg, step, f"token alg {alg} is not the configured {expected_alg}")
    matching = [k for k in keys if k.get("kid") == kid]
    check(len(matching) == 1, step, f"exactly one JWKS key should have kid {kid!r}: {[k.get('kid') for k in keys]}")
    jwk = matching[0]
    if jwk.get("alg"):
        check(jwk["alg"] == alg, step, f"token alg {alg} differs from its key's alg {jwk['alg']}")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            audience="tokengate",
            issuer="tokengate",
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )
    except jwt.PyJWTError as e:
        raise CheckFailed(f"{step}: PyJWT refused the token ({type(e).__name__}: {e})")
    for claim in ("jti", "sid", "sub"):
        check(claims.get(claim), step, f"claim {claim} missing: {claims}")
    check(claims["sub"] == user.get("id"), step, f"sub {claims['sub']} is not the user id {user.get('id')}")
    check(str(uuid.UUID(claims["jti"])) == claims["jti"], step, f"jti is not a UUID in text form: {claims['jti']}")
    passed(step, f"alg={alg} kid={kid} jti={claims['jti']}")

    # A token with a flipped signature must not verify (guards against a no-op check).
    step = "pyjwt-tamper"
    head, body, sig = token.split(".")
    tampered = ".".join([head, body, ("A" if sig[0] != "A" else "B") + sig[1:]])
    try:
        jwt.decode(tampered, key.key, algorithms=[alg], audience="tokengate", issuer="tokengate")
        raise CheckFailed(f"{step}: PyJWT accepted a token with a changed signature")
    except jwt.InvalidSignatureError:
        pass
    except jwt.DecodeError:
        pass
    passed(step, "a changed signature is refused")

    # 4. introspect as the admin, with the token of a second sign-in
    step = "signin-admin"
    r = http.post(f"{base}/v1/auth/signin", json={"email": email, "password": PASSWORD}, timeout=TIMEOUT)
    check(r.status_code == 200, step, f"second sign-in: expected 200, got {show(r)}")
    admin_token = r.json()["access_token"]
    passed(step, "a second session for the admin's introspection calls")

    def introspect(step, active):
        r = http.post(
            f"{base}/oauth2/introspect",
            data={"token": token},
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=TIMEOUT,
        )
        check(r.status_code == 200, step, f"expected 200, got {show(r)}")
        try:
            body = r.json()
        except ValueError:
            raise CheckFailed(f"{step}: body is not JSON: {show(r)}")
        check(body.get("active") is active, step, f"expected active: {json.dumps(active)}, got {body}")
        if active:
            for claim in ("sub", "jti"):
                if claim in body:
                    check(body[claim] == claims[claim], step, f"{claim} {body[claim]} is not the token's {claims[claim]}")
        passed(step, json.dumps(body, sort_keys=True))

    soft(lambda: introspect("introspect-active", True))

    # 5. sign out with the first token
    step = "signout"
    r = http.post(f"{base}/v1/auth/signout", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    check(r.status_code == 204, step, f"expected 204, got {show(r)}")
    passed(step)

    # 6. the signed-out token: inactive, refused by forward auth
    soft(lambda: introspect("introspect-inactive", False))

    step = "verify-refused"
    r = http.get(f"{base}/v1/verify", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    check(r.status_code == 401, step, f"expected 401, got {show(r)}")
    check(
        r.headers.get("WWW-Authenticate", "").startswith("Bearer"),
        step,
        f"401 without a Bearer challenge: {r.headers.get('WWW-Authenticate')!r}",
    )
    passed(step)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print(f"usage: {sys.argv[0]} BASE_URL [ALG]", file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None)
    except CheckFailed as e:
        print(f"FAIL {e}", flush=True)
        sys.exit(1)
    except Exception as e:  # a crash is a failure too, with its cause
        print(f"FAIL unexpected {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
    if FAILURES:
        print(f"FAIL {len(FAILURES)} step(s) failed", flush=True)
        sys.exit(1)
    print("PASS all JWKS/PyJWT checks", flush=True)
