-- The transactional outbox: a message row and one delivery row per recipient, written in the transaction of
-- the event write that caused them. A sender on any node leases due deliveries (leased_until, holder) in a
-- transaction of its own, sends outside it, then records the outcome; an expired lease is due again.
-- Times are epoch seconds (double precision), the unit of the sender's backoff and of the file spool.
CREATE TABLE invito_outbox_message (
    id text PRIMARY KEY,                    -- "<ns>-<hex>", as in the file spool: sorts oldest first
    method text NOT NULL,                   -- REQUEST, REPLY..., or FORWARD (a complete mail in "mail")
    uid text NOT NULL,
    sender text NOT NULL,
    ics text NOT NULL,
    created double precision NOT NULL,
    changes jsonb NOT NULL DEFAULT '[]',
    notes jsonb NOT NULL DEFAULT '[]',
    mail bytea NOT NULL DEFAULT ''
);

CREATE TABLE invito_outbox_delivery (
    message text NOT NULL REFERENCES invito_outbox_message (id) ON DELETE CASCADE,
    recipient text NOT NULL,
    state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_try double precision NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '',
    stage text DEFAULT '',                  -- NULL: copied from a spool file older than the field
    ready_at double precision NOT NULL DEFAULT 0,  -- SpoolEntry.ready_at, written with the state it follows from
    after_failure boolean NOT NULL DEFAULT false,
    leased_until double precision NOT NULL DEFAULT 0,
    holder text NOT NULL DEFAULT '',
    reason text NOT NULL DEFAULT '',        -- state 'failed': why it will never be sent
    PRIMARY KEY (message, recipient)
);
CREATE INDEX invito_outbox_due ON invito_outbox_delivery (ready_at) WHERE state = 'queued';

-- Final outcomes (sent, refused, gave up), for `invito queue`'s recent history; pruned by age.
CREATE TABLE invito_outbox_outcome (
    n bigserial PRIMARY KEY,
    time double precision NOT NULL,
    message text NOT NULL,
    method text NOT NULL,
    uid text NOT NULL,
    sender text NOT NULL,
    recipient text NOT NULL,
    status text NOT NULL,
    detail text NOT NULL
);
CREATE INDEX invito_outbox_outcome_time ON invito_outbox_outcome (time);
