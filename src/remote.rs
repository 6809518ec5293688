//! Remote commands: each is one or a few HTTP calls to a running node.
//! `--output json` prints the API's JSON for scripts; otherwise a table.
//! Any failure exits non-zero with a one-line error.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Args, Clone)]
pub struct Remote {
    /// Base URL of a Ferry node.
    #[arg(
        long,
        env = "FERRY_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// Bearer token.
    #[arg(long, env = "FERRY_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// `table` or `json`.
    #[arg(long, default_value = "table", global = true)]
    output: String,
}

#[derive(Subcommand)]
pub enum RemoteCommand {
    /// Integrations: list, show, create, pause, resume, trigger.
    Integrations {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: IntegrationCommand,
    },
    /// Runs: list and show.
    Runs {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: RunCommand,
    },
    /// Dead letters: list, show, replay, discard.
    Dlq {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Parked events (spooled events that could not be forwarded): list,
    /// show, replay once the cause is fixed.
    Parked {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: ParkedCommand,
    },
    /// Background operations (bulk replays): list and show progress.
    Operations {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: OperationCommand,
    },
    /// Failure groups (failed attempts and dead letters by cause): list,
    /// show, ack, resolve. Replay one with `ferry dlq replay --all
    /// --failure-group ID`.
    Failures {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: FailureCommand,
    },
    /// Rollouts (a connector version moved in canary steps, with automatic
    /// rollback): start, list, show, pause, resume, promote, rollback.
    Rollouts {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Connectors: list.
    Connectors {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: ConnectorCommand,
    },
}

/// `--limit` and `--cursor` of every list.
#[derive(Args, Clone, Default)]
pub struct PageArgs {
    /// Items per page (1 to 1000).
    #[arg(long)]
    limit: Option<u32>,
    /// Continue from a previous page's cursor.
    #[arg(long)]
    cursor: Option<String>,
}

impl PageArgs {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(c) = &self.cursor {
            q.push(("cursor", c.clone()));
        }
        q
    }
}

#[derive(Subcommand)]
pub enum FailureCommand {
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        connector: Option<String>,
        /// open, acknowledged or resolved.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Show {
        id: String,
    },
    /// Someone is on it.
    Ack {
        id: String,
    },
    /// Fixed: the next failure of this cause reopens it.
    Resolve {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Start moving integrations to a candidate version (admin).
    Start {
        connector: String,
        /// The version to move to (2, 2.1 or 2.1.0).
        #[arg(long)]
        candidate: String,
        /// The version moved from (default: the one the scope is pinned to).
        #[arg(long)]
        stable: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Only these integrations (repeat, or comma-separated).
        #[arg(long = "integration", value_delimiter = ',')]
        integrations: Vec<String>,
        /// The candidate's share per step, percent (default 10,50,100).
        #[arg(long, value_delimiter = ',')]
        steps: Vec<i64>,
        /// Each step's analysis window (e.g. 5m).
        #[arg(long, value_parser = parse_span_s)]
        window: Option<u64>,
        /// Shadow first: the candidate runs beside every real run, writing
        /// nothing, until `ferry rollouts resume` starts the canary.
        #[arg(long)]
        shadow: bool,
    },
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// State, step, the last analysis and the current window's figures.
    Show {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// Move every member's pin to the candidate now.
    Promote {
        id: String,
    },
    /// Every member back on the stable version; the candidate's failures run again.
    Rollback {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum OperationCommand {
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    Show {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum IntegrationCommand {
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Show {
        id: String,
    },
    Create {
        /// JSON file with the integration (API.md), `-` for stdin.
        #[arg(short = 'f', long = "file")]
        file: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Trigger {
        id: String,
        /// JSON payload for the run.
        #[arg(long)]
        payload: Option<String>,
    },
    /// The integration's revisions, newest first (secret names only).
    Revisions {
        id: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// What changed between two revisions (secrets only as changed or not).
    Diff {
        id: String,
        /// The older revision.
        #[arg(long)]
        from: i64,
        /// The newer revision (default: the current one).
        #[arg(long)]
        to: Option<i64>,
    },
    /// Restore an old revision as a new one (admin).
    Restore {
        id: String,
        revision: i64,
    },
    /// Set this integration's auto-pause (operator). Options left out take
    /// the node's defaults (`[events]`).
    AutoPause {
        id: String,
        /// Never auto-pause this integration.
        #[arg(long, conflicts_with = "on")]
        off: bool,
        /// Auto-pause it even if the node's default is off.
        #[arg(long)]
        on: bool,
        /// How long all its runs must have failed (e.g. 6h, 2d).
        #[arg(long, value_parser = parse_span_s)]
        after: Option<u64>,
        /// The fewest failed runs in that span.
        #[arg(long)]
        min_runs: Option<u32>,
    },
}

/// A span such as `90s`, `6h`, `2d`, in whole seconds.
fn parse_span_s(text: &str) -> Result<u64, String> {
    humantime::parse_duration(text)
        .map(|d| d.as_secs())
        .map_err(|e| format!("{text:?} is not a span like 6h or 2d: {e}"))
}

#[derive(Subcommand)]
pub enum RunCommand {
    List {
        #[arg(long)]
        integration: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Show {
        id: String,
    },
}

#[derive(Args, Clone, Default)]
pub struct DlqFilter {
    #[arg(long)]
    integration: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    connector: Option<String>,
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
    /// Text to find in the errors.
    #[arg(long)]
    q: Option<String>,
    /// Only this failure group's (`ferry failures list`).
    #[arg(long)]
    failure_group: Option<String>,
}

impl DlqFilter {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("integration", &self.integration),
            ("tenant", &self.tenant),
            ("connector", &self.connector),
            ("since", &self.since),
            ("until", &self.until),
            ("q", &self.q),
            ("failure_group", &self.failure_group),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

#[derive(Subcommand)]
pub enum DlqCommand {
    List {
        #[command(flatten)]
        filter: DlqFilter,
        #[command(flatten)]
        page: PageArgs,
    },
    Show {
        id: String,
    },
    /// Replay one dead letter, or every one matching the filters with --all.
    Replay {
        id: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        dry_run: bool,
        /// Run on the revision (config, secrets, connector version) the
        /// failed run used, not the integration as it is now.
        #[arg(long)]
        original: bool,
        #[command(flatten)]
        filter: DlqFilter,
    },
    Discard {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum ParkedCommand {
    List {
        /// Only this integration's.
        #[arg(long)]
        integration: Option<String>,
        /// Include those already replayed.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        page: PageArgs,
    },
    Show {
        id: String,
    },
    /// Replay one parked event, or with --integration every parked event
    /// of that integration, oldest first.
    Replay {
        id: Option<String>,
        #[arg(long)]
        integration: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ConnectorCommand {
    List,
}

struct Client {
    http: reqwest::Client,
    remote: Remote,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.remote.url.trim_end_matches('/'), path);
        let mut req = self.http.request(method, &url).query(query);
        if let Some(t) = &self.remote.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.remote.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let msg = value["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            let code = value["error"]["code"].as_str().unwrap_or("error");
            bail!("{} {code}: {msg}", status.as_u16());
        }
        Ok(value)
    }
}

fn print_table(value: &Value, columns: &[&str]) {
    let empty = vec![];
    let items = value["items"].as_array().unwrap_or(&empty);
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| columns.iter().map(|c| cell(&i[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!(
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    );
    for r in rows {
        println!("{}", line(r));
    }
    if let Some(next) = value["next_cursor"].as_str() {
        println!("(more: --cursor {next})");
    }
}

/// A rollout as a person reads it: where it stands, and both versions'
/// figures side by side.
fn rollout_summary(remote: &Remote, r: &Value) -> anyhow::Result<()> {
    if remote.output == "json" {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let t = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    println!(
        "rollout {}  {} {} → {}  {}",
        t(&r["id"]),
        t(&r["connector"]),
        t(&r["stable_version"]),
        t(&r["candidate_version"]),
        t(&r["state"])
    );
    let steps: Vec<String> = r["steps"]
        .as_array()
        .map(|a| a.iter().map(|s| format!("{s}%")).collect())
        .unwrap_or_default();
    println!(
        "  step {} of {} ({}), {} members, {} on the candidate, window {} s",
        r["step"].as_i64().unwrap_or(0) + 1,
        steps.len(),
        steps.join(" → "),
        r["members"],
        r["on_candidate"],
        r["window_s"]
    );
    if let Some(reason) = r["reason"].as_str() {
        println!("  {reason}");
    }
    let sh = &r["shadow"];
    if sh["compared"].as_i64().unwrap_or(0) > 0 {
        let kinds: Vec<String> = sh["by_kind"]
            .as_object()
            .map(|m| m.iter().map(|(k, n)| format!("{k} {n}")).collect())
            .unwrap_or_default();
        println!(
            "  shadow: {} runs compared, {} identical, {} differing ({}), {} could not run",
            sh["compared"],
            sh["identical"],
            sh["differing"],
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            },
            sh["failed"]
        );
        for d in sh["examples"].as_array().into_iter().flatten().take(5) {
            println!(
                "    run {}: {} {}: {} → {}",
                t(&d["run_id"]),
                t(&d["kind"]),
                t(&d["field"]),
                d["control"],
                d["candidate"]
            );
        }
    }
    for (title, a) in [
        ("current window", &r["current"]),
        ("last analysis", &r["last_analysis"]),
    ] {
        if a.is_null() {
            continue;
        }
        println!("  {title} ({} to {}):", t(&a["from"]), t(&a["to"]));
        println!(
            "    {:<10} {:>6} {:>9} {:>8} {:>9} {:>8}",
            "", "runs", "failed %", "dead", "rejected", "p95 ms"
        );
        for side in ["stable", "candidate"] {
            let f = &a[side];
            let pct = |n: &str, of: &str| {
                let of = f[of].as_f64().unwrap_or(0.0);
                if of == 0.0 {
                    0.0
                } else {
                    100.0 * f[n].as_f64().unwrap_or(0.0) / of
                }
            };
            println!(
                "    {:<10} {:>6} {:>8.1}% {:>8} {:>8.1}% {:>8}",
                side,
                f["runs"],
                pct("failed_attempts", "attempts"),
                f["dead_letters"],
                pct("rejected", "records"),
                f["p95_ms"]
            );
        }
        for b in a["breaches"].as_array().into_iter().flatten() {
            println!("    breach: {}", t(b));
        }
    }
    Ok(())
}

fn show(remote: &Remote, value: &Value, columns: &[&str]) -> anyhow::Result<()> {
    if remote.output == "json" || value.get("items").is_none() {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print_table(value, columns);
    }
    Ok(())
}

pub async fn run(cmd: RemoteCommand) -> anyhow::Result<()> {
    use reqwest::Method as M;
    let remote = match &cmd {
        RemoteCommand::Integrations { remote, .. }
        | RemoteCommand::Runs { remote, .. }
        | RemoteCommand::Dlq { remote, .. }
        | RemoteCommand::Parked { remote, .. }
        | RemoteCommand::Operations { remote, .. }
        | RemoteCommand::Failures { remote, .. }
        | RemoteCommand::Rollouts { remote, .. }
        | RemoteCommand::Connectors { remote, .. } => remote.clone(),
    };
    if !matches!(remote.output.as_str(), "table" | "json") {
        bail!("--output must be table or json, not {:?}", remote.output);
    }
    let c = Client {
        http: reqwest::Client::new(),
        remote: remote.clone(),
    };
    match cmd {
        RemoteCommand::Integrations { command, .. } => match command {
            IntegrationCommand::List { tenant, page } => {
                let mut q = page.pairs();
                if let Some(t) = tenant {
                    q.push(("tenant", t));
                }
                show(
                    &remote,
                    &c.call(M::GET, "/v1/integrations", &q, None).await?,
                    &[
                        "id",
                        "tenant",
                        "name",
                        "connector",
                        "status",
                        "next_fire_at",
                    ],
                )
            }
            IntegrationCommand::Show { id } => show(
                &remote,
                &c.call(M::GET, &format!("/v1/integrations/{id}"), &[], None)
                    .await?,
                &[],
            ),
            IntegrationCommand::Create { file } => {
                let text = if file == "-" {
                    std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
                } else {
                    std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
                };
                let body: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{file} is not valid JSON"))?;
                show(
                    &remote,
                    &c.call(M::POST, "/v1/integrations", &[], Some(body)).await?,
                    &[],
                )
            }
            IntegrationCommand::Pause { id } => show(
                &remote,
                &c.call(M::POST, &format!("/v1/integrations/{id}/pause"), &[], None)
                    .await?,
                &[],
            ),
            IntegrationCommand::Resume { id } => show(
                &remote,
                &c.call(M::POST, &format!("/v1/integrations/{id}/resume"), &[], None)
                    .await?,
                &[],
            ),
            IntegrationCommand::Trigger { id, payload } => {
                let body = payload
                    .map(|p| serde_json::from_str::<Value>(&p))
                    .transpose()
                    .context("--payload is not valid JSON")?;
                show(
                    &remote,
                    &c.call(M::POST, &format!("/v1/integrations/{id}/runs"), &[], body)
                        .await?,
                    &[],
                )
            }
            IntegrationCommand::Revisions { id, page } => show(
                &remote,
                &c.call(
                    M::GET,
                    &format!("/v1/integrations/{id}/revisions"),
                    &page.pairs(),
                    None,
                )
                .await?,
                &["revision", "connector_version", "created_at", "created_by"],
            ),
            IntegrationCommand::Diff { id, from, to } => {
                let mut q = vec![("from", from.to_string())];
                if let Some(t) = to {
                    q.push(("to", t.to_string()));
                }
                let d = c
                    .call(
                        M::GET,
                        &format!("/v1/integrations/{id}/revisions/diff"),
                        &q,
                        None,
                    )
                    .await?;
                if remote.output == "json" {
                    println!("{d}");
                    return Ok(());
                }
                println!("revision {} → {}", d["from"], d["to"]);
                let none = Vec::new();
                for ch in d["changes"].as_array().unwrap_or(&none) {
                    let side = |v: &Value| {
                        if v.is_null() {
                            "(absent)".to_string()
                        } else {
                            v.to_string()
                        }
                    };
                    println!(
                        "  {}: {} → {}",
                        ch["field"].as_str().unwrap_or("?"),
                        side(&ch["before"]),
                        side(&ch["after"])
                    );
                }
                for s in d["secrets"].as_array().unwrap_or(&none) {
                    if s["change"] != "unchanged" {
                        println!(
                            "  secret {}: {}",
                            s["name"].as_str().unwrap_or("?"),
                            s["change"].as_str().unwrap_or("?")
                        );
                    }
                }
                Ok(())
            }
            IntegrationCommand::AutoPause {
                id,
                off,
                on,
                after,
                min_runs,
            } => {
                let mut body = serde_json::Map::new();
                if off || on {
                    body.insert("enabled".into(), Value::Bool(on));
                }
                if let Some(s) = after {
                    body.insert("after_s".into(), s.into());
                }
                if let Some(n) = min_runs {
                    body.insert("min_runs".into(), n.into());
                }
                let i = c
                    .call(
                        M::PUT,
                        &format!("/v1/integrations/{id}/auto-pause"),
                        &[],
                        Some(Value::Object(body)),
                    )
                    .await?;
                show(&remote, &i, &[])
            }
            IntegrationCommand::Restore { id, revision } => show(
                &remote,
                &c.call(
                    M::POST,
                    &format!("/v1/integrations/{id}/revisions/{revision}/restore"),
                    &[],
                    None,
                )
                .await?,
                &[],
            ),
        },
        RemoteCommand::Runs { command, .. } => match command {
            RunCommand::List {
                integration,
                status,
                page,
            } => {
                let mut q = page.pairs();
                if let Some(i) = integration {
                    q.push(("integration", i));
                }
                if let Some(s) = status {
                    q.push(("status", s));
                }
                show(
                    &remote,
                    &c.call(M::GET, "/v1/runs", &q, None).await?,
                    &[
                        "id",
                        "integration_id",
                        "trigger",
                        "status",
                        "attempts",
                        "created_at",
                        "error",
                    ],
                )
            }
            RunCommand::Show { id } => show(
                &remote,
                &c.call(M::GET, &format!("/v1/runs/{id}"), &[], None).await?,
                &[],
            ),
        },
        RemoteCommand::Dlq { command, .. } => match command {
            DlqCommand::List { filter, page } => show(
                &remote,
                &c.call(
                    M::GET,
                    "/v1/dead-letters",
                    &[filter.pairs(), page.pairs()].concat(),
                    None,
                )
                .await?,
                &[
                    "id",
                    "integration_id",
                    "connector",
                    "attempts",
                    "dead_at",
                    "replayed_at",
                ],
            ),
            DlqCommand::Show { id } => show(
                &remote,
                &c.call(M::GET, &format!("/v1/dead-letters/{id}"), &[], None)
                    .await?,
                &[],
            ),
            DlqCommand::Replay {
                id,
                all,
                dry_run,
                original,
                filter,
            } => {
                let revision = if original { "original" } else { "current" };
                match (id, all) {
                    (Some(id), false) => show(
                        &remote,
                        &c.call(
                            M::POST,
                            &format!("/v1/dead-letters/{id}/replay"),
                            &[],
                            Some(json!({"revision": revision})),
                        )
                        .await?,
                        &[],
                    ),
                    (None, true) => {
                        let f: serde_json::Map<String, Value> = filter
                            .pairs()
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), Value::String(v)))
                            .collect();
                        let counted = c
                            .call(
                                M::POST,
                                "/v1/dead-letters/replay",
                                &[],
                                Some(json!({"filter": f, "dry_run": true})),
                            )
                            .await?;
                        if dry_run {
                            if remote.output == "json" {
                                println!("{counted}");
                            } else {
                                println!("{} dead letters would be replayed", counted["matched"]);
                            }
                            return Ok(());
                        }
                        let started = c
                            .call(
                                M::POST,
                                "/v1/dead-letters/replay",
                                &[],
                                Some(json!({"filter": f, "dry_run": false, "revision": revision})),
                            )
                            .await?;
                        let op = follow(&c, &started["operation"]).await?;
                        if remote.output == "json" {
                            println!("{op}");
                        } else {
                            println!(
                                "replayed {} (operation {})",
                                op["done"],
                                op["id"].as_str().unwrap_or("-")
                            );
                        }
                        if op["status"] == "failed" {
                            bail!(
                                "the replay stopped after {}: {}",
                                op["done"],
                                op["error"].as_str().unwrap_or("unknown error")
                            );
                        }
                        Ok(())
                    }
                    (Some(_), true) => bail!("give either a dead-letter id or --all, not both"),
                    (None, false) => bail!("give a dead-letter id, or --all with filters"),
                }
            }
            DlqCommand::Discard { id } => {
                c.call(M::DELETE, &format!("/v1/dead-letters/{id}"), &[], None)
                    .await?;
                println!("discarded {id}");
                Ok(())
            }
        },
        RemoteCommand::Parked { command, .. } => match command {
            ParkedCommand::List {
                integration,
                all,
                page,
            } => {
                let mut q = page.pairs();
                if let Some(i) = integration {
                    q.push(("integration", i));
                }
                if all {
                    q.push(("all", "true".into()));
                }
                show(
                    &remote,
                    &c.call(M::GET, "/v1/parked-events", &q, None).await?,
                    &[
                        "id",
                        "integration_id",
                        "received_at",
                        "parked_at",
                        "replayed_at",
                        "reason",
                    ],
                )
            }
            ParkedCommand::Show { id } => show(
                &remote,
                &c.call(M::GET, &format!("/v1/parked-events/{id}"), &[], None)
                    .await?,
                &[],
            ),
            ParkedCommand::Replay { id, integration } => match (id, integration) {
                (Some(id), None) => show(
                    &remote,
                    &c.call(
                        M::POST,
                        &format!("/v1/parked-events/{id}/replay"),
                        &[],
                        None,
                    )
                    .await?,
                    &[],
                ),
                (None, Some(i)) => show(
                    &remote,
                    &c.call(
                        M::POST,
                        "/v1/parked-events/replay",
                        &[],
                        Some(serde_json::json!({ "integration": i })),
                    )
                    .await?,
                    &[],
                ),
                (Some(_), Some(_)) => {
                    bail!("give either a parked event id or --integration, not both")
                }
                (None, None) => bail!("give a parked event id, or --integration ID"),
            },
        },
        RemoteCommand::Failures { command, .. } => {
            let columns = [
                "id",
                "status",
                "connector",
                "connector_version",
                "class",
                "attempts",
                "dead_letters",
                "integrations",
                "last_seen",
                "message",
            ];
            match command {
                FailureCommand::List {
                    tenant,
                    connector,
                    status,
                    page,
                } => {
                    let mut q = page.pairs();
                    for (k, v) in [
                        ("tenant", tenant),
                        ("connector", connector),
                        ("status", status),
                    ] {
                        if let Some(v) = v {
                            q.push((k, v));
                        }
                    }
                    show(
                        &remote,
                        &c.call(M::GET, "/v1/failure-groups", &q, None).await?,
                        &columns,
                    )
                }
                FailureCommand::Show { id } => show(
                    &remote,
                    &c.call(M::GET, &format!("/v1/failure-groups/{id}"), &[], None)
                        .await?,
                    &[],
                ),
                FailureCommand::Ack { id } => show(
                    &remote,
                    &c.call(M::POST, &format!("/v1/failure-groups/{id}/ack"), &[], None)
                        .await?,
                    &[],
                ),
                FailureCommand::Resolve { id } => show(
                    &remote,
                    &c.call(
                        M::POST,
                        &format!("/v1/failure-groups/{id}/resolve"),
                        &[],
                        None,
                    )
                    .await?,
                    &[],
                ),
            }
        }
        RemoteCommand::Rollouts { command, .. } => {
            let columns = [
                "id",
                "state",
                "connector",
                "stable_version",
                "candidate_version",
                "step",
                "share",
                "members",
                "reason",
            ];
            let post = |id: &str, what: &str| format!("/v1/rollouts/{id}/{what}");
            match command {
                RolloutCommand::Start {
                    connector,
                    candidate,
                    stable,
                    tenant,
                    integrations,
                    steps,
                    window,
                    shadow,
                } => {
                    let mut body = json!({"connector": connector, "candidate_version": candidate, "shadow": shadow});
                    if let Some(v) = stable {
                        body["stable_version"] = json!(v);
                    }
                    if let Some(t) = tenant {
                        body["tenant"] = json!(t);
                    }
                    if !integrations.is_empty() {
                        body["integration_ids"] = json!(integrations);
                    }
                    if !steps.is_empty() {
                        body["steps"] = json!(steps);
                    }
                    if let Some(w) = window {
                        body["window_s"] = json!(w);
                    }
                    let r = c.call(M::POST, "/v1/rollouts", &[], Some(body)).await?;
                    rollout_summary(&remote, &r)
                }
                RolloutCommand::List { tenant, page } => {
                    let mut q = page.pairs();
                    if let Some(t) = tenant {
                        q.push(("tenant", t));
                    }
                    show(
                        &remote,
                        &c.call(M::GET, "/v1/rollouts", &q, None).await?,
                        &columns,
                    )
                }
                RolloutCommand::Show { id } => rollout_summary(
                    &remote,
                    &c.call(M::GET, &format!("/v1/rollouts/{id}"), &[], None)
                        .await?,
                ),
                RolloutCommand::Pause { id } => rollout_summary(
                    &remote,
                    &c.call(M::POST, &post(&id, "pause"), &[], None).await?,
                ),
                RolloutCommand::Resume { id } => rollout_summary(
                    &remote,
                    &c.call(M::POST, &post(&id, "resume"), &[], None).await?,
                ),
                RolloutCommand::Promote { id } => rollout_summary(
                    &remote,
                    &c.call(M::POST, &post(&id, "promote"), &[], None).await?,
                ),
                RolloutCommand::Rollback { id } => rollout_summary(
                    &remote,
                    &c.call(M::POST, &post(&id, "rollback"), &[], None).await?,
                ),
            }
        }
        RemoteCommand::Operations { command, .. } => match command {
            OperationCommand::List { page } => show(
                &remote,
                &c.call(M::GET, "/v1/operations", &page.pairs(), None)
                    .await?,
                &[
                    "id",
                    "kind",
                    "status",
                    "total",
                    "done",
                    "created_at",
                    "error",
                ],
            ),
            OperationCommand::Show { id } => show(
                &remote,
                &c.call(M::GET, &format!("/v1/operations/{id}"), &[], None)
                    .await?,
                &[],
            ),
        },
        RemoteCommand::Connectors {
            command: ConnectorCommand::List,
            ..
        } => show(
            &remote,
            &c.call(M::GET, "/v1/connectors", &[], None).await?,
            &["id", "version", "name", "triggers"],
        ),
    }
}

/// Polls a background operation until it ends, drawing a progress bar on
/// stderr when that is a terminal. Returns the operation as it ended.
async fn follow(c: &Client, started: &Value) -> anyhow::Result<Value> {
    use std::io::{IsTerminal, Write};
    let id = started["id"]
        .as_str()
        .context("the server did not return an operation id")?
        .to_string();
    let tty = std::io::stderr().is_terminal();
    let mut op = started.clone();
    loop {
        let total = op["total"].as_i64().unwrap_or(0);
        let done = op["done"].as_i64().unwrap_or(0);
        if tty {
            let mut err = std::io::stderr();
            let _ = write!(err, "\r{}", progress_bar(done, total, 30));
            let _ = err.flush();
        }
        if op["status"] != "running" {
            if tty {
                eprintln!();
            }
            return Ok(op);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        op = c
            .call(
                reqwest::Method::GET,
                &format!("/v1/operations/{id}"),
                &[],
                None,
            )
            .await?;
    }
}

/// `[#########---------]     450/1000   45%`
fn progress_bar(done: i64, total: i64, width: usize) -> String {
    let total = total.max(0);
    let done = done.clamp(0, total);
    let (filled, pct) = if total == 0 {
        (width, 100)
    } else {
        ((done as usize * width) / total as usize, done * 100 / total)
    };
    format!(
        "[{}{}] {done:>7}/{total}  {pct:>3}%",
        "#".repeat(filled),
        "-".repeat(width - filled),
    )
}

#[cfg(test)]
mod tests {
    use super::progress_bar;

    #[test]
    fn progress_bar_fills_in_proportion() {
        assert_eq!(progress_bar(0, 10, 10), "[----------]       0/10    0%");
        assert_eq!(progress_bar(5, 10, 10), "[#####-----]       5/10   50%");
        assert_eq!(progress_bar(10, 10, 10), "[##########]      10/10  100%");
        // Nothing to do, or more done than counted, still draws sensibly.
        assert_eq!(progress_bar(0, 0, 4), "[####]       0/0  100%");
        assert_eq!(progress_bar(12, 10, 4), "[####]      10/10  100%");
    }
}
