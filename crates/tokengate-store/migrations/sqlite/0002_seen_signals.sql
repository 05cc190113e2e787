-- Logout tokens and Security Event Tokens already acted on, so that a replayed one is
-- refused (OpenID Connect Back-Channel Logout 1.0 §2.6 step 9, RFC 8935 §2.2). `id` is a
-- digest of the issuer and the token's `jti`; a row matters until `exp`, after which the
-- token itself is refused as expired or too old, and the purge deletes it.
CREATE TABLE seen_signals (
    id  BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    exp INTEGER NOT NULL
) STRICT;

CREATE INDEX seen_signals_exp ON seen_signals (exp);
