//! Every command between `<!-- examples:start -->` and `<!-- examples:end -->` in README.md is
//! run, in order, against the real binary: `cargo run --release --` becomes the built binary and
//! `http://127.0.0.1:8080` the test server's address; everything else runs as written. The answer
//! documented under a command (its `# {…}` lines) is compared with the real one: every field it
//! names must be there with that value (objects may have more fields; arrays have exactly the
//! items shown unless `…` stands for more), `…` standing for "anything" (a value, the rest of a
//! string, or more items). Only the read that waits for delivery attempts (the
//! history) is repeated until it matches; every other command runs once.

use std::time::Duration;

use serde_json::Value;

use crate::common::{Backend, TestDb, WAIT, child_command};
use crate::processes::ServerProcess;

/// One example: the shell command and the answer documented under it, if any.
struct Example {
    command: String,
    answer: Option<String>,
}

/// The examples of the README's example blocks, continuation lines joined.
fn readme_examples() -> Vec<Example> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("<!-- examples:start -->")
        .expect("examples start marker");
    let end = readme
        .find("<!-- examples:end -->")
        .expect("examples end marker");
    let mut examples: Vec<Example> = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in readme[start..end].lines() {
        match line.trim() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            text if in_block && text.starts_with('#') => {
                let example = examples.last_mut().expect("an answer follows a command");
                let answer = example.answer.get_or_insert_with(String::new);
                answer.push_str(text.trim_start_matches('#').trim());
            }
            text if in_block && !text.is_empty() => {
                pending.push_str(text.trim_end_matches('\\').trim_end());
                pending.push(' ');
                if !text.ends_with('\\') {
                    examples.push(Example {
                        command: std::mem::take(&mut pending).trim().to_owned(),
                        answer: None,
                    });
                }
            }
            _ => {}
        }
    }
    examples
}

/// A documented answer: JSON in which `…` stands for anything.
#[derive(Debug)]
enum Pattern {
    Any,
    /// A string with `…` wildcards.
    Text(String),
    Exact(Value),
    /// Key fields that must all be there (others may be too: the README shows the key ones).
    Object(Vec<(String, Pattern)>),
    Array(Vec<Pattern>, bool),
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        while self.chars.next_if(|c| c.is_whitespace()).is_some() {}
    }

    fn expect(&mut self, wanted: char) {
        self.skip_spaces();
        let got = self.chars.next();
        assert_eq!(got, Some(wanted), "documented answer: expected {wanted:?}");
    }

    fn string(&mut self) -> String {
        self.expect('"');
        let mut text = String::new();
        while let Some(c) = self.chars.next() {
            match c {
                '"' => return text,
                '\\' => {
                    text.push('\\');
                    text.push(self.chars.next().expect("an escaped character"));
                }
                c => text.push(c),
            }
        }
        panic!("documented answer: unterminated string");
    }

    fn value(&mut self) -> Pattern {
        self.skip_spaces();
        match self.chars.peek().copied().expect("a value") {
            '…' => {
                self.chars.next();
                Pattern::Any
            }
            '{' => {
                self.chars.next();
                let mut fields = Vec::new();
                loop {
                    self.skip_spaces();
                    match self.chars.peek().copied() {
                        Some('}') => break,
                        Some('…') => {
                            self.chars.next();
                        }
                        _ => {
                            let key = self.string();
                            self.expect(':');
                            fields.push((key, self.value()));
                        }
                    }
                    self.skip_spaces();
                    if self.chars.next_if_eq(&',').is_none() {
                        break;
                    }
                }
                self.expect('}');
                Pattern::Object(fields)
            }
            '[' => {
                self.chars.next();
                let (mut items, mut open) = (Vec::new(), false);
                loop {
                    self.skip_spaces();
                    match self.chars.peek().copied() {
                        Some(']') => break,
                        Some('…') => {
                            self.chars.next();
                            open = true;
                        }
                        _ => items.push(self.value()),
                    }
                    self.skip_spaces();
                    if self.chars.next_if_eq(&',').is_none() {
                        break;
                    }
                }
                self.expect(']');
                Pattern::Array(items, open)
            }
            '"' => {
                let text = self.string();
                if text.contains('…') {
                    Pattern::Text(text)
                } else {
                    Pattern::Exact(serde_json::from_str(&format!("\"{text}\"")).unwrap())
                }
            }
            _ => {
                let mut token = String::new();
                while let Some(c) = self.chars.next_if(|c| !",]}".contains(*c)) {
                    token.push(c);
                }
                Pattern::Exact(
                    serde_json::from_str(token.trim())
                        .unwrap_or_else(|e| panic!("documented answer: {token:?}: {e}")),
                )
            }
        }
    }
}

fn pattern(documented: &str) -> Pattern {
    let mut parser = Parser {
        chars: documented.chars().peekable(),
    };
    let pattern = parser.value();
    parser.skip_spaces();
    assert!(
        parser.chars.next().is_none(),
        "documented answer has trailing text: {documented}"
    );
    pattern
}

/// Whether `text` matches `wildcard`, in which `…` stands for any run of characters.
fn text_matches(wildcard: &str, text: &str) -> bool {
    let parts: Vec<&str> = wildcard.split('…').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Where `value` differs from `pattern`, if anywhere (`at` names the place).
fn mismatch(pattern: &Pattern, value: &Value, at: &str) -> Option<String> {
    match pattern {
        Pattern::Any => None,
        Pattern::Exact(expected) => {
            (expected != value).then(|| format!("{at}: expected {expected}, got {value}"))
        }
        Pattern::Text(wildcard) => match value.as_str() {
            Some(text) if text_matches(wildcard, text) => None,
            _ => Some(format!("{at}: expected \"{wildcard}\", got {value}")),
        },
        Pattern::Object(fields) => {
            let Some(object) = value.as_object() else {
                return Some(format!("{at}: expected an object, got {value}"));
            };
            fields
                .iter()
                .find_map(|(key, field)| match object.get(key) {
                    Some(found) => mismatch(field, found, &format!("{at}.{key}")),
                    None => Some(format!("{at}.{key}: missing in {value}")),
                })
        }
        Pattern::Array(items, open) => {
            let Some(array) = value.as_array() else {
                return Some(format!("{at}: expected an array, got {value}"));
            };
            if array.len() < items.len() || (!open && array.len() != items.len()) {
                return Some(format!(
                    "{at}: expected {} item(s){}, got {value}",
                    items.len(),
                    if *open { " or more" } else { "" }
                ));
            }
            items
                .iter()
                .zip(array)
                .enumerate()
                .find_map(|(i, (item, found))| mismatch(item, found, &format!("{at}[{i}]")))
        }
    }
}

#[test]
fn documented_answers_are_patterns() {
    let list = pattern(r#"{"a":1,"b":[{"c":"x …"},…],"d":…,…}"#);
    let good = serde_json::json!({"a": 1, "b": [{"c": "x y"}, {"z": 0}], "d": null, "e": 2});
    assert_eq!(mismatch(&list, &good, "$"), None);
    for bad in [
        serde_json::json!({"a": 2, "b": [{"c": "x y"}], "d": 1}),
        serde_json::json!({"b": [{"c": "x y"}], "d": 1}),
        serde_json::json!({"a": 1, "b": [{"c": "y"}], "d": 1}),
        serde_json::json!({"a": 1, "b": [], "d": 1}),
        serde_json::json!({"a": 1, "b": [{"c": "x y"}]}),
    ] {
        assert!(mismatch(&list, &bad, "$").is_some(), "{bad}");
    }
    let envelope = pattern(r#"{"status":0,"data":[1]}"#);
    assert!(mismatch(&envelope, &serde_json::json!({"status": 0}), "$").is_some());
    assert!(
        mismatch(
            &envelope,
            &serde_json::json!({"status": 0, "data": [1, 2]}),
            "$"
        )
        .is_some()
    );
}

/// Runs one command in a shell, with a cleared environment and an empty working directory, and
/// says what is wrong with its outcome, if anything.
async fn failure(command: &str, expected: Option<&Pattern>, database_url: &str) -> Option<String> {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        child_command("sh")
            .args(["-c", command])
            .env("DATABASE_URL", database_url)
            .output(),
    )
    .await
    .expect("the command ends")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed = serde_json::from_str::<Value>(&stdout).ok();
    let problem = if output.status.success() {
        match (expected, &parsed) {
            (Some(expected), Some(answer)) => mismatch(expected, answer, "$"),
            (Some(_), None) => Some("the answer is not JSON".to_owned()),
            // Without a documented answer, an envelope must still be a success; other output
            // (metrics, the OpenAPI document, the CLI's lines) only needs the command to succeed.
            (None, Some(answer)) if answer.get("status").is_some_and(|s| s != 0) => {
                Some("an error envelope".to_owned())
            }
            (None, _) => None,
        }
    } else {
        Some(format!("exit {}", output.status))
    };
    problem.map(|problem| {
        format!(
            "README example failed ({problem}): {command}\nstdout: {}\nstderr: {}",
            stdout.chars().take(2000).collect::<String>(),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_example_works_as_written() {
    let examples = readme_examples();
    assert!(
        examples.len() >= 15,
        "found only {} commands",
        examples.len()
    );
    let documented = examples.iter().filter(|e| e.answer.is_some()).count();
    assert!(documented >= 9, "only {documented} documented answers");
    // The history example reads "today" in TIME_ZONE, as written: a run that would straddle
    // midnight there waits for the new day first.
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
    let midnight = (now.date_naive() + chrono::Days::new(1))
        .and_time(chrono::NaiveTime::MIN)
        .and_local_timezone(chrono_tz::Asia::Shanghai)
        .unwrap();
    let left = (midnight - now).to_std().unwrap_or_default();
    if left < Duration::from_secs(120) {
        tokio::time::sleep(left + Duration::from_secs(1)).await;
    }
    let db = TestDb::new(Backend::Sqlite).await;
    let logs = tempfile::tempdir().unwrap();
    let vars = [
        ("SERVICE_TOKEN", "s3cret"),
        ("CALLBACK_ALLOWLIST_ONLY", "true"),
    ];
    let server = ServerProcess::start(&db, logs.path(), "readme", &vars).await;
    let binary = env!("CARGO_BIN_EXE_devops-callbacks");
    for example in &examples {
        let command = example
            .command
            .replace("cargo run --release --", binary)
            .replace("http://127.0.0.1:8080", &server.base);
        let expected = example.answer.as_deref().map(pattern);
        // The history shows delivery attempts, which come a moment after the intake: that read
        // alone is repeated until it matches; every other command runs once.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let Some(failure) = failure(&command, expected.as_ref(), &db.url).await else {
                break;
            };
            let repeat =
                command.contains("/callback_history") && tokio::time::Instant::now() < deadline;
            assert!(repeat, "{failure}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
