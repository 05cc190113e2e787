-- tokengate schema, SQLite flavour.
--
-- Ids are 16-byte BLOBs (a UUID's bytes, as sqlx encodes `Uuid`), never 36-character text.
-- Times are INTEGER Unix seconds, the unit of the JWT claims. STRICT tables make SQLite
-- refuse a value of the wrong type instead of silently storing it.

CREATE TABLE users (
    id            BLOB    NOT NULL PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    id           BLOB    NOT NULL PRIMARY KEY,
    user_id      BLOB    NOT NULL REFERENCES users (id),
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    user_agent   TEXT,
    ip           TEXT,
    access_exp   INTEGER NOT NULL,
    refresh_exp  INTEGER NOT NULL,
    ended_at     INTEGER
) STRICT;

CREATE INDEX sessions_user_id ON sessions (user_id);
-- The purge looks sessions up by the later of their two expiries; the query uses this
-- very expression so that it is an index range scan, not a table scan.
CREATE INDEX sessions_expiry ON sessions (max(access_exp, refresh_exp));

-- Refresh tokens are kept only as SHA-256 hashes. Used tokens stay until they expire so
-- that a second use is recognised as reuse.
CREATE TABLE refresh_tokens (
    hash       BLOB    NOT NULL PRIMARY KEY,
    session_id BLOB    NOT NULL REFERENCES sessions (id),
    exp        INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;

CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_exp ON refresh_tokens (exp);

-- AUTOINCREMENT: a sequence number is never reused, even after the newest rows are
-- purged, so a cursor held by another process never skips a record.
-- The CHECKs are what loading the live set relies on to decode a page of rows in bulk.
-- `id` is the jti, sid or sub, and all zeros for `issued_before`. (Chains of `=` rather
-- than `IN (...)`: SQLite builds a temporary table for an IN list on every insert.)
CREATE TABLE revocations (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL
                  CHECK (kind = 'token' OR kind = 'session' OR kind = 'user' OR kind = 'issued_before'),
    id            BLOB    NOT NULL CHECK (length(id) = 16),
    issued_before INTEGER,
    exp           INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    CHECK ((issued_before IS NULL) = (kind = 'token' OR kind = 'session'))
) STRICT;

CREATE INDEX revocations_exp ON revocations (exp);

CREATE TABLE signing_keys (
    kid          TEXT    NOT NULL PRIMARY KEY,
    alg          TEXT    NOT NULL,
    private_der  BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    verify_until INTEGER
) STRICT;
