//! A time cursor for APIs whose "since" filter is inclusive (Typeform's
//! `since`, Eventbrite's `changed_since`): the newest time taken, and the
//! keys of the records taken at exactly that time, so the next run asks
//! from that time again and skips what it already took.
//!
//! State shape: `{"since": "<time>", "seen": ["<key>", …]}`. Times are
//! compared as strings, so they must share one ISO 8601 format.

use std::collections::BTreeSet;

use serde_json::{json, Value};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimeCursor {
    pub since: Option<String>,
    pub seen: BTreeSet<String>,
}

impl TimeCursor {
    pub fn from_state(state: &Value) -> TimeCursor {
        TimeCursor {
            since: state["since"].as_str().map(str::to_string),
            seen: state["seen"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// False for a record this cursor already took.
    pub fn is_new(&self, key: &str) -> bool {
        !self.seen.contains(key)
    }

    /// The state after taking `taken` (time, key) on top of this cursor.
    pub fn advance<'a>(&self, taken: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
        let taken: Vec<(&str, &str)> = taken.into_iter().collect();
        let Some(newest) = taken.iter().map(|(t, _)| *t).max() else {
            return match &self.since {
                None => json!({}),
                Some(s) => json!({"since": s, "seen": self.seen}),
            };
        };
        let mut at_newest: BTreeSet<String> = taken
            .iter()
            .filter(|(t, _)| *t == newest)
            .map(|(_, k)| k.to_string())
            .collect();
        if self.since.as_deref() == Some(newest) {
            at_newest.extend(self.seen.iter().cloned());
        }
        json!({"since": newest, "seen": at_newest})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_keys_at_the_newest_time_only() {
        let c = TimeCursor::default();
        let s = c.advance([
            ("2026-11-01T10:00:00Z", "a"),
            ("2026-11-02T10:00:00Z", "b"),
            ("2026-11-02T10:00:00Z", "c"),
        ]);
        assert_eq!(
            s,
            json!({"since": "2026-11-02T10:00:00Z", "seen": ["b", "c"]})
        );
        let c = TimeCursor::from_state(&s);
        assert!(!c.is_new("b") && c.is_new("a"));
        // Another record at the same instant joins the seen set.
        let s2 = c.advance([("2026-11-02T10:00:00Z", "d")]);
        assert_eq!(s2["seen"], json!(["b", "c", "d"]));
        // Nothing taken: the cursor stays.
        assert_eq!(TimeCursor::from_state(&s2).advance([]), s2);
    }
}
