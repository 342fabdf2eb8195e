-- Reactions the write side decides on: one per (message, user, emoji), found by id to take back.
-- Written in the append's transaction, under the conversation's lock.
CREATE TABLE reaction_facts (
    reaction_id     uuid        PRIMARY KEY,
    message_id      uuid        NOT NULL,
    conversation_id uuid        NOT NULL,
    account_id      uuid        NOT NULL,
    user_id         uuid        NOT NULL,
    emoji           text        NOT NULL,
    UNIQUE (message_id, user_id, emoji)
);
