//! The `devops-callbacks` binary: `members add|remove|list` and `migrate` against the same
//! database the server uses, and the decision cache letting a revocation through in time.

use std::process::Output;
use std::time::Duration;

use reqwest::StatusCode;

use crate::common::{self, Backend, TestDb, TestServer, assert_error, backend_tests};

backend_tests!(
    members_commands_manage_the_authority,
    revocation_takes_effect_within_the_cache_ttl
);

async fn cli(db: &TestDb, args: &[&str]) -> Output {
    common::cli(db, &[], args).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn members_commands_manage_the_authority(backend: Backend) {
    let db = TestDb::new(backend).await;
    let migrate = cli(&db, &["migrate"]).await;
    assert!(migrate.status.success(), "{migrate:?}");

    for (user, role) in [("alice", "admin"), ("bob", "member")] {
        let added = cli(
            &db,
            &[
                "members",
                "add",
                "--project",
                "demo",
                "--user",
                user,
                "--role",
                role,
            ],
        )
        .await;
        assert!(added.status.success(), "{added:?}");
    }
    let listed = cli(&db, &["members", "list", "--project", "demo"]).await;
    assert!(listed.status.success());
    assert_eq!(stdout(&listed), "alice\tadmin\nbob\tmember\n");

    let server = TestServer::start_with(&db, &[("AUTH_CACHE_TTL_SECS", "0")]).await;
    let query = "event=BUILD_END&region=IDC&url=http%3A%2F%2F93.184.215.14%2F";
    assert_eq!(
        server.create("demo", "alice", query).await.0,
        StatusCode::OK
    );
    assert_error(
        &server.create("demo", "bob", query).await,
        403,
        2101104,
        &[],
    );
    assert_eq!(server.list("demo", "bob", "").await.0, StatusCode::OK);

    let removed = cli(
        &db,
        &["members", "remove", "--project", "demo", "--user", "bob"],
    )
    .await;
    assert!(removed.status.success(), "{removed:?}");
    assert_error(&server.list("demo", "bob", "").await, 403, 2101133, &[]);
    let missing = cli(
        &db,
        &["members", "remove", "--project", "demo", "--user", "bob"],
    )
    .await;
    assert!(!missing.status.success(), "removing a non-member fails");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not a member"));

    let bad_role = cli(
        &db,
        &[
            "members",
            "add",
            "--project",
            "demo",
            "--user",
            "x",
            "--role",
            "owner",
        ],
    )
    .await;
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("owner"));
    let bad_project = cli(
        &db,
        &[
            "members",
            "add",
            "--project",
            "a b",
            "--user",
            "x",
            "--role",
            "admin",
        ],
    )
    .await;
    assert!(!bad_project.status.success());
    assert_eq!(
        stdout(&cli(&db, &["members", "list", "--project", "demo"]).await),
        "alice\tadmin\n"
    );
}

async fn revocation_takes_effect_within_the_cache_ttl(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, &[("AUTH_CACHE_TTL_SECS", "1")]).await;
    server.set_member("demo", "alice", "member").await;
    assert_eq!(server.list("demo", "alice", "").await.0, StatusCode::OK);
    // Revoked behind the server's back (another replica, or the CLI).
    let removed = cli(
        &db,
        &["members", "remove", "--project", "demo", "--user", "alice"],
    )
    .await;
    assert!(removed.status.success());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_error(&server.list("demo", "alice", "").await, 403, 2101133, &[]);
}
