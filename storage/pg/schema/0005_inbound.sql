-- The inbound queue: each message a listener accepted, committed before its 250. A processor locks one
-- pending row (FOR UPDATE SKIP LOCKED) and deletes it in the transaction of the changes it applied.
CREATE TABLE invito_inbound (
    id text PRIMARY KEY,                    -- "<ns>-<hex>": sorts in arrival order
    raw bytea NOT NULL,
    mail_from text NOT NULL,
    recipients text[] NOT NULL,
    peer text NOT NULL,
    received double precision NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'quarantined')),
    reason text NOT NULL DEFAULT ''
);
CREATE INDEX invito_inbound_pending ON invito_inbound (id) WHERE state = 'pending';

-- Processing runs that began and never finished (a crash, a kill, a hang), per message. Apart from
-- invito_inbound and without a foreign key: it is written on a connection of its own while the
-- processing transaction holds the message's row lock, and must survive that transaction's rollback.
CREATE TABLE invito_inbound_run (
    id text PRIMARY KEY,
    unfinished integer NOT NULL
);
