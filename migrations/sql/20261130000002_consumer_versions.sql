-- The newest version of each process manager that any node runs (announced by every runner that
-- asks for the lease). A holder of an older version moves its checkpoint only while it is the
-- newest, so during a rolling upgrade it acts on nothing more once a newer node is up, and the
-- lease goes to the newest version running.
ALTER TABLE consumer_checkpoints ADD COLUMN version int NOT NULL DEFAULT 1;
