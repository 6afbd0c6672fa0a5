-- Bulk recovery (`callback_recover`): a job re-queues the deliveries of one callback that ended
-- FAILED or CANCELLED in a window of `updated_at` (when they ended), a batch per transaction,
-- walking delivery ids from `cursor_id` (the last one it passed) up to `last_id` (the newest
-- delivery of the callback when the job started). The row is the job's whole state, so it
-- survives any restart; `total` is counted when it starts.
CREATE TABLE recover_jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id  TEXT        NOT NULL,
    callback_id BIGINT      NOT NULL,
    window_from BIGINT      NOT NULL,
    window_to   BIGINT      NOT NULL,
    state       TEXT        NOT NULL CHECK (state IN ('RUNNING', 'DONE', 'CANCELLED')),
    -- Why a job was cancelled (by whom, or its callback was disabled or deleted).
    reason      TEXT,
    cursor_id   BIGINT      NOT NULL DEFAULT 0,
    last_id     BIGINT      NOT NULL,
    total       BIGINT      NOT NULL,
    done        BIGINT      NOT NULL DEFAULT 0,
    failed      BIGINT      NOT NULL DEFAULT 0,
    creator     TEXT        NOT NULL,
    created_at  BIGINT      NOT NULL,
    updated_at  BIGINT      NOT NULL
);

CREATE INDEX recover_jobs_running_idx ON recover_jobs (id) WHERE state = 'RUNNING';

-- recover_job_id: the job that last re-queued the delivery; retry_base: the attempts made before
-- it was re-queued (the retry schedule starts again from there); last_response_code: the status
-- of its last attempt; cancel_reason: why it was CANCELLED (it used to be written to last_error,
-- which now keeps the last attempt's error).
ALTER TABLE deliveries ADD COLUMN recover_job_id BIGINT;
ALTER TABLE deliveries ADD COLUMN retry_base INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN last_response_code INTEGER;
ALTER TABLE deliveries ADD COLUMN cancel_reason TEXT;

UPDATE deliveries SET cancel_reason = last_error, last_error = NULL WHERE status = 'CANCELLED';

-- A callback's deliveries, newest first (its deliveries view), and the walk of a recovery.
CREATE INDEX deliveries_callback_idx ON deliveries (callback_id, id);
-- A recovery's deliveries still waiting for their attempt: the job queues its next batch when
-- fewer than a batch wait.
CREATE INDEX deliveries_recovering_idx ON deliveries (recover_job_id)
    WHERE status = 'PENDING' AND recover_job_id IS NOT NULL;

-- A manual re-send (`callback_retry`), and the attempts of a recovered delivery, are marked.
ALTER TABLE callback_history ADD COLUMN manual BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE callback_history ADD COLUMN recover_job_id BIGINT;
