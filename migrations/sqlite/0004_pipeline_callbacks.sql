-- Pipeline-level callbacks (bk-ci's T_PIPELINE_CALLBACK) live in `callbacks` too, so delivery,
-- history, claims, token sealing, auto-disable and retention treat them as any other callback.
-- A pipeline row has both `pipeline_id` and `name` and is keyed by (project, pipeline, name);
-- a project (or global) row has neither and keeps its key (project, url, event).
--
-- SQLite cannot drop the table's UNIQUE constraint, so the table is rebuilt with every row and
-- id kept, and with the AUTOINCREMENT high-water mark kept: an id of a deleted callback is
-- never handed out again (its old deliveries must not reach a new callback).
CREATE TABLE callbacks_rebuilt (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id      TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    region          TEXT    NOT NULL,
    secret_token    TEXT,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    creator         TEXT    NOT NULL,
    updater         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    -- When failures without a success began; cleared by any success or a re-create.
    failure_time    INTEGER,
    disabled_reason TEXT,
    pipeline_id     TEXT,
    name            TEXT,
    CHECK ((pipeline_id IS NULL) = (name IS NULL))
);

INSERT INTO callbacks_rebuilt (id, project_id, url, event, region, secret_token, enabled,
        creator, updater, created_at, updated_at, failure_time, disabled_reason)
    SELECT id, project_id, url, event, region, secret_token, enabled,
        creator, updater, created_at, updated_at, failure_time, disabled_reason
    FROM callbacks;

DELETE FROM sqlite_sequence WHERE name = 'callbacks_rebuilt';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'callbacks_rebuilt', seq FROM sqlite_sequence WHERE name = 'callbacks';

DROP TABLE callbacks;
ALTER TABLE callbacks_rebuilt RENAME TO callbacks;

-- Two partial unique keys; upserts name theirs with `ON CONFLICT (…) WHERE …`. Their
-- (project_id, …) prefixes serve the list APIs and the intake lookups.
CREATE UNIQUE INDEX callbacks_project_url_event_key
    ON callbacks (project_id, url, event) WHERE pipeline_id IS NULL;
CREATE UNIQUE INDEX callbacks_pipeline_name_key
    ON callbacks (project_id, pipeline_id, name) WHERE pipeline_id IS NOT NULL;
