-- Every refresh token ever issued, by its hash, with its session: a rotated token presented
-- again is recognized (and ends its session). Written in the append's transaction.
CREATE TABLE session_tokens (
    token_hash  text        PRIMARY KEY,
    session_id  uuid        NOT NULL,
    account_id  uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX session_tokens_session_idx ON session_tokens (session_id);
