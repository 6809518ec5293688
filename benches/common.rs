//! Shared by the benchmark programs: fresh databases and percentiles.

use ferry_store::{Db, DbOptions};

/// The allocator the `ferry` binary uses (src/main.rs), so the benchmarks
/// measure what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub async fn sqlite(dir: &std::path::Path) -> Db {
    let url = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
    let db = Db::connect(&DbOptions::new(url)).await.expect("sqlite");
    db.migrate().await.expect("migrate");
    db
}

/// A fresh database on the server named by FERRY_BENCH_POSTGRES_URL (or
/// FERRY_TEST_POSTGRES_URL), or `None`.
pub async fn postgres() -> Option<String> {
    use sqlx::Connection;
    let base = std::env::var("FERRY_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("FERRY_TEST_POSTGRES_URL"))
        .ok()?;
    let name = format!("ferry_b_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create db");
    let head = base.split('?').next().unwrap_or(&base);
    let cut = head.rfind('/').expect("a database in the url");
    Some(format!("{}/{name}", &head[..cut]))
}

/// Drops a database made by `postgres` (a run leaves hundreds of MB).
pub async fn drop_postgres(url: &str) {
    use sqlx::Connection;
    let Ok(base) = std::env::var("FERRY_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("FERRY_TEST_POSTGRES_URL"))
    else {
        return;
    };
    let Some(name) = url.rsplit('/').next().filter(|n| n.starts_with("ferry_b_")) else {
        return;
    };
    match sqlx::PgConnection::connect(&base).await {
        Ok(mut conn) => {
            if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
            {
                eprintln!("could not drop the bench database {name}: {e}");
            }
        }
        Err(e) => eprintln!("could not drop the bench database {name}: {e}"),
    }
}

pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// User + system CPU seconds of this process, all threads, from
/// `/proc/self/stat` (Linux; 100 ticks per second).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    stat_seconds(&stat, false).map(|(_, s)| s)
}

/// The command name and CPU seconds in one `/proc/<pid>/stat` line: user +
/// system, plus those of reaped children when `children` is set.
fn stat_seconds(stat: &str, children: bool) -> Option<(&str, f64)> {
    // The command name is in parentheses; the fields follow it.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let fields: &[usize] = if children {
        &[11, 12, 13, 14]
    } else {
        &[11, 12]
    };
    let mut ticks = 0.0;
    for i in fields {
        ticks += f.get(*i)?.parse::<f64>().ok()?;
    }
    Some((comm, ticks / 100.0))
}

/// CPU seconds of every `postgres` process on this machine, with the
/// children the postmaster has reaped (backends that have exited): the
/// database's own work, when it runs here. `None` if there is none.
pub fn postgres_cpu_seconds() -> Option<f64> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(("postgres", s)) = stat_seconds(&stat, true) {
            total = Some(total.unwrap_or(0.0) + s);
        }
    }
    total
}

/// Bytes this process has caused to be written to storage, from
/// `/proc/self/io` (Linux): the spool, SQLite's WAL and its checkpoints.
pub fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}
