"""Schemathesis hooks for .ci/checks/schemathesis (loaded through SCHEMATHESIS_HOOKS).

`POST /v1/gate/{issuer}/ssf` takes `application/secevent+jwt` (RFC 8935: the body is a
compact JWS, text), a media type schemathesis has no serializer for.
"""

import schemathesis


@schemathesis.serializer("application/secevent+jwt")
def secevent_jwt(ctx, value):
    # The schema says a string; whatever the generator made is sent as its text.
    if isinstance(value, bytes):
        return value
    return str(value).encode()
