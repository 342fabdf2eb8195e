-- API key secrets are looked up by their hash (the secret itself is never stored): a node that
-- has not yet seen a key's creation in the log finds it here. Written in the append's transaction.
CREATE TABLE api_key_facts (
    secret_hash     text        PRIMARY KEY,
    api_key_id      uuid        NOT NULL UNIQUE,
    account_id      uuid        NOT NULL
);
