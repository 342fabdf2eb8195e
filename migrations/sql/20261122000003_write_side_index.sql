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
