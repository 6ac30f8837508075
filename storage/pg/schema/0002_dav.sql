-- Radicale's collections and items (storage/pg/dav.py), with RFC 6578 sync history.

-- One row per collection, the root ("") included. ``revision`` counts this collection's changes: every
-- write bumps it with UPDATE … RETURNING, whose row lock orders the writers of one collection, so a
-- revision a reader has seen is never followed by a smaller one committing later. ``history_floor`` is the
-- highest revision whose tombstones were pruned: a sync token below it is refused (the client resyncs).
CREATE TABLE dav_collection (
    id bigserial PRIMARY KEY,
    path text NOT NULL UNIQUE,
    parent text,
    owner text NOT NULL,
    props jsonb NOT NULL DEFAULT '{}',
    revision bigint NOT NULL DEFAULT 0,
    history_floor bigint NOT NULL DEFAULT 0,
    modified timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dav_collection_parent ON dav_collection (parent);
INSERT INTO dav_collection (path, parent, owner) VALUES ('', NULL, '');

-- One row per item, with what Radicale would otherwise parse the text for: UID, component, time range
-- (Radicale's Item.time_range, POSIX seconds), etag. ``owner`` is the home the item lives in, for the UID
-- index the scheduler looks meetings up by.
CREATE TABLE dav_item (
    collection_id bigint NOT NULL REFERENCES dav_collection ON DELETE CASCADE,
    href text NOT NULL,
    owner text NOT NULL,
    uid text NOT NULL,
    name text NOT NULL,
    component text NOT NULL,
    starts bigint NOT NULL,
    ends bigint NOT NULL,
    etag text NOT NULL,
    text text NOT NULL,
    modified timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection_id, href)
);
-- Time ranges as boxes from (collection, start) to (collection, end): one GiST index finds the items of one
-- collection that overlap a window without reading those before it (a btree on (collection, start) reads
-- every item that starts before the window's end).
CREATE INDEX dav_item_time_range ON dav_item USING gist (box(point(collection_id, starts), point(collection_id, ends)));
CREATE INDEX dav_item_uid ON dav_item (owner, uid);

-- The latest change of each href of a collection: the revision that wrote it, and whether it was a delete.
CREATE TABLE dav_change (
    collection_id bigint NOT NULL REFERENCES dav_collection ON DELETE CASCADE,
    href text NOT NULL,
    revision bigint NOT NULL,
    deleted boolean NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection_id, href)
);
CREATE INDEX dav_change_revision ON dav_change (collection_id, revision);
CREATE INDEX dav_change_tombstone ON dav_change (collection_id, changed_at) WHERE deleted;
