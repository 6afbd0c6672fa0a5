-- Accepted events. (project_id, event_id) makes re-sent events idempotent; `body` is the exact
-- JSON every delivery POSTs; `deliveries` is what the intake answered, kept for replays.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT  NOT NULL,
    event_id   TEXT NOT NULL,
    event      TEXT  NOT NULL,
    body       TEXT         NOT NULL,
    deliveries INTEGER      NOT NULL,
    created_at BIGINT       NOT NULL,
    UNIQUE (project_id, event_id)
);

-- The outbox: one row per (event, matching callback), written in the intake transaction.
-- A worker leases a row (lease_until, claim_token), sends outside any transaction, then records.
-- No foreign key to callbacks: deleting a callback must stop its deliveries visibly, not erase them.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_pk        BIGINT      NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    callback_id     BIGINT      NOT NULL,
    -- The callback URL's host: workers cap attempts in flight per host.
    host            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('PENDING', 'SUCCESS', 'FAILED', 'CANCELLED')),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at BIGINT      NOT NULL,
    lease_until     BIGINT,
    claim_token     TEXT,
    last_error      TEXT,
    created_at      BIGINT      NOT NULL,
    updated_at      BIGINT      NOT NULL
);

CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX deliveries_claim_idx ON deliveries (claim_token) WHERE claim_token IS NOT NULL;
CREATE INDEX deliveries_event_idx ON deliveries (event_pk);

-- One row per delivery attempt.
CREATE TABLE callback_history (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     BIGINT,
    callback_id     BIGINT        NOT NULL,
    project_id      TEXT   NOT NULL,
    url             TEXT NOT NULL,
    event           TEXT   NOT NULL,
    status          TEXT   NOT NULL CHECK (status IN ('SUCCESS', 'FAILED')),
    attempt         INTEGER       NOT NULL,
    error_msg       TEXT,
    request_headers TEXT          NOT NULL,
    request_body    TEXT          NOT NULL,
    response_code   INTEGER,
    response_body   TEXT,
    start_time      BIGINT        NOT NULL,
    end_time        BIGINT        NOT NULL,
    created_at      BIGINT        NOT NULL
);

CREATE INDEX callback_history_project_created_idx
    ON callback_history (project_id, created_at DESC, id DESC);
