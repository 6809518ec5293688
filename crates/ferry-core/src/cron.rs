//! Cron expressions: 5 fields (minute precision) or 6 (leading seconds),
//! Vixie semantics (day-of-week 0-7 with 0 and 7 both Sunday, names, the
//! either-day rule when both day fields are restricted), evaluated in an
//! IANA time zone.
//!
//! Daylight-saving rules (as cronie): a schedule with a restricted hour
//! field is a *fixed-time* job; a wildcard hour makes it an *interval* job.
//! - In a gap (clocks jump forward), fixed-time fires that fall in the
//!   missing hour run once, at the instant of the jump; interval fires in the
//!   gap do not exist and are skipped (real time never passes through them).
//! - In a fold (clocks go back), fixed-time fires run once, in the first
//!   pass; interval fires run in both passes, following real time.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    source: String,
    seconds: u64,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    dom_restricted: bool,
    dow_restricted: bool,
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
/// How far ahead a fire is searched for; a schedule that never fires within
/// it is rejected at parse time.
const HORIZON_DAYS: i64 = 366 * 8;

fn field_err(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid("schedule.cron", format!("{field} field: {msg}"))
}

/// Parses one field into a bitset. `names` maps names to values starting at
/// `name_base`.
fn parse_field(
    text: &str,
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<u64> {
    let value = |s: &str| -> Result<u32> {
        if let Ok(v) = s.parse::<u32>() {
            return if (min..=max).contains(&v) {
                Ok(v)
            } else {
                Err(field_err(field, format!("{v} is out of range {min}-{max}")))
            };
        }
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s))
            .map(|i| i as u32 + name_base)
            .ok_or_else(|| field_err(field, format!("{s:?} is not a number or name")))
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(field_err(field, "empty list element"));
        }
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| field_err(field, format!("step {s:?} is not a number")))?;
                if step == 0 {
                    return Err(field_err(field, "step must be at least 1"));
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(field_err(field, format!("range {a}-{b} runs backwards")));
            }
            (a, b)
        } else {
            let a = value(range)?;
            (a, if step.is_some() { max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step.unwrap_or(1);
        }
    }
    Ok(bits)
}

impl CronExpr {
    pub fn parse(source: &str) -> Result<CronExpr> {
        let trimmed = source.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ => trimmed,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(Error::invalid(
                    "schedule.cron",
                    format!("expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with leading seconds), got {n}"),
                ))
            }
        };
        let mut weekdays = parse_field(rest[4], "day-of-week", 0, 7, DAYS, 0)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        let restricted = |f: &str| !(f.starts_with('*') || f.starts_with('?'));
        let expr = CronExpr {
            source: trimmed.to_string(),
            seconds: parse_field(sec, "second", 0, 59, &[], 0)?,
            minutes: parse_field(rest[0], "minute", 0, 59, &[], 0)?,
            hours: parse_field(rest[1], "hour", 0, 23, &[], 0)? as u32,
            days: parse_field(rest[2], "day-of-month", 1, 31, &[], 0)? as u32,
            months: parse_field(rest[3], "month", 1, 12, MONTHS, 1)? as u16,
            weekdays: weekdays as u8,
            dom_restricted: restricted(rest[2]),
            dow_restricted: restricted(rest[4]),
        };
        let start = NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
        if start.and_then(|s| expr.next_naive(s)).is_none() {
            return Err(Error::invalid(
                "schedule.cron",
                format!("{trimmed:?} never fires"),
            ));
        }
        Ok(expr)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// A restricted hour field makes this a fixed-time job (see module doc).
    fn fixed_time(&self) -> bool {
        self.hours != (1u32 << 24) - 1
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first wall-clock time at or after `t` that matches, within the
    /// horizon.
    fn next_naive(&self, mut t: NaiveDateTime) -> Option<NaiveDateTime> {
        let limit = t + Duration::days(HORIZON_DAYS);
        while t <= limit {
            let date = t.date();
            if self.months & (1 << t.month()) == 0 {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
            } else if !self.day_matches(date) {
                t = date.succ_opt()?.and_hms_opt(0, 0, 0)?;
            } else if self.hours & (1 << t.hour()) == 0 {
                t = date.and_hms_opt(t.hour(), 0, 0)? + Duration::hours(1);
            } else if self.minutes & (1 << t.minute()) == 0 {
                t = date.and_hms_opt(t.hour(), t.minute(), 0)? + Duration::minutes(1);
            } else if self.seconds & (1 << t.second()) == 0 {
                t += Duration::seconds(1);
            } else {
                return Some(t);
            }
        }
        None
    }

    /// The first fire strictly after `after`, evaluated in `tz`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let after = after.with_nanosecond(0)?;
        let local = after.with_timezone(&tz).naive_local();
        let general = self.search(local + Duration::seconds(1), after, tz, false);
        // In the first pass of a fold, wall-clock times before `local` come
        // round again: interval jobs may fire on them in the second pass.
        let in_first_pass = matches!(tz.from_local_datetime(&local), LocalResult::Ambiguous(e, l)
            if e.with_timezone(&Utc) == after && l > e);
        let second_pass = if in_first_pass && !self.fixed_time() {
            let fold = match tz.from_local_datetime(&local) {
                LocalResult::Ambiguous(e, l) => l.with_timezone(&Utc) - e.with_timezone(&Utc),
                _ => Duration::zero(),
            };
            self.search(local - fold, after, tz, true)
        } else {
            None
        };
        match (general, second_pass) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Walks matching wall-clock times from `from` and returns the first
    /// instant after `after` they map to. With `second_pass_only`, only the
    /// later mapping of ambiguous times counts, and the walk stops when it
    /// leaves the fold.
    fn search(
        &self,
        from: NaiveDateTime,
        after: DateTime<Utc>,
        tz: Tz,
        second_pass_only: bool,
    ) -> Option<DateTime<Utc>> {
        let mut n = self.next_naive(from)?;
        let limit = from + Duration::days(HORIZON_DAYS);
        while n <= limit {
            let found = match tz.from_local_datetime(&n) {
                LocalResult::Single(i) if !second_pass_only => Some(i.with_timezone(&Utc)),
                LocalResult::Single(i) => {
                    if i.with_timezone(&Utc) > after + Duration::hours(3) {
                        return None;
                    }
                    None
                }
                LocalResult::Ambiguous(e, l) => {
                    let (e, l) = (e.with_timezone(&Utc), l.with_timezone(&Utc));
                    if second_pass_only {
                        Some(l)
                    } else if e > after {
                        Some(e)
                    } else if !self.fixed_time() {
                        Some(l)
                    } else {
                        None
                    }
                }
                LocalResult::None if self.fixed_time() && !second_pass_only => gap_end(n, tz),
                LocalResult::None => None,
            };
            if let Some(i) = found.filter(|i| *i > after) {
                return Some(i);
            }
            n = self.next_naive(n + Duration::seconds(1))?;
        }
        None
    }
}

/// The instant a gap containing wall-clock time `n` ends: the first instant
/// whose local time is later than `n`.
fn gap_end(n: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    let mut lo = (n - Duration::hours(30)).and_utc().timestamp();
    let mut hi = (n + Duration::hours(30)).and_utc().timestamp();
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let local = DateTime::<Utc>::from_timestamp(mid, 0)?
            .with_timezone(&tz)
            .naive_local();
        if local > n {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::<Utc>::from_timestamp(hi, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(expr: &str, tz: Tz, from: &str, n: usize) -> Vec<String> {
        let e = CronExpr::parse(expr).unwrap();
        let mut t = utc(from);
        (0..n)
            .map(|_| {
                t = e.next_after(t, tz).unwrap();
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            })
            .collect()
    }

    #[test]
    fn five_and_six_fields() {
        assert_eq!(
            fires("*/15 * * * *", Tz::UTC, "2026-01-01T00:07:00Z", 3),
            [
                "2026-01-01T00:15:00Z",
                "2026-01-01T00:30:00Z",
                "2026-01-01T00:45:00Z"
            ]
        );
        assert_eq!(
            fires("*/5 * * * * *", Tz::UTC, "2026-01-01T00:00:02Z", 3),
            [
                "2026-01-01T00:00:05Z",
                "2026-01-01T00:00:10Z",
                "2026-01-01T00:00:15Z"
            ]
        );
        assert_eq!(
            fires("30 9 * * MON-FRI", Tz::UTC, "2026-11-20T10:00:00Z", 2),
            ["2026-11-23T09:30:00Z", "2026-11-24T09:30:00Z"]
        );
        // Sunday is 0 and 7.
        assert_eq!(
            fires("0 0 * * 0", Tz::UTC, "2026-11-20T00:00:00Z", 1),
            ["2026-11-22T00:00:00Z"]
        );
        assert_eq!(
            fires("0 0 * * 7", Tz::UTC, "2026-11-20T00:00:00Z", 1),
            ["2026-11-22T00:00:00Z"]
        );
        // Both day fields restricted: either matches.
        assert_eq!(
            fires("0 0 1 * 1", Tz::UTC, "2026-11-24T00:00:00Z", 2),
            ["2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z"]
        );
        assert_eq!(
            fires("@daily", Tz::UTC, "2026-02-28T12:00:00Z", 1),
            ["2026-03-01T00:00:00Z"]
        );
        assert_eq!(
            fires("0 0 29 2 *", Tz::UTC, "2026-01-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00Z"]
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let msg = |s: &str| CronExpr::parse(s).unwrap_err().to_string();
        assert!(
            msg("* * *").contains("expected 5 fields"),
            "{}",
            msg("* * *")
        );
        assert!(msg("61 * * * *").contains("minute field: 61 is out of range 0-59"));
        assert!(msg("* 5-2 * * *").contains("hour field: range 5-2 runs backwards"));
        assert!(msg("*/0 * * * *").contains("step must be at least 1"));
        assert!(msg("* * * FOO *").contains("month field: \"FOO\""));
        assert!(msg("0 0 30 2 *").contains("never fires"));
    }

    #[test]
    fn london_fixed_time_across_both_dst_changes() {
        let tz: Tz = "Europe/London".parse().unwrap();
        // Spring forward 2026-03-29 01:00 GMT -> 02:00 BST: 01:30 does not
        // exist, so the fire runs at the jump (01:00Z).
        assert_eq!(
            fires("30 1 * * *", tz, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z"
            ]
        );
        // Fall back 2026-10-25 02:00 BST -> 01:00 GMT: 01:30 happens twice,
        // the job runs once (first pass, 00:30Z).
        assert_eq!(
            fires("30 1 * * *", tz, "2026-10-23T12:00:00Z", 3),
            [
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z"
            ]
        );
    }

    #[test]
    fn london_interval_follows_real_time_across_dst() {
        let tz: Tz = "Europe/London".parse().unwrap();
        // Spring: the missing hour has no fires; real time has a 30-minute step.
        assert_eq!(
            fires("*/30 * * * *", tz, "2026-03-29T00:00:00Z", 3),
            [
                "2026-03-29T00:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:30:00Z"
            ]
        );
        // Autumn: both passes of 01:00-02:00 fire, every 30 real minutes.
        assert_eq!(
            fires("*/30 * * * *", tz, "2026-10-24T23:45:00Z", 6),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:00:00Z",
                "2026-10-25T02:30:00Z"
            ]
        );
    }

    #[test]
    fn every_second_is_exact() {
        let tz: Tz = "Europe/London".parse().unwrap();
        assert_eq!(
            fires("* * * * * *", tz, "2026-10-25T00:59:58Z", 3),
            [
                "2026-10-25T00:59:59Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:00:01Z"
            ]
        );
    }
}
