//! Storage errors. `Unavailable` is what callers see when the database
//! cannot be reached: the intake keeps accepting, readiness says degraded.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Db(String),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("secret encryption: {0}")]
    Crypto(String),
    /// This node's secret key cannot open the store's secrets.
    #[error("{0}")]
    KeyMismatch(String),
    #[error("stored row is not readable: {0}")]
    Corrupt(String),
    /// The store refused a row for what is in it (a constraint, a value it
    /// cannot store): writing it again will fail again.
    #[error("the store refused the row: {0}")]
    Rejected(String),
}

/// Errors worth retrying at once: another writer holds the lock (SQLite's
/// `BUSY`/`LOCKED` and their extended codes, such as a second process
/// committing between a transaction's read and its write), or the
/// transaction lost a race (PostgreSQL's serialization failure, deadlock,
/// lock timeout, too many connections).
fn transient(code: &str) -> bool {
    match sqlite_code(code) {
        Some(n) => matches!(n & 0xff, 5 | 6),
        None => matches!(code, "40001" | "40P01" | "55P03" | "53300"),
    }
}

/// SQLite's extended result code, when `code` is one: PostgreSQL's are
/// SQLSTATEs, always five characters (and may be all digits), SQLite's
/// are numbers below 10,000.
fn sqlite_code(code: &str) -> Option<i32> {
    (code.len() < 5).then(|| code.parse().ok()).flatten()
}

/// Errors about the row itself: a PostgreSQL data exception (class 22,
/// such as a NUL byte in text) or integrity violation (class 23, but for
/// a unique key, which callers handle), or SQLite's `CONSTRAINT` (a
/// trigger's `RAISE`, a check), `TOOBIG` or `MISMATCH`.
fn rejected(code: &str) -> bool {
    match sqlite_code(code) {
        Some(n) => matches!(n & 0xff, 18..=20),
        None => code.starts_with("22") || code.starts_with("23"),
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Error::Unavailable(e.to_string()),
            sqlx::Error::Tls(_) => Error::Unavailable(e.to_string()),
            sqlx::Error::RowNotFound => Error::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::Conflict(db.message().to_string())
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| transient(&c)) => {
                Error::Unavailable(db.message().to_string())
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| rejected(&c)) => {
                Error::Rejected(db.message().to_string())
            }
            // PostgreSQL: admin shutdown / cannot connect now / connection failures.
            sqlx::Error::Database(db)
                if matches!(
                    db.code().as_deref(),
                    Some("57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006")
                ) =>
            {
                Error::Unavailable(db.message().to_string())
            }
            _ => Error::Db(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Corrupt(e.to_string())
    }
}

impl Error {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        // SQLite: BUSY, BUSY_SNAPSHOT, LOCKED; CONSTRAINT_TRIGGER, CHECK, TOOBIG.
        for c in ["5", "517", "6", "40001", "40P01", "55P03"] {
            assert!(transient(c), "{c}");
            assert!(!rejected(c), "{c}");
        }
        for c in ["1811", "275", "18", "22021", "22P05", "23502"] {
            assert!(rejected(c), "{c}");
            assert!(!transient(c), "{c}");
        }
        // Anything else (a syntax error, a missing table) is neither.
        for c in ["1", "42P01", "42601"] {
            assert!(!rejected(c) && !transient(c), "{c}");
        }
    }
}
