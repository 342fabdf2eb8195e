-- Who is connected, one row per live WebSocket connection, on any node: refreshed while the
-- connection lives, removed when it closes, and swept by any node once it is older than the
-- presence TTL (its node died). A user is online while any of their rows is fresh. Unlogged:
-- presence is a signal, not a fact.
CREATE UNLOGGED TABLE presence_connections (
    connection_id uuid PRIMARY KEY,
    user_id       uuid NOT NULL,
    account_id    uuid NOT NULL,
    node          text NOT NULL,
    seen_at       timestamptz NOT NULL
);
CREATE INDEX presence_connections_user_idx ON presence_connections (user_id, seen_at);
CREATE INDEX presence_connections_seen_idx ON presence_connections (seen_at);

-- When each user was last seen connected: written when their last connection closes or is swept.
CREATE TABLE presence_last_seen (
    user_id      uuid PRIMARY KEY,
    last_seen_at timestamptz NOT NULL
);
