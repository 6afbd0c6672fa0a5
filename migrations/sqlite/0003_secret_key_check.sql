-- The sealed form of a known text, written the first time SECRET_ENCRYPTION_KEY is used, so a
-- start with another key (or none, while sealed tokens exist) fails at once instead of at
-- every delivery. One row at most.
CREATE TABLE secret_key_check (
    id          INTEGER  PRIMARY KEY CHECK (id = 1),
    check_value TEXT     NOT NULL,
    created_at  INTEGER  NOT NULL
);
