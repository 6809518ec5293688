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
    pub fn as_str(self) -> &'static str {
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
