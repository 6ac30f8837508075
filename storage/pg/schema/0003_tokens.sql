-- Reply tokens, written once when a guest's message is sent, so any node's listener and RSVP page can map a
-- token back to its organizer, event and guest. The signing secret is the invito_setting 'reply_secret'.
CREATE TABLE invito_reply_token (
    token text PRIMARY KEY,
    organizer text NOT NULL,
    uid text NOT NULL,
    guest text NOT NULL
);
