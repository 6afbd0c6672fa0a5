-- Pipeline-level callbacks (bk-ci's T_PIPELINE_CALLBACK) live in `callbacks` too, so delivery,
-- history, claims, token sealing, auto-disable and retention treat them as any other callback.
-- A pipeline row has both `pipeline_id` and `name` and is keyed by (project, pipeline, name);
-- a project (or global) row has neither and keeps its key (project, url, event).
ALTER TABLE callbacks
    ADD COLUMN pipeline_id VARCHAR(64)  COLLATE "C",
    ADD COLUMN name        VARCHAR(255) COLLATE "C",
    ADD CONSTRAINT callbacks_pipeline_has_name CHECK ((pipeline_id IS NULL) = (name IS NULL));

ALTER TABLE callbacks DROP CONSTRAINT callbacks_project_url_event_key;

-- Two partial unique keys; upserts name theirs with `ON CONFLICT (…) WHERE …`. Their
-- (project_id, …) prefixes serve the list APIs and the intake lookups.
CREATE UNIQUE INDEX callbacks_project_url_event_key
    ON callbacks (project_id, url, event) WHERE pipeline_id IS NULL;
CREATE UNIQUE INDEX callbacks_pipeline_name_key
    ON callbacks (project_id, pipeline_id, name) WHERE pipeline_id IS NOT NULL;
