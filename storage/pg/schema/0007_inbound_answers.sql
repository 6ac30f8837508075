-- An answer given on the RSVP page and refused there is kept in the quarantine as what it is, not as a
-- made-up mail: kind 'answer', the PageAnswer's fields in "answer" (calendar text, guest, organizer, UID,
-- the link's token by its tag, the browser's address), no raw message. Released, it is pending like a mail
-- and the processor answers it again through its link.
ALTER TABLE invito_inbound
    ADD COLUMN kind text NOT NULL DEFAULT 'mail' CHECK (kind IN ('mail', 'answer')),
    ADD COLUMN answer jsonb,
    ADD CONSTRAINT invito_inbound_answer_of_its_kind CHECK ((kind = 'answer') = (answer IS NOT NULL));
