-- Write-side index rows: per-item facts a command needs to decide (who wrote a message, whether
-- it is deleted), kept out of the aggregate so its state stays bounded. Written in the append's
-- transaction by the commands crate.
CREATE TABLE message_facts (
    conversation_id uuid        NOT NULL,
    message_id      uuid        NOT NULL,
    account_id      uuid        NOT NULL,
    author_id       uuid        NOT NULL,
    deleted         boolean     NOT NULL DEFAULT false,
    version         int         NOT NULL DEFAULT 1,
    PRIMARY KEY (message_id)
);
CREATE INDEX message_facts_conversation_idx ON message_facts (conversation_id);

-- Users the write side may refer to (conversation members must be active users of the account).
CREATE TABLE user_facts (
    user_id         uuid        PRIMARY KEY,
    account_id      uuid        NOT NULL,
    active          boolean     NOT NULL DEFAULT true
);
CREATE INDEX user_facts_account_idx ON user_facts (account_id);

-- Invitation tokens are looked up by their hash; the token itself is never stored.
CREATE TABLE invitation_facts (
    token_hash      text        PRIMARY KEY,
    invitation_id   uuid        NOT NULL UNIQUE,
    account_id      uuid        NOT NULL
);
