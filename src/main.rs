//! The `ferry` binary: a thin CLI over the crates. `serve` runs a node;
//! `migrate` and `tokens create` talk to the database directly; the other
//! commands talk to a running node over its HTTP API.

#[cfg(feature = "sandbox")]
mod demo;
mod logging;
mod remote;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_core::SystemClock;
use ferry_node::config::{env_help, Config};

/// mimalloc rather than the system allocator: a worker allocates and frees
/// many small, short-lived buffers per job (rows, parameters, JSON), and in
/// the dispatch benchmark this took the node's own CPU per job from ~35 µs
/// to ~28 µs (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Runs integrations on schedules and webhooks, durably."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct NodeArgs {
    /// Path to ferry.toml (see config.default.toml).
    #[arg(long, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (overrides `data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `text` or `json` (one object per line; overrides `log_format`).
    #[arg(long)]
    log_format: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: API, scheduler and worker (as `roles` says).
    #[command(after_help = env_help())]
    Serve(NodeArgs),
    /// Run a whole node with a local receiver and show it working.
    Demo {
        /// How long to run, e.g. 30s or 2m.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
    },
    /// Run the fake providers and platform API standalone (GET /_sandbox/state).
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
        /// Where the SMTP sink listens (its messages show in /_sandbox/state).
        #[arg(long, default_value = "127.0.0.1:2525")]
        smtp_listen: String,
    },
    /// Apply database migrations and exit.
    Migrate(NodeArgs),
    /// Print the OpenAPI document of the HTTP API (as served at /v1/openapi.json).
    Openapi {
        /// Print the Markdown reference rendered from it instead
        /// (docs/http-reference.md).
        #[arg(long)]
        markdown: bool,
    },
    /// Manage API tokens (directly in the database).
    Tokens {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The secret key that seals connector secrets (directly in the database).
    Keys {
        #[command(subcommand)]
        command: KeyCommand,
    },
    #[command(flatten)]
    Remote(remote::RemoteCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it once, alone on the last line.
    Create {
        #[arg(long)]
        role: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List tokens (never their secrets), newest first.
    List {
        /// Only this tenant's tokens.
        #[arg(long)]
        tenant: Option<String>,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        output: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        id: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print the fingerprints of this configuration's keys and of the key
    /// the store's secrets are sealed with.
    Show {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Re-seal every secret under a new key, with no downtime: every live
    /// node must already hold it (FERRY_SECRET_KEYS_EXTRA); this command's
    /// configuration must hold the current key and the new one.
    Rotate {
        /// The new key's fingerprint (see `ferry keys show`).
        #[arg(long)]
        to: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

fn load_config(args: &NodeArgs) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref(), |k| std::env::var(k).ok())?;
    if let Some(l) = &args.listen {
        config.listen = l
            .parse()
            .with_context(|| format!("--listen {l:?} is not an address like 127.0.0.1:8080"))?;
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(f) = &args.log_format {
        if !matches!(f.as_str(), "text" | "json") {
            anyhow::bail!("--log-format must be text or json, not {f:?}");
        }
        config.log_format = f.clone();
    }
    Ok(config)
}

fn init_logging(json: bool) {
    logging::init(json, "info,sqlx=warn");
}

/// Where each fake listens and the credentials it takes.
#[cfg(feature = "sandbox")]
fn sandbox_guide(base: &str, smtp: std::net::SocketAddr) -> Vec<String> {
    use ferry_sandbox::{eventbrite, google, platform, smtp as sink, typeform, zoom};
    vec![
        format!("platform API: {base}/platform (API key {})", platform::API_KEY),
        format!("Typeform:     {base}/typeform (token {})", typeform::API_TOKEN),
        format!(
            "Google:       token URL {base}/google/token, Sheets {base}/google (spreadsheet {}; service-account key fixtures/google_service_account.json, or client {} / {} with refresh token {})",
            google::SPREADSHEET_ID, google::CLIENT_ID, google::CLIENT_SECRET, google::REFRESH_TOKEN
        ),
        format!("Eventbrite:   {base}/eventbrite/v3 (token {}, organization {})", eventbrite::TOKEN, eventbrite::ORG_ID),
        format!(
            "Zoom:         OAuth {base}/zoom/oauth/token, API {base}/zoom/v2 (account {}, client {} / {})",
            zoom::ACCOUNT_ID, zoom::CLIENT_ID, zoom::CLIENT_SECRET
        ),
        format!("SMS sender:   POST {base}/_sandbox/sms/messages"),
        format!("SMTP sink:    {smtp} (optional login {} / {})", sink::USERNAME, sink::PASSWORD),
        format!("state:        {base}/_sandbox/state; faults: POST {base}/_sandbox/faults"),
    ]
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(args: NodeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    init_logging(config.log_format == "json");
    let connectors = ferry_node::Connectors {
        registry: ferry_connectors::builtin()?,
        transport: ferry_connectors::http::transport(),
    };
    let running = ferry_node::start(&config, connectors, Arc::new(SystemClock)).await?;
    if let Some(addr) = running.addr {
        println!("ferry listening on http://{addr}");
    }
    tracing::info!(addr = ?running.addr, roles = ?config.roles, backend = ?running.state.db.backend, node = %running.state.node_id, "ferry started");
    let failed = tokio::select! {
        _ = shutdown_signal() => None,
        why = running.failed() => Some(why),
    };
    tracing::info!("shutting down: finishing in-flight runs");
    running.shutdown().await;
    tracing::info!("stopped");
    match failed {
        None => Ok(()),
        Some(why) => Err(anyhow::anyhow!("refusing to run: {why}")),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        #[cfg(feature = "sandbox")]
        Command::Demo { duration } => {
            // The pool's own reports of refused connections would drown the
            // demo's outage phase; ferry's warnings say the same once.
            logging::init(false, "warn,sqlx=off,sqlx_core=off");
            demo::run(duration).await
        }
        #[cfg(not(feature = "sandbox"))]
        Command::Demo { .. } | Command::Sandbox { .. } => anyhow::bail!(
            "this ferry was built without the sandbox (--no-default-features); \
             build it with the default features for `ferry demo` and `ferry sandbox`"
        ),
        #[cfg(feature = "sandbox")]
        Command::Sandbox {
            listen,
            smtp_listen,
        } => {
            logging::init(false, "info");
            let parse = |flag: &str, v: &str| {
                v.parse::<std::net::SocketAddr>()
                    .with_context(|| format!("{flag} {v:?} is not an address like 127.0.0.1:8090"))
            };
            let addr = parse("--listen", &listen)?;
            let smtp_addr = parse("--smtp-listen", &smtp_listen)?;
            let sandbox = ferry_sandbox::Sandbox::new();
            let bound = sandbox
                .serve(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let smtp = sandbox
                .serve_smtp(smtp_addr)
                .await
                .with_context(|| format!("cannot listen on {smtp_addr}"))?;
            println!("ferry sandbox listening on http://{bound}");
            for line in sandbox_guide(&format!("http://{bound}"), smtp) {
                println!("  {line}");
            }
            shutdown_signal().await;
            Ok(())
        }
        Command::Openapi { markdown } => {
            let doc = ferry_api::routes::openapi();
            if markdown {
                print!(
                    "{}",
                    ferry_api::reference::markdown(&serde_json::to_value(doc)?)
                );
            } else {
                println!("{}", doc.to_pretty_json()?);
            }
            Ok(())
        }
        Command::Migrate(args) => {
            let config = load_config(&args)?;
            init_logging(config.log_format == "json");
            let db = ferry_node::open_db(&config).await?;
            db.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Tokens { command } => tokens(command).await,
        Command::Keys { command } => keys(command).await,
        Command::Remote(cmd) => remote::run(cmd).await,
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The key ring of a configuration: `FERRY_SECRET_KEY` (or the data dir's
/// key file) and `FERRY_SECRET_KEYS_EXTRA`.
fn key_ring(config: &ferry_node::config::Config) -> anyhow::Result<ferry_store::SecretKey> {
    let loaded =
        ferry_store::SecretKey::load(config.security.secret_key.as_deref(), &config.data_dir)?;
    if loaded.generated {
        anyhow::bail!(
            "no key: set FERRY_SECRET_KEY (or point --data-dir at a node's data dir with its secret.key)"
        );
    }
    Ok(loaded.key.with_extra(&config.security.secret_keys_extra)?)
}

/// `ferry keys …`: straight to the database, like `tokens`.
async fn keys(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Show { node } => {
            let config = load_config(&node)?;
            let key = key_ring(&config)?;
            let db = ferry_node::open_db(&config).await?;
            let sealing = ferry_store::keys::setting(&db, ferry_store::keys::SEALING).await?;
            let previous = ferry_store::keys::setting(&db, ferry_store::keys::PREVIOUS).await?;
            db.close().await;
            println!(
                "this configuration holds: {}",
                key.fingerprints().join(", ")
            );
            println!(
                "the store seals with:     {}",
                sealing.as_deref().unwrap_or("(not recorded yet)")
            );
            if let Some(p) = previous {
                println!("a rotation from {p} has not finished: run `ferry keys rotate` again");
            }
            Ok(())
        }
        KeyCommand::Rotate { to, node } => {
            let config = load_config(&node)?;
            let key = key_ring(&config)?;
            let db = ferry_node::open_db(&config).await?;
            let now = ferry_core::Clock::now_ms(&SystemClock);
            // A node that beat within two of its dead-after spans is live.
            let live_since = now - 2 * config.worker.node_dead_after.as_millis() as i64;
            let done = ferry_store::keys::rotate(&db, &key, &to, live_since).await;
            if let Ok(r) = &done {
                ferry_store::audit::record(
                    &db.pool,
                    "cli",
                    "secret_key.rotate",
                    &r.to,
                    Some(&serde_json::json!({"from": r.from, "resealed": r.resealed})),
                    now,
                )
                .await?;
            }
            db.close().await;
            let r = done?;
            println!(
                "secrets re-sealed under key {} ({} revisions re-sealed, {} already were); key {} is no longer needed",
                r.to, r.resealed, r.already, r.from
            );
            Ok(())
        }
    }
}

/// `ferry tokens …`: straight to the database, like `serve` (no node needed).
async fn tokens(command: TokenCommand) -> anyhow::Result<()> {
    use ferry_store::tokens;
    match command {
        TokenCommand::Create {
            role,
            tenant,
            name,
            node,
        } => {
            let role = ferry_store::tokens::Role::parse(&role).with_context(|| {
                format!("--role {role:?} is not one of admin, operator, viewer")
            })?;
            let config = load_config(&node)?;
            let db = ferry_node::open_db(&config).await?;
            let now = ferry_core::Clock::now_ms(&SystemClock);
            let name = name.unwrap_or_else(|| format!("{} token", role.as_str()));
            let (token, plain) =
                ferry_store::tokens::create(&db, &name, role, tenant.as_deref(), now).await?;
            ferry_store::audit::record(
                &db.pool,
                "cli",
                "token.create",
                &token.id,
                Some(&serde_json::json!({"role": role.as_str(), "tenant": tenant})),
                now,
            )
            .await?;
            db.close().await;
            eprintln!("created {} token {} (shown once):", role.as_str(), token.id);
            println!("{plain}");
            Ok(())
        }
        TokenCommand::List {
            tenant,
            output,
            node,
        } => {
            if !matches!(output.as_str(), "table" | "json") {
                anyhow::bail!("--output must be table or json, not {output:?}");
            }
            let config = load_config(&node)?;
            let db = ferry_node::open_db(&config).await?;
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let (page, next) =
                    tokens::list(&db, tenant.as_deref(), 1000, cursor.as_deref()).await?;
                all.extend(page);
                match next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            db.close().await;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!(
                    "{:<36}  {:<8}  {:<12}  {:<24}  {:<7}  NAME",
                    "ID", "ROLE", "TENANT", "CREATED", "STATUS"
                );
                for t in all {
                    println!(
                        "{:<36}  {:<8}  {:<12}  {:<24}  {:<7}  {}",
                        t.id,
                        t.role.as_str(),
                        t.tenant.as_deref().unwrap_or("-"),
                        ferry_core::timefmt::format(t.created_at),
                        if t.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        t.name
                    );
                }
            }
            Ok(())
        }
        TokenCommand::Revoke { id, node } => {
            let config = load_config(&node)?;
            let db = ferry_node::open_db(&config).await?;
            let now = ferry_core::Clock::now_ms(&SystemClock);
            let revoked = match tokens::revoke(&db, &id, "cli", now).await {
                Ok(t) => Ok(t),
                Err(ferry_store::Error::Conflict(_)) => {
                    Err(anyhow::anyhow!("token {id} was already revoked"))
                }
                Err(ferry_store::Error::NotFound) => Err(anyhow::anyhow!("no token {id}")),
                Err(e) => Err(e.into()),
            };
            db.close().await;
            let t = revoked?;
            println!("revoked {} token {}", t.role.as_str(), t.id);
            Ok(())
        }
    }
}
