//! An integration's schedule and the decision of which fires to enqueue
//! when the scheduler finds it due: on-time fires, misfires after downtime
//! (per `MisfirePolicy`), and the next fire time.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::cron::CronExpr;
use crate::error::{Error, Result};

/// What to do with fires missed while no scheduler could run them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Drop missed fires.
    Skip,
    /// Run once for everything missed.
    #[default]
    FireOnce,
    /// Run every missed fire within the catch-up window.
    FireAll,
}

/// What to do when a fire comes while the previous scheduled run is still
/// queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Drop the new fire.
    #[default]
    Skip,
    /// Keep it, and run it after the previous run finishes.
    Queue,
    /// Run it alongside.
    Allow,
}

impl MisfirePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MisfirePolicy::Skip => "skip",
            MisfirePolicy::FireOnce => "fire_once",
            MisfirePolicy::FireAll => "fire_all",
        }
    }
}

impl OverlapPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::Queue => "queue",
            OverlapPolicy::Allow => "allow",
        }
    }
}

fn default_timezone() -> String {
    "UTC".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub cron: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default)]
    pub misfire: MisfirePolicy,
    #[serde(default)]
    pub overlap: OverlapPolicy,
}

/// A validated schedule, ready to compute fire times.
#[derive(Debug, Clone)]
pub struct CompiledSchedule {
    pub expr: CronExpr,
    pub tz: Tz,
    pub misfire: MisfirePolicy,
    pub overlap: OverlapPolicy,
}

/// Bounds on catching up, from the scheduler's configuration.
#[derive(Debug, Clone, Copy)]
pub struct CatchUp {
    /// A fire enqueued at most this late is on time, not a misfire.
    pub grace_ms: Millis,
    /// `fire_all` runs missed fires no older than this.
    pub window_ms: Millis,
    /// `fire_all` runs at most this many missed fires (the most recent).
    pub max_fires: usize,
}

/// What one due integration yields at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePlan {
    /// Fire times to enqueue, oldest first.
    pub fires: Vec<Millis>,
    /// Missed fires that the policy dropped.
    pub dropped: u64,
    pub next_fire_at: Option<Millis>,
}

/// Fires walked one by one before the walk jumps ahead (a per-second
/// schedule after a week of downtime).
const MAX_WALK: usize = 100_000;

impl Schedule {
    pub fn compile(&self) -> Result<CompiledSchedule> {
        let expr = CronExpr::parse(&self.cron)?;
        let tz: Tz = self.timezone.parse().map_err(|_| {
            Error::invalid(
                "schedule.timezone",
                format!("{:?} is not an IANA time zone name", self.timezone),
            )
        })?;
        Ok(CompiledSchedule {
            expr,
            tz,
            misfire: self.misfire,
            overlap: self.overlap,
        })
    }
}

fn to_dt(ms: Millis) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl CompiledSchedule {
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        self.expr
            .next_after(to_dt(after), self.tz)
            .map(|t| t.timestamp_millis())
    }

    /// Decides what a due integration fires. `due` is its stored
    /// `next_fire_at` (itself a fire time), `now` the scheduler's time.
    pub fn plan(&self, due: Millis, now: Millis, c: CatchUp) -> FirePlan {
        let mut on_time = Vec::new();
        let mut missed = std::collections::VecDeque::new();
        let mut missed_count = 0u64;
        let keep_from = now - c.window_ms.max(c.grace_ms);
        let mut t = Some(due);
        let mut walked = 0usize;
        while let Some(fire) = t.filter(|f| *f <= now) {
            if now - fire <= c.grace_ms {
                on_time.push(fire);
            } else {
                missed_count += 1;
                if fire >= keep_from || self.misfire == MisfirePolicy::FireOnce {
                    missed.push_back(fire);
                    if missed.len() > c.max_fires.max(1) {
                        missed.pop_front();
                    }
                }
            }
            walked += 1;
            t = if walked == MAX_WALK && fire < keep_from {
                // Too many to walk: the ones between here and the window are
                // dropped by every policy, so count them as missed roughly.
                self.next_after(keep_from - 1)
            } else {
                self.next_after(fire)
            };
        }
        let mut fires = Vec::new();
        match self.misfire {
            MisfirePolicy::Skip => {}
            MisfirePolicy::FireOnce => {
                if on_time.is_empty() {
                    fires.extend(missed.back().copied());
                }
            }
            MisfirePolicy::FireAll => {
                fires.extend(missed.iter().copied().filter(|f| now - f <= c.window_ms));
            }
        }
        let fired_missed = fires.len() as u64;
        fires.extend(on_time);
        FirePlan {
            fires,
            dropped: missed_count - fired_missed,
            next_fire_at: self.next_after(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Millis {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn sched(cron: &str, misfire: MisfirePolicy) -> CompiledSchedule {
        Schedule {
            cron: cron.into(),
            timezone: "UTC".into(),
            misfire,
            overlap: OverlapPolicy::Skip,
        }
        .compile()
        .unwrap()
    }

    const C: CatchUp = CatchUp {
        grace_ms: 30_000,
        window_ms: 3_600_000,
        max_fires: 1000,
    };

    #[test]
    fn on_time_fire_is_fired_by_every_policy() {
        for p in [
            MisfirePolicy::Skip,
            MisfirePolicy::FireOnce,
            MisfirePolicy::FireAll,
        ] {
            let plan = sched("*/15 * * * *", p).plan(
                ms("2026-01-01T00:15:00Z"),
                ms("2026-01-01T00:15:00.400Z"),
                C,
            );
            assert_eq!(plan.fires, vec![ms("2026-01-01T00:15:00Z")]);
            assert_eq!(plan.dropped, 0);
            assert_eq!(plan.next_fire_at, Some(ms("2026-01-01T00:30:00Z")));
        }
    }

    #[test]
    fn three_hours_down_each_policy() {
        // Down from 00:00 to 03:00 with a quarter-hourly schedule: the fires
        // 00:00 .. 02:45 are 12 misfires; 03:00:10 is now.
        let due = ms("2026-01-01T00:00:00Z");
        let now = ms("2026-01-01T03:00:10Z");
        let skip = sched("*/15 * * * *", MisfirePolicy::Skip).plan(due, now, C);
        assert_eq!(
            skip.fires,
            vec![ms("2026-01-01T03:00:00Z")],
            "only the on-time fire"
        );
        assert_eq!(skip.dropped, 12);

        let once =
            sched("*/15 * * * *", MisfirePolicy::FireOnce).plan(due, ms("2026-01-01T02:59:50Z"), C);
        // At 02:59:50 no fire is on time, so one catch-up run for the latest miss.
        assert_eq!(once.fires, vec![ms("2026-01-01T02:45:00Z")]);
        assert_eq!(once.dropped, 11);

        let all = sched("*/15 * * * *", MisfirePolicy::FireAll).plan(due, now, C);
        // Window of one hour: 02:15, 02:30, 02:45 (02:00 is 1h00m10s old), plus 03:00 on time.
        assert_eq!(
            all.fires,
            vec![
                ms("2026-01-01T02:15:00Z"),
                ms("2026-01-01T02:30:00Z"),
                ms("2026-01-01T02:45:00Z"),
                ms("2026-01-01T03:00:00Z")
            ]
        );
        assert_eq!(all.dropped, 9);
        assert_eq!(all.next_fire_at, Some(ms("2026-01-01T03:15:00Z")));
    }

    #[test]
    fn fire_all_is_capped() {
        let c = CatchUp {
            grace_ms: 0,
            window_ms: 86_400_000,
            max_fires: 5,
        };
        let plan = sched("* * * * * *", MisfirePolicy::FireAll).plan(
            ms("2026-01-01T00:00:00Z"),
            ms("2026-01-01T01:00:00.5Z"),
            c,
        );
        assert_eq!(plan.fires.len(), 5);
        assert_eq!(*plan.fires.last().unwrap(), ms("2026-01-01T01:00:00Z"));
    }

    #[test]
    fn bad_timezone_is_named() {
        let err = Schedule {
            cron: "* * * * *".into(),
            timezone: "Mars/Olympus".into(),
            misfire: MisfirePolicy::Skip,
            overlap: OverlapPolicy::Skip,
        }
        .compile()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "schedule.timezone: \"Mars/Olympus\" is not an IANA time zone name"
        );
    }
}
