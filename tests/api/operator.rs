//! What an operator meets first: the log at the default level, the command line's help and
//! completions, and the messages of a start that cannot go on.

use std::process::Output;

use devops_callbacks::config::VARIABLES;
use reqwest::StatusCode;

use crate::common::{
    Backend, DELIVERY_VARS, SERVICE_TOKEN, TestDb, WAIT, backend_tests, binary_command, cli,
    wait_until,
};
use crate::processes::ServerProcess;
use crate::receiver::{Answer, Receiver};

backend_tests!(the_log_says_what_the_service_does);

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The binary with `args`, outside any database (help and completions need none).
async fn run(args: &[&str]) -> Output {
    binary_command().args(args).output().await.unwrap()
}

/// At the default level (no `RUST_LOG`): the start line names the database (never its password),
/// the address and the auth mode; each request is one line with its method, route, status,
/// time and request id; each failed attempt is one line with the callback, host, status and the
/// next attempt, or that it was given up. Written to a file, the log has no colour codes.
async fn the_log_says_what_the_service_does(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let expected_database = match backend {
        Backend::Sqlite => db.url.trim_start_matches("sqlite://").to_owned(),
        Backend::Postgres => {
            // The test cluster trusts local connections, so any password logs in.
            let mut url = url::Url::parse(&db.url).unwrap();
            url.set_password(Some("never-logged")).unwrap();
            db.url = url.to_string();
            url.set_password(Some("***")).unwrap();
            url.to_string()
        }
    };
    let logs = tempfile::tempdir().unwrap();
    let vars: Vec<(&str, &str)> = DELIVERY_VARS
        .iter()
        .copied()
        .chain([("DELIVERY_RETRY_SCHEDULE", "300ms")])
        .collect();
    let server = ServerProcess::start(&db, logs.path(), "default-level", &vars).await;
    let read_log = || std::fs::read_to_string(&server.log).unwrap();

    let start = read_log();
    let listening = start
        .lines()
        .find(|line| line.contains(" listening "))
        .unwrap_or_else(|| panic!("no start line in {start}"));
    let addr = server.base.trim_start_matches("http://");
    for part in [
        format!("addr={addr}"),
        format!("database={expected_database}"),
        "auth=local".to_owned(),
        "identity=\"X-DEVOPS-UID as sent\"".to_owned(),
    ] {
        assert!(listening.contains(&part), "{part} not in {listening}");
    }
    assert!(!start.contains("never-logged"), "{start}");

    let client = reqwest::Client::new();
    let healthz = client
        .get(format!("{}/healthz", server.base))
        .header("x-request-id", "req-healthz-1")
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);
    let missing = client
        .get(format!("{}/no/such/route?secretToken=t0ken", server.base))
        .header("x-request-id", "req-missing-1")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Status(500));
    server
        .register_event("BUILD_END", &receiver.url("/down"))
        .await;
    server
        .post(
            "/service/callbacks/projects/demo/events",
            Some(r#"{"event":"BUILD_END","data":{}}"#.to_owned()),
        )
        .await;
    wait_until("the given-up line", WAIT, async || {
        read_log().contains("given up")
    })
    .await;

    let log = read_log();
    assert!(!log.contains('\u{1b}'), "colour codes in a file: {log}");
    let line_of = |needle: &str| {
        log.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle} in {log}"))
            .to_owned()
    };
    let request = line_of("request_id=req-healthz-1");
    for part in ["INFO", "method=GET", "route=/healthz", "status=200", "ms="] {
        assert!(request.contains(part), "{part} not in {request}");
    }
    let request = line_of("request_id=req-missing-1");
    for part in ["route=unmatched", "path=/no/such/route", "status=404"] {
        assert!(request.contains(part), "{part} not in {request}");
    }
    assert!(!log.contains("t0ken"), "the query is never logged: {log}");
    let created = line_of("route=/{apigw_type}/v4/projects/{project_id}/callbacks ");
    assert!(
        created.contains("method=POST") && created.contains("status=200"),
        "{created}"
    );
    assert!(!log.contains(SERVICE_TOKEN), "{log}");

    let retrying = line_of("delivery attempt failed; retrying");
    let given_up = line_of("delivery attempt failed; given up");
    for line in [&retrying, &given_up] {
        for part in [
            "WARN",
            "callback_id=1",
            "host=127.0.0.1",
            "status=500",
            "reason=",
        ] {
            assert!(line.contains(part), "{part} not in {line}");
        }
    }
    assert!(
        retrying.contains("attempt=1") && retrying.contains("next_attempt=20"),
        "{retrying}"
    );
    assert!(
        given_up.contains("attempt=2") && !given_up.contains("next_attempt"),
        "{given_up}"
    );
}

/// `--help` describes every command and flag, says that configuration comes from the
/// environment and lists every variable; `-h` points there.
#[tokio::test]
async fn the_help_describes_commands_flags_and_variables() {
    let help = run(&["--help"]).await;
    assert!(help.status.success(), "{help:?}");
    let help = stdout(&help);
    assert!(
        help.contains("Configuration comes from the environment"),
        "{help}"
    );
    for variable in VARIABLES {
        assert!(
            help.contains(variable.name),
            "{} not in {help}",
            variable.name
        );
    }
    let commands = help
        .split("Commands:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("a command list");
    for line in commands.lines() {
        let described = line.trim().split_once("  ").map(|(_, about)| about.trim());
        assert!(
            described.is_some_and(|about| !about.is_empty()),
            "undescribed: {line}"
        );
    }
    for command in [
        "serve",
        "migrate",
        "members",
        "events",
        "import-bkci",
        "bus",
        "healthcheck",
        "completions",
    ] {
        assert!(
            commands.contains(&format!("  {command} ")),
            "{command} not in {commands}"
        );
    }
    let short = stdout(&run(&["-h"]).await);
    assert!(
        short.contains("environment variables: --help lists them"),
        "{short}"
    );

    // Every flag of every command has a description; closed sets list their values.
    for args in [
        &["members", "add", "--help"][..],
        &["members", "remove", "--help"],
        &["members", "list", "--help"],
        &["events", "publish", "--help"],
        &["import-bkci", "--help"],
        &["bus", "replay-parked", "--help"],
        &["healthcheck", "--help"],
        &["completions", "--help"],
    ] {
        let help = stdout(&run(args).await);
        let options = help
            .split("Options:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{help}"));
        for line in options
            .lines()
            .filter(|line| line.trim_start().starts_with("--"))
        {
            let about = line.trim().split_once("  ").map(|(_, about)| about.trim());
            assert!(
                about.is_some_and(|a| !a.is_empty()),
                "{args:?}: undescribed {line}"
            );
        }
    }
    let add = stdout(&run(&["members", "add", "--help"]).await);
    assert!(add.contains("[possible values: admin, member]"), "{add}");
    let publish = stdout(&run(&["events", "publish", "--help"]).await);
    assert!(
        publish.contains("BUILD_END") && publish.contains("PROJECT_CREATE"),
        "{publish}"
    );
    let completions = stdout(&run(&["completions", "--help"]).await);
    assert!(
        completions.contains("bash, elvish, fish, powershell, zsh"),
        "{completions}"
    );
}

/// `completions <shell>` prints a script that knows the commands; any other shell is refused
/// with the list. It needs no configuration: a broken one does not stop it.
#[tokio::test]
async fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef"),
        ("fish", "complete -c"),
    ] {
        let output = binary_command()
            .args(["completions", shell])
            .env("LISTEN_ADDR", "not an address")
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = stdout(&output);
        assert!(script.contains(marker), "{shell}: {script}");
        for command in ["members", "import-bkci", "healthcheck"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
    let refused = run(&["completions", "cmd"]).await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("bash, elvish, fish, powershell, zsh"),
        "{refused:?}"
    );
}

/// A role that is not one of the values is refused, naming them.
#[tokio::test]
async fn a_bad_role_is_refused_with_the_values() {
    let db = TestDb::new(Backend::Sqlite).await;
    let args = [
        "members",
        "add",
        "--project",
        "demo",
        "--user",
        "x",
        "--role",
        "owner",
    ];
    let refused = cli(&db, &[], &args).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let said = stderr(&refused);
    assert!(
        said.contains("'owner'") && said.contains("[possible values: admin, member]"),
        "{said}"
    );
}

/// Every start that cannot go on says what was expected, and a bare address is a single-host
/// CIDR.
#[tokio::test]
async fn config_errors_say_what_was_expected() {
    let db = TestDb::new(Backend::Sqlite).await;
    for (name, value, expected) in [
        ("LISTEN_ADDR", "localhost:8080", "expected IP:port"),
        (
            "DELIVERY_TIMEOUT_MS",
            "10s",
            "whole number of milliseconds (for 10s write 10000)",
        ),
        (
            "REQUEST_TIMEOUT_SECS",
            "30s",
            "whole number of seconds (for 30s write 30)",
        ),
        ("CALLBACK_ALLOWED_CIDRS", "intranet", "expected a CIDR"),
    ] {
        let failed = cli(&db, &[(name, value)], &["migrate"]).await;
        assert_eq!(failed.status.code(), Some(1), "{name}: {failed:?}");
        let said = stderr(&failed);
        assert!(said.contains(name) && said.contains(expected), "{said}");
    }
    let bare = cli(
        &db,
        &[("CALLBACK_ALLOWED_CIDRS", "127.0.0.1,::1")],
        &["migrate"],
    )
    .await;
    assert!(bare.status.success(), "{bare:?}");
}

/// A database that cannot be reached or opened stops the start naming where it is and why,
/// never the password.
#[tokio::test]
async fn database_failures_name_the_host_or_the_path() {
    let db = TestDb::new(Backend::Sqlite).await;
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| crate::common::DEFAULT_TEST_DATABASE_URL.to_owned());
    let mut missing = url::Url::parse(&admin).unwrap();
    missing.set_password(Some("hunter2")).unwrap();
    missing.set_path("/dc_no_such_database");
    let missing = missing.to_string();
    let sqlite_dir = tempfile::tempdir().unwrap();
    let unopenable = sqlite_dir.path().join("no-such-dir/callbacks.db");
    let unopenable_url = format!("sqlite://{}", unopenable.display());
    let unopenable = unopenable.display().to_string();
    for (url, expected) in [
        (
            "postgres://postgres:hunter2@127.0.0.1:1/callbacks",
            &["PostgreSQL at", "127.0.0.1:1", "refused"][..],
        ),
        (
            "postgres://postgres:hunter2@db.invalid/callbacks",
            &["db.invalid", "lookup"],
        ),
        (&missing, &["dc_no_such_database", "does not exist"]),
        (
            &unopenable_url,
            &["SQLite database", &unopenable, "unable to open"],
        ),
    ] {
        let failed = cli(&db, &[("DATABASE_URL", url)], &["migrate"]).await;
        assert_eq!(failed.status.code(), Some(1), "{url}: {failed:?}");
        let said = stderr(&failed);
        for part in expected {
            assert!(said.contains(part), "{part} not in {said}");
        }
        assert!(!said.contains("hunter2"), "{said}");
    }
}

/// A `.env` line that does not parse stops every command with its line number (not its value),
/// instead of dropping it and every line after it; a good `.env` is read.
#[tokio::test]
async fn a_malformed_env_line_stops_the_start_with_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join(".env");
    std::fs::write(
        &env,
        "# settings\nDATABASE_URL=sqlite://from-dotenv.db\nSERVICE_TOKEN=two words\nLISTEN_ADDR=127.0.0.1:0\n",
    )
    .unwrap();
    let in_dir = |args: &'static [&'static str]| {
        let mut command = binary_command();
        command.current_dir(dir.path()).args(args);
        async move { command.output().await.unwrap() }
    };
    let failed = in_dir(&["migrate"]).await;
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let said = stderr(&failed);
    assert!(
        said.contains(&format!("{} line 3", env.display())),
        "{said}"
    );
    assert!(
        said.contains("SERVICE_TOKEN") && !said.contains("two words"),
        "{said}"
    );
    assert!(!dir.path().join("from-dotenv.db").exists(), "nothing ran");
    assert!(in_dir(&["--help"]).await.status.success());

    std::fs::write(
        &env,
        "DATABASE_URL=sqlite://from-dotenv.db\nSERVICE_TOKEN='two words'\n",
    )
    .unwrap();
    let migrated = in_dir(&["migrate"]).await;
    assert!(migrated.status.success(), "{migrated:?}");
    assert!(dir.path().join("from-dotenv.db").exists());
}
