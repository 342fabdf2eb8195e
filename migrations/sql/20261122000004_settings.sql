-- Process-wide settings shared by every node (for example the JWT secret generated at first start
-- when PARLEY_JWT_SECRET is unset, so restarts and other nodes keep accepting issued tokens).
CREATE TABLE settings (
    key         text        PRIMARY KEY,
    value       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
