//! The durable job queue on SQLite and PostgreSQL.
//!
//! A job is one run of an integration. It lives in the small, hot `jobs`
//! table only while it is live (waiting, available, running, held); when it
//! finishes it moves to `runs` (and, if dead, to `dead_letters`) in the same
//! transaction. Claims take batches with a lease and a fencing token that is
//! unique per claim of a job; every later write about the job (heartbeat,
//! completion, failure, release) must present it, so a worker that lost its
//! lease can no longer change anything.
//!
//! This crate is the only one that reads or writes the queue's tables:
//! `jobs`, `job_keys` and its SQLite tail, `runs`, `dead_letters`,
//! `parked_events` and `operations`. What pausing, editing or deleting an
//! integration does to its jobs happens here, in the transaction that
//! changes the integration (`jobs::hold`).
//!
//! This crate never decides *when* to retry (that is `ferry_core::retry`)
//! nor what a job does (connectors): it moves rows.

pub mod detect;
pub mod events;
pub mod failures;
pub mod forward;
pub mod history;
pub mod jobs;
pub mod keys;
pub mod ops;
pub mod parked;
pub mod rollouts;
mod row;
pub mod spool;
pub mod wake;

pub use history::{DeadLetter, DeadLetterFilter, ReplayRevision, RunFilter, RunView};
pub use jobs::{AttemptEntry, ClaimedJob, Enqueued, Failure, NewJob, Queue, Success};
pub use ops::{Operation, OperationStatus, Step};
pub use parked::{ParkedEvent, ParkedFilter};

pub type Error = ferry_store::Error;
pub type Result<T, E = Error> = std::result::Result<T, E>;
