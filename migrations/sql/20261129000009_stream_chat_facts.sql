-- Write-side facts of the creator platform, for commands to decide on (read models are not
-- theirs to read): which conversation is which live stream's chat, and which grants let which
-- user see which experience until when. Written beside the events that make them, in the same
-- transaction, and derived again by an import.
CREATE TABLE stream_chats (
    conversation_id uuid PRIMARY KEY,
    stream_id       uuid NOT NULL,
    experience_id   uuid NOT NULL,
    account_id      uuid NOT NULL
);

CREATE TABLE access_grant_facts (
    grant_id      uuid PRIMARY KEY,
    account_id    uuid NOT NULL,
    user_id       uuid NOT NULL,
    experience_id uuid NOT NULL,
    expires_at    timestamptz,
    active        boolean NOT NULL
);
CREATE INDEX access_grant_facts_user_idx ON access_grant_facts (user_id, experience_id) WHERE active;
