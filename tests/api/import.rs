//! `import-bkci` against a real MariaDB holding bk-ci's two registration tables (reference §7):
//! rows come over under their ids with their state, encrypted values are opened, a refused
//! row is skipped with its reason, a second run changes nothing, `--dry-run` writes nothing.

use sqlx::mysql::MySqlPool;

use crate::common::{Backend, TestDb, backend_tests, cli, public_url};

backend_tests!(
    registrations_come_over_and_a_second_run_changes_nothing,
    a_dry_run_writes_nothing_and_encrypted_rows_need_the_key,
    a_global_rows_secret_param_headers_come_over,
);

/// MariaDB on this machine; `BKCI_TEST_MYSQL_URL` points elsewhere.
fn mysql_admin_url() -> String {
    std::env::var("BKCI_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// The reference's key and what it encrypts `my-secret-token` to.
const AES_KEY: &str = "bkci-callback-aes-key";
const SEALED_TOKEN: &str = "uMPAbnziAlf8MlaMrjjh6w==";

/// A bk-ci process database of its own, with the callback tables as bk-ci's DDL declares them
/// and the columns of `T_PIPELINE_INFO` the bus bridge reads.
pub struct BkciDb {
    admin: MySqlPool,
    name: String,
    pool: MySqlPool,
}

impl BkciDb {
    pub async fn new() -> Self {
        let admin = MySqlPool::connect(&mysql_admin_url())
            .await
            .expect("MariaDB is up");
        let name = format!("bkci_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
            .execute(&admin)
            .await
            .unwrap();
        let pool = MySqlPool::connect(&format!("{}/{name}", mysql_admin_url()))
            .await
            .unwrap();
        for ddl in [
            "CREATE TABLE T_PROJECT_PIPELINE_CALLBACK (
                ID bigint(20) NOT NULL AUTO_INCREMENT PRIMARY KEY,
                PROJECT_ID varchar(64) NOT NULL,
                EVENTS varchar(255) NULL,
                CALLBACK_URL varchar(255) NOT NULL,
                CREATOR varchar(64) NOT NULL,
                UPDATOR varchar(64) NOT NULL,
                CREATED_TIME datetime NOT NULL,
                UPDATED_TIME datetime NOT NULL,
                SECRET_TOKEN text NULL,
                ENABLE bit(1) NOT NULL DEFAULT b'1',
                FAILURE_TIME datetime NULL,
                SECRET_PARAM text NULL,
                UNIQUE KEY IDX_PROJECT_CALLBACK_EVENTS (PROJECT_ID, CALLBACK_URL, EVENTS)
            ) DEFAULT CHARSET = utf8mb4",
            "CREATE TABLE T_PIPELINE_CALLBACK (
                PROJECT_ID varchar(64) NOT NULL,
                PIPELINE_ID varchar(64) NOT NULL,
                NAME varchar(255) NOT NULL,
                EVENT_TYPE varchar(64) NOT NULL,
                REGION varchar(32) NULL,
                URL varchar(256) NOT NULL,
                SECRET_TOKEN varchar(100) NULL,
                USER_ID varchar(100) NULL,
                CREATE_TIME datetime NULL,
                UPDATE_TIME datetime NULL,
                PRIMARY KEY (PROJECT_ID, PIPELINE_ID, NAME)
            ) DEFAULT CHARSET = utf8mb4",
            "CREATE TABLE T_PIPELINE_INFO (
                PIPELINE_ID varchar(34) NOT NULL PRIMARY KEY,
                PROJECT_ID varchar(64) NOT NULL,
                PIPELINE_NAME varchar(255) NOT NULL,
                LAST_MODIFY_USER varchar(64) NOT NULL,
                UPDATE_TIME timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
                `DELETE` bit(1) NULL DEFAULT b'0'
            ) DEFAULT CHARSET = utf8mb4",
        ] {
            sqlx::query(ddl).execute(&pool).await.unwrap();
        }
        Self { admin, name, pool }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", mysql_admin_url(), self.name)
    }

    pub async fn execute(&self, sql: &str) {
        sqlx::query(sql).execute(&self.pool).await.unwrap();
    }

    /// The rows of the tests: one of each kind, and two that must not come over.
    async fn fill(&self) {
        let project_row = |id: i64, project: &str, event: &str, url: &str, rest: &str| {
            format!(
                "INSERT INTO T_PROJECT_PIPELINE_CALLBACK (ID, PROJECT_ID, EVENTS, CALLBACK_URL, \
                     CREATOR, UPDATOR, CREATED_TIME, UPDATED_TIME, SECRET_TOKEN, ENABLE, \
                     FAILURE_TIME) \
                 VALUES ({id}, '{project}', '{event}', '{url}', 'alice', 'bob', \
                     '2026-08-20 09:00:00', '2026-08-21 09:30:00', {rest})"
            )
        };
        for row in [
            project_row(
                1001,
                "demo",
                "BUILD_END",
                &public_url("end"),
                "'tok-1', 1, NULL",
            ),
            project_row(
                1002,
                "demo",
                "BUILD_START",
                "http://10.0.0.5/hook",
                "NULL, 1, NULL",
            ),
            project_row(
                1003,
                "DEVOPS_ALL_PROJECT",
                "PROJECT_UPDATE",
                &public_url("g"),
                "NULL, 1, NULL",
            ),
            project_row(
                1004,
                "demo",
                "PROJECT_CREATE",
                &public_url("c"),
                "NULL, 1, NULL",
            ),
            project_row(
                1005,
                "demo",
                "BUILD_TASK_END",
                &public_url("f"),
                "NULL, 0, '2026-08-21 10:00:00'",
            ),
        ] {
            self.execute(&row).await;
        }
        let pipeline_row = |name: &str, event: &str, token: &str| {
            format!(
                "INSERT INTO T_PIPELINE_CALLBACK (PROJECT_ID, PIPELINE_ID, NAME, EVENT_TYPE, \
                     REGION, URL, SECRET_TOKEN, USER_ID, CREATE_TIME, UPDATE_TIME) \
                 VALUES ('demo', 'p-1', '{name}', '{event}', 'IDC', '{}', {token}, 'alice', \
                     '2026-08-20 09:00:00', NULL)",
                public_url(name)
            )
        };
        self.execute(&pipeline_row(
            "notify-end",
            "BUILD_END",
            &format!("'{SEALED_TOKEN}'"),
        ))
        .await;
        self.execute(&pipeline_row("on-update", "PROJECT_UPDATE", "NULL"))
            .await;
    }
}

impl Drop for BkciDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime: the clean-up gets a thread and runtime of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                        .execute(&admin)
                        .await;
                });
        })
        .join();
    }
}

async fn import(db: &TestDb, bkci: &BkciDb, extra: &[&str]) -> String {
    let url = bkci.url();
    let mut args = vec!["import-bkci", "--mysql-url", &url];
    args.extend_from_slice(extra);
    let output = cli(db, &[], &args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The count on the summary line `label`.
#[track_caller]
fn count(summary: &str, label: &str) -> u64 {
    summary
        .lines()
        .find_map(|line| line.strip_prefix(label).map(str::trim))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{summary}"))
}

async fn registrations_come_over_and_a_second_run_changes_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let bkci = BkciDb::new().await;
    bkci.fill().await;

    let first = import(&db, &bkci, &["--aes-key", AES_KEY]).await;
    assert_eq!(count(&first, "imported"), 5, "{first}");
    assert_eq!(count(&first, "skipped"), 2, "{first}");
    assert!(
        first.contains("T_PROJECT_PIPELINE_CALLBACK#1002  skipped: url refused"),
        "the refused URL is named with its reason:\n{first}"
    );
    assert!(
        first.contains("T_PIPELINE_CALLBACK demo/p-1/on-update  skipped: bk-ci never delivers"),
        "{first}"
    );

    // Under their bk-ci ids, with their state.
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM callbacks WHERE id = 1001 AND project_id = 'demo' \
             AND event = 'BUILD_END' AND enabled AND secret_token = 'tok-1' \
             AND creator = 'alice' AND updater = 'bob'"
        )
        .await,
        1
    );
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM callbacks WHERE id = 1003 AND project_id = 'DEVOPS_ALL_PROJECT'"
        )
        .await,
        1
    );
    // Nothing produces PROJECT_CREATE in bk-ci: it comes over disabled, saying why.
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM callbacks WHERE id = 1004 AND NOT enabled \
             AND disabled_reason LIKE '%nothing produces this event%'"
        )
        .await,
        1
    );
    // Disabled there, with its failure clock: 10:00 in Asia/Shanghai is 02:00 UTC.
    let failing_since = chrono::DateTime::parse_from_rfc3339("2026-08-21T02:00:00Z")
        .unwrap()
        .timestamp_millis();
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) FROM callbacks WHERE id = 1005 AND NOT enabled \
             AND failure_time = {failing_since}"
        ))
        .await,
        1
    );
    // The pipeline row's token was encrypted by bk-ci and is opened (stored as given here,
    // as no SECRET_ENCRYPTION_KEY is set).
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM callbacks WHERE pipeline_id = 'p-1' AND name = 'notify-end' \
             AND secret_token = 'my-secret-token' AND enabled"
        )
        .await,
        1
    );

    let second = import(&db, &bkci, &["--aes-key", AES_KEY]).await;
    assert_eq!(count(&second, "imported"), 0, "{second}");
    assert_eq!(count(&second, "updated"), 0, "{second}");
    assert_eq!(count(&second, "unchanged"), 5, "{second}");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM callbacks").await, 5);

    // A change in bk-ci is brought over on the next run.
    bkci.execute("UPDATE T_PROJECT_PIPELINE_CALLBACK SET ENABLE = 0 WHERE ID = 1001")
        .await;
    let third = import(&db, &bkci, &["--aes-key", AES_KEY]).await;
    assert_eq!(count(&third, "updated"), 1, "{third}");
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM callbacks WHERE id = 1001 AND NOT enabled")
            .await,
        1
    );

    // New registrations here get ids after the imported ones.
    db.execute(
        "INSERT INTO callbacks (project_id, url, event, region, enabled, creator, updater, \
             created_at, updated_at) \
         VALUES ('demo', 'http://93.184.215.14/new', 'BUILD_START', 'IDC', TRUE, 'a', 'a', 0, 0)",
    )
    .await;
    assert!(db.scalar("SELECT MAX(id) FROM callbacks").await > 1005);
}

async fn a_dry_run_writes_nothing_and_encrypted_rows_need_the_key(backend: Backend) {
    let db = TestDb::new(backend).await;
    let bkci = BkciDb::new().await;
    bkci.fill().await;

    let dry = import(&db, &bkci, &["--dry-run"]).await;
    assert!(dry.starts_with("dry run: nothing was written"), "{dry}");
    assert_eq!(count(&dry, "imported"), 4, "{dry}");
    assert!(
        dry.contains("T_PIPELINE_CALLBACK demo/p-1/notify-end  skipped: SECRET_TOKEN is encrypted: pass --aes-key"),
        "{dry}"
    );
    assert_eq!(db.scalar("SELECT COUNT(*) FROM callbacks").await, 0);
}

async fn a_global_rows_secret_param_headers_come_over(backend: Backend) {
    let db = TestDb::new(backend).await;
    let bkci = BkciDb::new().await;
    // The reference's vector: key `abc`, `{"@type":"header","headers":{"X-Auth":"v1"}}`.
    bkci.execute(&format!(
        "INSERT INTO T_PROJECT_PIPELINE_CALLBACK (ID, PROJECT_ID, EVENTS, CALLBACK_URL, CREATOR, \
             UPDATOR, CREATED_TIME, UPDATED_TIME, ENABLE, SECRET_PARAM) \
         VALUES (2001, 'DEVOPS_ALL_PROJECT', 'PROJECT_UPDATE', '{}', 'ops', 'ops', \
             '2026-08-20 09:00:00', '2026-08-20 09:00:00', 1, \
             '169XMoy+aj2Qjb5UnrbHHhX/8i0Gh4bwCT/shLjQ3WUbWcEVrjM0cXoIRzc+TVu6')",
        public_url("prj")
    ))
    .await;

    let wrong = import(&db, &bkci, &["--aes-key", "not-the-key"]).await;
    assert!(
        wrong.contains("T_PROJECT_PIPELINE_CALLBACK#2001  skipped: SECRET_PARAM"),
        "a wrong key skips the row, saying why:\n{wrong}"
    );
    let first = import(&db, &bkci, &["--aes-key", "abc"]).await;
    assert_eq!(count(&first, "imported"), 1, "{first}");
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM callbacks WHERE id = 2001 \
             AND secret_headers LIKE '%X-Auth%' AND secret_headers LIKE '%v1%'"
        )
        .await,
        1
    );
    let second = import(&db, &bkci, &["--aes-key", "abc"]).await;
    assert_eq!(count(&second, "unchanged"), 1, "{second}");
}
