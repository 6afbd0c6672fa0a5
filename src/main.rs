//! The command line: `serve` (default), `migrate`, `members …`, `events publish`, `import-bkci`,
//! `bus replay-parked`, `healthcheck`, `completions`.

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{CommandFactory, Parser, Subcommand};
use devops_callbacks::auth::MEMBERS_MANAGED_IN_BKCI;
use devops_callbacks::auth::gateway::GatewayVerifier;
use devops_callbacks::config::{self, AuthMode, Config};
use devops_callbacks::delivery::intake;
use devops_callbacks::delivery::ssrf::SsrfGuard;
use devops_callbacks::domain::{CallbackEvent, MemberRole, ProjectId, UserId};
use devops_callbacks::http::PublishedEvent;
use devops_callbacks::import;
use devops_callbacks::{AppState, bridge, store, telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "Register bk-ci project callbacks and deliver events to them",
    after_help = "Configuration comes from environment variables: --help lists them.",
    after_long_help = config::variables_help()
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Configured(Configured),
    /// Print the completion script of a shell, e.g.
    /// `devops-callbacks completions bash > /etc/bash_completion.d/devops-callbacks`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
}

/// The commands that read the configuration.
#[derive(Subcommand)]
enum Configured {
    /// Run the HTTP API and the delivery workers until SIGTERM or ctrl-c (the default command).
    Serve,
    /// Apply the database migrations, encrypt stored secrets if SECRET_ENCRYPTION_KEY is set,
    /// and exit.
    Migrate,
    /// Manage the project members of the local permission authority (AUTH_MODE=local).
    Members {
        #[command(subcommand)]
        action: MembersAction,
    },
    /// Publish events for delivery, as the service's intake does.
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Bring bk-ci's callback registrations over from its MySQL database (`devops_ci_process`):
    /// project-level and global rows under their bk-ci ids, pipeline-level rows by name. Safe to
    /// run again: what is already here is left alone. Prints what happened to every row.
    ImportBkci {
        /// bk-ci's process database, e.g. mysql://user:password@host:3306/devops_ci_process.
        #[arg(long, env = "BKCI_MYSQL_URL", hide_env_values = true)]
        mysql_url: String,
        /// bk-ci's `project.callback.aes-key`, to open pipeline tokens and global headers.
        #[arg(long, env = "BKCI_AES_KEY", hide_env_values = true)]
        aes_key: Option<String>,
        /// The zone of bk-ci's datetimes (its JDBC `serverTimezone`).
        #[arg(long, default_value = "Asia/Shanghai")]
        time_zone: chrono_tz::Tz,
        /// Decide and report everything, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The bk-ci bus bridge (configured by BKCI_AMQP_URL and the other BKCI_* bridge settings).
    Bus {
        #[command(subcommand)]
        action: BusAction,
    },
    /// Exit 0 if the service at LISTEN_ADDR (or --url) answers /healthz, else 1.
    Healthcheck {
        /// Full URL to probe instead of http://LISTEN_ADDR/healthz.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum MembersAction {
    /// Add a user to a project, or change their role.
    Add {
        /// The project (bk-ci's project id, its English name).
        #[arg(long)]
        project: ProjectId,
        /// The user, as X-DEVOPS-UID names them.
        #[arg(long)]
        user: UserId,
        /// admin: register, change, enable, disable and re-send callbacks; member: list them
        /// and read their history.
        #[arg(long, value_parser = one_of(MemberRole::ALL, MemberRole::as_str))]
        role: MemberRole,
    },
    /// Remove a user from a project (exits 1 if they were not a member).
    Remove {
        /// The project.
        #[arg(long)]
        project: ProjectId,
        /// The user to remove.
        #[arg(long)]
        user: UserId,
    },
    /// List a project's members, one `user<TAB>role` per line.
    List {
        /// The project.
        #[arg(long)]
        project: ProjectId,
    },
}

#[derive(Subcommand)]
enum EventsAction {
    /// Accept one event: store it and one delivery per enabled matching callback, and print
    /// `{"eventId","deliveries"}`.
    Publish {
        /// The project the event happened in.
        #[arg(long)]
        project: ProjectId,
        /// The event.
        #[arg(long, value_parser = one_of(CallbackEvent::ALL, CallbackEvent::as_str))]
        event: CallbackEvent,
        /// The event's `data`, as JSON; delivered byte for byte.
        #[arg(long)]
        data: String,
        /// Idempotency key; a repeated id in the project is accepted once.
        #[arg(long)]
        event_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum BusAction {
    /// Move the parked messages (those the bridge could not turn into events) back to the
    /// bridge's queues of the exchanges they came from, where the running service takes them
    /// again. Prints how many moved, and how many were kept because they name no exchange.
    ReplayParked {
        /// Move at most this many (default: all that are parked when it starts).
        #[arg(long)]
        limit: Option<u64>,
    },
}

/// A value of a closed set of names: `--help` lists them, and so does the error for any other.
fn one_of<T>(all: &'static [T], name: fn(T) -> &'static str) -> impl TypedValueParser<Value = T>
where
    T: Copy + FromStr + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    PossibleValuesParser::new(all.iter().map(|&value| name(value))).try_map(|text| text.parse())
}

fn main() -> ExitCode {
    // Read before the command line: import-bkci's flags may come from it.
    let dotenv = config::load_dotenv();
    let cli = match (Cli::try_parse(), dotenv) {
        // --help and --version, whatever the .env holds.
        (Err(shown), _) if !shown.use_stderr() => shown.exit(),
        // A broken .env first: a usage error may only follow from it.
        (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        (Err(usage), Ok(_)) => usage.exit(),
        (Ok(cli), Ok(_)) => cli,
    };
    let command = match cli.command {
        None => Configured::Serve,
        Some(Command::Configured(command)) => command,
        Some(Command::Completions { shell }) => return completions(shell),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the completion script. Written whole from a buffer: `generate` panics when its
/// writer fails (a closed pipe), an error here is only reported.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cli = Cli::command();
    let name = cli.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cli, name, &mut script);
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the completions: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Configured) -> anyhow::Result<ExitCode> {
    let config = Config::from_env()?;
    // Read now, so an unusable key file stops every command before anything opens, as an
    // unusable variable does.
    let gateway = GatewayVerifier::from_config(&config)?;
    match command {
        Configured::Serve => serve(config, gateway).await?,
        Configured::Migrate => migrate(&config).await?,
        Configured::Members { action } => return members(&config, action).await,
        Configured::Events {
            action:
                EventsAction::Publish {
                    project,
                    event,
                    data,
                    event_id,
                },
        } => publish(&config, project, event, &data, event_id.as_deref()).await?,
        Configured::ImportBkci {
            mysql_url,
            aes_key,
            time_zone,
            dry_run,
        } => {
            let options = import::Options {
                aes_key,
                time_zone,
                blocked_ports: config.blocked_ports.clone(),
                dry_run,
            };
            import_bkci(&config, &mysql_url, &options).await?
        }
        Configured::Bus {
            action: BusAction::ReplayParked { limit },
        } => replay_parked(&config, limit).await?,
        Configured::Healthcheck { url } => {
            let url = url.unwrap_or_else(|| {
                let mut addr = config.listen_addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip([127, 0, 0, 1].into());
                }
                format!("http://{addr}/healthz")
            });
            return Ok(healthcheck(&url).await);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay_parked(config: &Config, limit: Option<u64>) -> anyhow::Result<()> {
    let bridge = config
        .bridge
        .as_ref()
        .context("BKCI_AMQP_URL is not set, so there is no bridge and nothing parked")?;
    let done = bridge::replay_parked(bridge, limit)
        .await
        .context("replaying the parked messages")?;
    println!("replayed {}, kept {}", done.replayed, done.kept);
    Ok(())
}

async fn serve(config: Config, gateway: Option<GatewayVerifier>) -> anyhow::Result<()> {
    telemetry::init(config.log_format)?;
    if config.service_token.is_none() {
        tracing::warn!("SERVICE_TOKEN is unset: /op and /service routes will answer 503");
    }
    if gateway.is_none() {
        tracing::warn!(
            "APIGW_PUBLIC_KEY_FILE is unset: X-DEVOPS-UID is trusted as sent; \
             expose the service only behind the API gateway"
        );
    }
    if !config.delivery_tls_verify {
        tracing::warn!(
            "DELIVERY_TLS_VERIFY=false: receivers' certificates are not checked, so \
             anyone on the path to a receiver can read and change deliveries, tokens \
             included; prefer DELIVERY_CA_FILE"
        );
    }
    let store = store::open(&config).await.context("opening the database")?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding LISTEN_ADDR {}", config.listen_addr))?;
    devops_callbacks::serve(
        AppState::new(config, store, gateway)?,
        listener,
        devops_callbacks::shutdown_signal(),
    )
    .await?;
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = store::open(config)
        .await
        .context("migrating the database")?;
    println!("migrations applied");
    if config.secret_encryption_key.is_some() {
        let sealed = store
            .seal_plaintext_secret_tokens()
            .await
            .context("encrypting stored secret tokens")?;
        println!("{sealed} plaintext secret(s) encrypted (tokens and custom headers)");
    }
    Ok(())
}

async fn members(config: &Config, action: MembersAction) -> anyhow::Result<ExitCode> {
    if let AuthMode::BkCi(_) = config.auth_mode {
        anyhow::bail!(MEMBERS_MANAGED_IN_BKCI);
    }
    let store = store::open(config).await.context("opening the database")?;
    match action {
        MembersAction::Add {
            project,
            user,
            role,
        } => {
            store.set_member(&project, &user, role).await?;
            println!("{user} is now {role} of {project}");
        }
        MembersAction::Remove { project, user } => {
            if !store.remove_member(&project, &user).await? {
                eprintln!("{user} is not a member of {project}");
                return Ok(ExitCode::FAILURE);
            }
            println!("{user} removed from {project}");
        }
        MembersAction::List { project } => {
            for member in store.list_members(&project).await? {
                println!("{}\t{}", member.user_id, member.role);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn publish(
    config: &Config,
    project: ProjectId,
    event: CallbackEvent,
    data: &str,
    event_id: Option<&str>,
) -> anyhow::Result<()> {
    let data: Box<serde_json::value::RawValue> =
        serde_json::from_str(data).context("--data must be JSON")?;
    let event = intake::accept(project, event, &data, event_id)?;
    let store = store::open(config).await.context("opening the database")?;
    // A server on PostgreSQL is woken by the commit; on SQLite its poll finds the event.
    let wake = tokio::sync::Notify::new();
    let mut published = intake::publish(store.clone(), &wake, vec![event]).await?;
    let answer = PublishedEvent::from(published.remove(0));
    println!("{}", serde_json::to_string(&answer)?);
    Ok(())
}

async fn import_bkci(
    config: &Config,
    mysql_url: &str,
    options: &import::Options,
) -> anyhow::Result<()> {
    let source = sqlx::mysql::MySqlPool::connect(mysql_url)
        .await
        .with_context(|| {
            format!(
                "connecting to bk-ci's database {}",
                store::redact_url(mysql_url)
            )
        })?;
    let store = store::open(config).await.context("opening the database")?;
    let guard = SsrfGuard::new(config.allowed_cidrs.clone(), config.allowlist_only);
    let entries = import::import(&source, store.as_ref(), &guard, options).await?;
    print!("{}", import::summary(&entries, options.dry_run));
    Ok(())
}

async fn healthcheck(url: &str) -> ExitCode {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client");
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("unhealthy: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
