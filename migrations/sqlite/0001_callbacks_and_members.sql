-- Callback registrations. One row per (project, url, event), as in bk-ci; times are epoch ms.
CREATE TABLE callbacks (
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
    UNIQUE (project_id, url, event)
);

-- No other index: the unique key's (project_id, …) prefix serves the list API and the intake
-- lookup (a project has few callbacks), and every extra index would tax the create path.

-- The local permission authority.
CREATE TABLE project_members (
    project_id TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('admin', 'member')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
