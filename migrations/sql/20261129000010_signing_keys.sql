-- The keys that sign and verify access tokens (HS256). The newest key that is not retired signs;
-- every key not retired verifies, so a rotation (a new key) leaves the tokens of the old one
-- valid until they expire, and retiring a key (a leaked one, or once its tokens have expired)
-- refuses them at once on every node. Nodes follow the table; no restart is needed.
CREATE TABLE signing_keys (
    kid        text        PRIMARY KEY,
    secret     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at timestamptz
);
