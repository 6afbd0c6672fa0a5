-- An attempt of a delivery's schedule sends its event's body unchanged, so its history row no
-- longer copies it: `body_from_event` rows keep `request_body` empty and are read through
-- their delivery's event (retention keeps a delivery, and so its event, while history names it).
-- Manual re-sends still store what they sent.
ALTER TABLE callback_history ADD COLUMN body_from_event BOOLEAN NOT NULL DEFAULT FALSE;
