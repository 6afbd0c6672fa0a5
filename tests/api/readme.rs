//! Every command between `<!-- examples:start -->` and `<!-- examples:end -->` in README.md is
//! run, in order, against the real binary: `cargo run --release --` becomes the built binary and
//! `http://127.0.0.1:8080` the test server's address; everything else runs as written.

use std::time::Duration;

use crate::common::{Backend, TestDb};
use crate::processes::ServerProcess;

/// The shell commands of the README's example blocks, continuation lines joined.
fn readme_commands() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("<!-- examples:start -->")
        .expect("examples start marker");
    let end = readme
        .find("<!-- examples:end -->")
        .expect("examples end marker");
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in readme[start..end].lines() {
        match line.trim() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            text if in_block && !text.starts_with('#') && !text.is_empty() => {
                pending.push_str(text.trim_end_matches('\\').trim_end());
                pending.push(' ');
                if !text.ends_with('\\') {
                    commands.push(std::mem::take(&mut pending).trim().to_owned());
                }
            }
            _ => {}
        }
    }
    commands
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_example_works_as_written() {
    let commands = readme_commands();
    assert!(
        commands.len() >= 15,
        "found only {} commands",
        commands.len()
    );
    let db = TestDb::new(Backend::Sqlite).await;
    let logs = tempfile::tempdir().unwrap();
    let vars = [
        ("SERVICE_TOKEN", "s3cret"),
        ("CALLBACK_ALLOWLIST_ONLY", "true"),
    ];
    let server = ServerProcess::start(&db, logs.path(), "readme", &vars).await;
    let binary = env!("CARGO_BIN_EXE_devops-callbacks");
    for command in &commands {
        let command = command
            .replace("cargo run --release --", binary)
            .replace("http://127.0.0.1:8080", &server.base);
        // Some answers depend on a delivery attempt having been recorded: allow a moment.
        let mut tries = 0;
        loop {
            tries += 1;
            let output = tokio::process::Command::new("sh")
                .args(["-c", &command])
                .env("DATABASE_URL", &db.url)
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            // An answer with the envelope must be a success; other output (metrics, the OpenAPI
            // document, the CLI's lines) only needs the command to succeed.
            let envelope_status = serde_json::from_str::<serde_json::Value>(&stdout)
                .ok()
                .and_then(|value| value.get("status").cloned());
            let succeeded = envelope_status.is_none_or(|status| status == 0);
            if output.status.success() && succeeded {
                break;
            }
            assert!(
                tries < 30,
                "README example failed: {command}\nstdout: {}\nstderr: {}",
                stdout.chars().take(2000).collect::<String>(),
                String::from_utf8_lossy(&output.stderr)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
