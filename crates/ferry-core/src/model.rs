//! Names shared by every layer: what started a run and where it stands.
//! The job state machine these map onto is drawn in ARCHITECTURE.md.

use serde::{Deserialize, Serialize};

/// What caused a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Event,
    Manual,
    Replay,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Event => "event",
            Trigger::Manual => "manual",
            Trigger::Replay => "replay",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "schedule" => Trigger::Schedule,
            "event" => Trigger::Event,
            "manual" => Trigger::Manual,
            "replay" => Trigger::Replay,
            _ => return None,
        })
    }
}

/// A run's status as users see it (API.md). `Queued`, `Running` and
/// `Retrying` are live jobs; `Succeeded` and `Dead` are history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Retrying,
    Dead,
}

impl RunStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Retrying => "retrying",
            RunStatus::Dead => "dead",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "retrying" => RunStatus::Retrying,
            "dead" => RunStatus::Dead,
            _ => return None,
        })
    }
}

/// Where a live job stands: the `jobs.state` column takes exactly these
/// values (a CHECK constraint in both engines' migrations), and every
/// statement names them through `as_str`. The chart in ARCHITECTURE.md
/// draws the moves between them; a finished job leaves `jobs` for `runs`
/// as `RunStatus::Succeeded` or `RunStatus::Dead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Behind a live job with the same overlap key.
    Waiting,
    /// Ready to be claimed once `run_at` has passed.
    Available,
    /// Claimed under a lease and a fencing token.
    Running,
    /// Its integration is paused.
    Held,
}

impl JobState {
    pub const ALL: [JobState; 4] = [
        JobState::Waiting,
        JobState::Available,
        JobState::Running,
        JobState::Held,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Held => "held",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// `'a', 'b'`: the states as SQL literals, for an `IN (…)` written
    /// into a statement (literals, not parameters, so that a generic plan
    /// can match a partial index's predicate).
    pub fn sql_list(states: &[JobState]) -> String {
        states
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RunStatus {
    /// The statuses a finished run is stored with in `runs.status`.
    pub const FINISHED: [RunStatus; 2] = [RunStatus::Succeeded, RunStatus::Dead];
}
