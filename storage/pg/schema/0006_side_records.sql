-- Invito's bookkeeping on a user's event (see storage/bookkeeping.py), out of the client's object: one row
-- per home and UID, for the version (SHA-256 of the event text) it belongs to. Written in the event's own
-- transaction, so unlike the filesystem's records it never needs the version it replaces.
CREATE TABLE invito_side_record (
    home text NOT NULL,
    uid text NOT NULL,
    version text NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (home, uid)
);
