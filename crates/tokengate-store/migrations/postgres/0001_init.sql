-- tokengate schema, Postgres flavour: the same tables and meaning as the SQLite one.
--
-- Ids are UUID (16 bytes), never 36-character text; hashes BYTEA. Times are BIGINT Unix
-- seconds, the unit of the JWT claims. The tables land in the first schema of the
-- connection's `search_path`, so one database can hold several separate stores.

CREATE TABLE users (
    id            UUID    NOT NULL PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE sessions (
    id           UUID   NOT NULL PRIMARY KEY,
    user_id      UUID   NOT NULL REFERENCES users (id),
    -- Insertion order: the tie-break between sessions created in the same second, which
    -- SQLite gets from its rowid.
    ord          BIGINT GENERATED ALWAYS AS IDENTITY,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    user_agent   TEXT,
    ip           TEXT,
    access_exp   BIGINT NOT NULL,
    refresh_exp  BIGINT NOT NULL,
    ended_at     BIGINT
);

CREATE INDEX sessions_user_id ON sessions (user_id);
-- The purge looks sessions up by the later of their two expiries; the query uses this
-- very expression so that it is an index range scan, not a table scan.
CREATE INDEX sessions_expiry ON sessions (GREATEST(access_exp, refresh_exp));

-- Refresh tokens are kept only as SHA-256 hashes. Used tokens stay until they expire so
-- that a second use is recognised as reuse.
CREATE TABLE refresh_tokens (
    hash       BYTEA  NOT NULL PRIMARY KEY
               CONSTRAINT refresh_tokens_hash_length CHECK (octet_length(hash) = 32),
    session_id UUID   NOT NULL REFERENCES sessions (id),
    exp        BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_exp ON refresh_tokens (exp);

-- `seq` comes from a sequence, so a number is never reused, even after the newest rows are
-- purged, and a cursor held by another process never skips a record. The sequence must
-- keep its default CACHE 1: with a per-connection cache, numbers would no longer be handed
-- out in the order in which writers take the revocation lock (see postgres.rs), and a
-- tailing reader could skip records.
-- `id` is the jti, sid or sub, and all zeros for `issued_before`.
CREATE TABLE revocations (
    seq           BIGSERIAL PRIMARY KEY,
    kind          TEXT   NOT NULL
                  CONSTRAINT revocations_kind
                  CHECK (kind IN ('token', 'session', 'user', 'issued_before')),
    id            UUID   NOT NULL,
    issued_before BIGINT,
    exp           BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    CONSTRAINT revocations_cutoff
        CHECK ((issued_before IS NULL) = (kind IN ('token', 'session')))
);

CREATE INDEX revocations_exp ON revocations (exp);

CREATE TABLE signing_keys (
    kid          TEXT   NOT NULL PRIMARY KEY,
    -- Insertion order: the tie-break between keys made in the same second.
    ord          BIGINT GENERATED ALWAYS AS IDENTITY,
    alg          TEXT   NOT NULL,
    private_der  BYTEA  NOT NULL,
    created_at   BIGINT NOT NULL,
    verify_until BIGINT
);
