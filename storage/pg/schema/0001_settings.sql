-- Values every node shares and none may own alone (the reply links' signing secret, first of them).
CREATE TABLE invito_setting (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
