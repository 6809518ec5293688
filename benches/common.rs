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
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
