//! Connecting, migrating, and the few places the two engines differ.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyConnectOptions;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AnyPool, Database, Executor, PgPool};

use crate::error::{Error, Result};
use crate::health::OutageSwitch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct DbOptions {
    pub url: String,
    /// PostgreSQL pool size. SQLite always writes on one connection: it has
    /// one writer anyway, and a single connection cannot deadlock on
    /// upgrades (reads that must not wait for it use `Db::read`).
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// PostgreSQL: open connections on first use, so a node can start (and
    /// take webhooks into its spool) while the store is unreachable.
    pub lazy: bool,
    /// Cuts the store off from this process while on (see `OutageSwitch`).
    pub outage: Option<OutageSwitch>,
}

impl DbOptions {
    pub fn new(url: impl Into<String>) -> Self {
        DbOptions {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            lazy: false,
            outage: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    /// For reads that must not queue behind writes. On SQLite, read-only
    /// connections of their own: in WAL mode they read the last commit
    /// while the writer is busy (and fsyncing). On PostgreSQL, `pool`.
    pub read: AnyPool,
    /// For the worker's claim only. On PostgreSQL, two connections that plan
    /// without bitmap scans and sorts (set when they connect): a jobs table
    /// swings from empty to hundreds of thousands of rows faster than
    /// autovacuum analyses it again, and with statistics that say "a few
    /// dozen rows" PostgreSQL plans a claim as a bitmap scan that reads and
    /// sorts every available job (40–60 ms per claim of 256 instead of 5).
    /// With those two paths ruled out only the index scan in `run_at` order
    /// is left, whatever the statistics say, and the claim is one statement
    /// with no transaction around it to set them. On SQLite, `pool` (it
    /// plans from the schema).
    pub claim: ClaimPool,
    /// For the worker's one-statement completions, on PostgreSQL only: two
    /// connections of their own, through sqlx's PostgreSQL driver so that
    /// the statement can take its rows as arrays (`None` on SQLite, which
    /// completes in a transaction on `pool`).
    ///
    /// `claim`'s and `finish`'s connections are not tested with a round
    /// trip before each use, as `pool`'s are. (sqlx tests every connection
    /// with one as it goes back into a pool; the test before use is a
    /// second.) Their callers retry whatever fails, so a connection that
    /// went stale (a restart, a failover) costs one failed claim or
    /// completion and is then replaced. `pool` keeps the test: an API
    /// request on a stale connection would fail its caller. SQLite's
    /// connections are a file, not a socket, and are never tested before
    /// use.
    pub finish: Option<PgPool>,
    pub backend: Backend,
    pub url: String,
}

/// `Db::claim`'s connections.
#[derive(Clone, Debug)]
pub enum ClaimPool {
    /// SQLite: the writer, `Db::pool`.
    Shared(AnyPool),
    /// PostgreSQL: connections of the claim's own, used through sqlx's
    /// PostgreSQL driver directly, so that the claimed rows are decoded
    /// from the wire format instead of first being copied into `AnyRow`s
    /// (a tenth of a node's CPU per job went to that copy).
    Postgres(PgPool),
}

impl ClaimPool {
    pub async fn close(&self) {
        match self {
            ClaimPool::Shared(p) => p.close().await,
            ClaimPool::Postgres(p) => p.close().await,
        }
    }
}

/// The file an SQLite URL names, if it names one.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.split('&').any(|p| p == "mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

/// Session settings of `Db::claim`'s connections on PostgreSQL.
const CLAIM_PLAN_SETTINGS: &[&str] = &["SET enable_bitmapscan = off", "SET enable_sort = off"];

/// Refuses pooled connections while `outage` is cut.
fn with_outage<DB: Database>(
    pool: PoolOptions<DB>,
    outage: Option<OutageSwitch>,
) -> PoolOptions<DB> {
    match outage {
        None => pool,
        Some(o) => pool.before_acquire(move |_, _| {
            let o = o.clone();
            Box::pin(async move { o.check().map(|()| true) })
        }),
    }
}

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sqlite: include_str!("../../../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "integrations_updated",
        sqlite: include_str!("../../../migrations/sqlite/0002_integrations_updated.sql"),
        postgres: include_str!("../../../migrations/postgres/0002_integrations_updated.sql"),
    },
    Migration {
        version: 3,
        name: "operations",
        sqlite: include_str!("../../../migrations/sqlite/0003_operations.sql"),
        postgres: include_str!("../../../migrations/postgres/0003_operations.sql"),
    },
    Migration {
        version: 4,
        name: "integrations_due_id",
        sqlite: include_str!("../../../migrations/sqlite/0004_integrations_due_id.sql"),
        postgres: include_str!("../../../migrations/postgres/0004_integrations_due_id.sql"),
    },
    Migration {
        version: 5,
        name: "jobs_integration_not_running",
        sqlite: include_str!("../../../migrations/sqlite/0005_jobs_integration_not_running.sql"),
        postgres: include_str!(
            "../../../migrations/postgres/0005_jobs_integration_not_running.sql"
        ),
    },
    Migration {
        version: 6,
        name: "job_keys_tail",
        sqlite: include_str!("../../../migrations/sqlite/0006_job_keys_tail.sql"),
        postgres: include_str!("../../../migrations/postgres/0006_job_keys_tail.sql"),
    },
    Migration {
        version: 7,
        name: "node_failure",
        sqlite: include_str!("../../../migrations/sqlite/0007_node_failure.sql"),
        postgres: include_str!("../../../migrations/postgres/0007_node_failure.sql"),
    },
    Migration {
        version: 8,
        name: "state_checks",
        sqlite: include_str!("../../../migrations/sqlite/0008_state_checks.sql"),
        postgres: include_str!("../../../migrations/postgres/0008_state_checks.sql"),
    },
    Migration {
        version: 9,
        name: "failure_groups",
        sqlite: include_str!("../../../migrations/sqlite/0009_failure_groups.sql"),
        postgres: include_str!("../../../migrations/postgres/0009_failure_groups.sql"),
    },
    Migration {
        version: 10,
        name: "operational_events",
        sqlite: include_str!("../../../migrations/sqlite/0010_operational_events.sql"),
        postgres: include_str!("../../../migrations/postgres/0010_operational_events.sql"),
    },
    Migration {
        version: 11,
        name: "rollouts",
        sqlite: include_str!("../../../migrations/sqlite/0011_rollouts.sql"),
        postgres: include_str!("../../../migrations/postgres/0011_rollouts.sql"),
    },
];

impl Db {
    pub async fn connect(opts: &DbOptions) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let backend =
            if opts.url.starts_with("postgres://") || opts.url.starts_with("postgresql://") {
                Backend::Postgres
            } else if opts.url.starts_with("sqlite:") {
                Backend::Sqlite
            } else {
                return Err(Error::Db(format!(
                    "database url must start with sqlite: or postgres://, got {:?}",
                    opts.url.split(':').next().unwrap_or("")
                )));
            };
        let connect = AnyConnectOptions::from_str(&opts.url)
            .map_err(|e| Error::Db(format!("database url: {e}")))?;
        let (pool, read, claim, finish) = match backend {
            Backend::Sqlite => {
                let read = pool_options(
                    opts,
                    2,
                    &["PRAGMA query_only = ON", "PRAGMA busy_timeout = 5000"],
                )
                .connect_lazy_with(connect.clone());
                let pool = pool_options(
                    opts,
                    1,
                    &[
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = FULL",
                        "PRAGMA busy_timeout = 5000",
                        // A multi-row insert inside a transaction keeps a
                        // statement journal; in memory, not in a temp file.
                        "PRAGMA temp_store = MEMORY",
                    ],
                )
                .connect_with(connect)
                .await?;
                let claim = ClaimPool::Shared(pool.clone());
                (pool, read, claim, None)
            }
            Backend::Postgres => {
                let options =
                    pool_options(opts, opts.max_connections, &[]).test_before_acquire(true);
                let native = PgConnectOptions::from_str(&opts.url)
                    .map_err(|e| Error::Db(format!("database url: {e}")))?;
                let claim = ClaimPool::Postgres(
                    pool_options(opts, 2, CLAIM_PLAN_SETTINGS).connect_lazy_with(native.clone()),
                );
                let finish = pool_options(opts, 2, &[]).connect_lazy_with(native);
                let pool = if opts.lazy {
                    options.connect_lazy_with(connect)
                } else {
                    options.connect_with(connect).await?
                };
                (pool.clone(), pool, claim, Some(finish))
            }
        };
        Ok(Db {
            pool,
            read,
            claim,
            finish,
            backend,
            url: opts.url.clone(),
        })
    }

    /// Applies pending migrations. Safe to run from many nodes at once on
    /// PostgreSQL (an advisory lock serialises them).
    pub async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            conn.execute("SELECT pg_advisory_lock(7465726)").await?;
        }
        let result = async {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS ferry_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .await?;
            for m in MIGRATIONS {
                let done: Option<i64> = sqlx::query_scalar("SELECT version FROM ferry_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(&mut *conn)
                    .await?;
                if done.is_some() {
                    continue;
                }
                let sql = match self.backend {
                    Backend::Sqlite => m.sqlite,
                    Backend::Postgres => m.postgres,
                };
                conn.execute("BEGIN").await?;
                let applied = async {
                    conn.execute(sqlx::raw_sql(sql)).await?;
                    sqlx::query("INSERT INTO ferry_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                        .bind(m.version)
                        .bind(m.name)
                        .bind(chrono::Utc::now().timestamp_millis())
                        .execute(&mut *conn)
                        .await?;
                    Ok::<_, sqlx::Error>(())
                }
                .await;
                match applied {
                    Ok(()) => conn.execute("COMMIT").await?,
                    Err(e) => {
                        conn.execute("ROLLBACK").await?;
                        return Err(e);
                    }
                };
                tracing::info!(version = m.version, name = m.name, "applied migration");
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if self.backend == Backend::Postgres {
            conn.execute("SELECT pg_advisory_unlock(7465726)").await?;
        }
        result.map_err(Error::from)
    }

    /// The suffix that makes a `SELECT` skip rows other nodes are claiming.
    /// SQLite has one writer, so nothing to skip.
    pub fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// As `skip_locked`, locking only the rows of table alias `alias`.
    pub fn skip_locked_of(&self, alias: &str) -> String {
        match self.backend {
            Backend::Sqlite => String::new(),
            Backend::Postgres => format!(" FOR UPDATE OF {alias} SKIP LOCKED"),
        }
    }

    /// Parameter `i` of a statement whose parameters all appear once, in
    /// order. SQLite gets a plain `?`: it looks each `$N` name up by a
    /// linear scan, which makes a 10,000-parameter batch insert quadratic.
    pub fn param(&self, i: usize) -> String {
        match self.backend {
            Backend::Sqlite => "?".to_string(),
            Backend::Postgres => format!("${i}"),
        }
    }

    /// `param(first), …, param(first + n - 1)`, for `IN (…)` lists and
    /// multi-row `VALUES`.
    pub fn placeholders(&self, first: usize, n: usize) -> String {
        (first..first + n)
            .map(|i| self.param(i))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.claim.close().await;
        if let Some(finish) = &self.finish {
            finish.close().await;
        }
        self.pool.close().await;
    }
}

/// Pool options: at most `connections`, each checked against the outage
/// switch and set up with `pragmas` as it opens, and not pinged before use
/// (see `Db::finish`; `Db::pool` on PostgreSQL turns the test back on). On
/// SQLite the writer is one connection and the readers (`Db::read`,
/// `query_only`) are opened on first use, when the writer has created the
/// file and set WAL mode.
fn pool_options<DB: Database>(
    opts: &DbOptions,
    connections: u32,
    pragmas: &'static [&'static str],
) -> PoolOptions<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let outage = opts.outage.clone();
    with_outage(
        PoolOptions::<DB>::new()
            .max_connections(connections)
            .acquire_timeout(opts.acquire_timeout)
            .test_before_acquire(false),
        opts.outage.clone(),
    )
    .after_connect(move |conn, _| {
        let outage = outage.clone();
        Box::pin(async move {
            if let Some(o) = &outage {
                o.check()?;
            }
            for pragma in pragmas {
                conn.execute(*pragma).await?;
            }
            Ok(())
        })
    })
}
