//! Operational events: what Ferry tells people about itself (a failure
//! group opened, an integration failing or paused, dead letters, the store
//! going away and coming back). An event is delivered to every endpoint
//! whose scope and type filter accept it; an endpoint is an integration of
//! the built-in `events` connector, so deliveries are runs with retries and
//! dead letters like any other. This module holds what the queue (which
//! emits) and the connector (which delivers) must agree on.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

/// The connector id of event endpoints.
pub const CONNECTOR: &str = "events";

/// Every kind of event, as its wire name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    FailureGroupOpened,
    FailureGroupReopened,
    IntegrationFailing,
    IntegrationRecovered,
    IntegrationAutoPaused,
    RunDeadLettered,
    NodeStoreDegraded,
    NodeStoreRecovered,
    RolloutRolledBack,
    RolloutPromoted,
    /// Sent by running an endpoint by hand ("run now"), to check it.
    Test,
}

impl EventType {
    pub const ALL: [EventType; 11] = [
        EventType::FailureGroupOpened,
        EventType::FailureGroupReopened,
        EventType::IntegrationFailing,
        EventType::IntegrationRecovered,
        EventType::IntegrationAutoPaused,
        EventType::RunDeadLettered,
        EventType::NodeStoreDegraded,
        EventType::NodeStoreRecovered,
        EventType::RolloutRolledBack,
        EventType::RolloutPromoted,
        EventType::Test,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::FailureGroupOpened => "failure_group.opened",
            EventType::FailureGroupReopened => "failure_group.reopened",
            EventType::IntegrationFailing => "integration.failing",
            EventType::IntegrationRecovered => "integration.recovered",
            EventType::IntegrationAutoPaused => "integration.auto_paused",
            EventType::RunDeadLettered => "run.dead_lettered",
            EventType::NodeStoreDegraded => "node.store_degraded",
            EventType::NodeStoreRecovered => "node.store_recovered",
            EventType::RolloutRolledBack => "rollout.rolled_back",
            EventType::RolloutPromoted => "rollout.promoted",
            EventType::Test => "ferry.test",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One event. `tenant` is the tenant it concerns; node events have none
/// and reach only global endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Uuid,
    pub kind: EventType,
    pub tenant: Option<String>,
    pub at_ms: i64,
    pub data: Value,
}

impl Event {
    pub fn new(kind: EventType, tenant: Option<&str>, at_ms: i64, data: Value) -> Event {
        Event {
            id: crate::new_id(),
            kind,
            tenant: tenant.map(str::to_string),
            at_ms,
            data,
        }
    }

    /// The body every channel starts from (the Standard Webhooks shape:
    /// `type`, `timestamp`, `data`, plus the event's id and tenant).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "type": self.kind.as_str(),
            "timestamp": crate::timefmt::format(self.at_ms),
            "tenant": self.tenant,
            "data": self.data,
        })
    }

    /// Reads back what `to_json` wrote (a delivery's payload).
    pub fn from_json(v: &Value) -> Result<Event, String> {
        let id = v["id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or("the event has no id")?;
        let kind = v["type"]
            .as_str()
            .and_then(EventType::parse)
            .ok_or_else(|| format!("the event's type {} is not known", v["type"]))?;
        let at_ms = v["timestamp"]
            .as_str()
            .and_then(crate::timefmt::parse)
            .ok_or("the event has no timestamp")?;
        Ok(Event {
            id,
            kind,
            tenant: v["tenant"].as_str().map(str::to_string),
            at_ms,
            data: v["data"].clone(),
        })
    }

    /// One line a person reads first (Slack text, email subject).
    pub fn summary(&self) -> String {
        let d = &self.data;
        let s = |k: &str| d[k].as_str().unwrap_or("?").to_string();
        match self.kind {
            EventType::FailureGroupOpened | EventType::FailureGroupReopened => format!(
                "Ferry: {} {} — {} {}: {}",
                if self.kind == EventType::FailureGroupOpened {
                    "new failure"
                } else {
                    "failure is back"
                },
                s("group_id"),
                s("connector"),
                s("connector_version"),
                s("message")
            ),
            EventType::IntegrationFailing => format!(
                "Ferry: integration {} is failing ({} of {} runs in {} s)",
                s("integration_id"),
                d["failed"],
                d["runs"],
                d["window_s"]
            ),
            EventType::IntegrationRecovered => {
                format!("Ferry: integration {} recovered", s("integration_id"))
            }
            EventType::IntegrationAutoPaused => format!(
                "Ferry: integration {} paused: {}",
                s("integration_id"),
                s("reason")
            ),
            EventType::RunDeadLettered => format!(
                "Ferry: {} new dead letter(s) for integration {}",
                d["count"],
                s("integration_id")
            ),
            EventType::NodeStoreDegraded => format!(
                "Ferry: node {} lost its store: {} (spool depth {})",
                s("node"),
                s("error"),
                d["spool"]["depth"]
            ),
            EventType::NodeStoreRecovered => format!(
                "Ferry: node {} has its store back after {} s",
                s("node"),
                d["outage_s"]
            ),
            EventType::RolloutRolledBack => format!(
                "Ferry: rollout {} of {} {} rolled back: {}",
                s("rollout_id"),
                s("connector"),
                s("candidate_version"),
                s("reason")
            ),
            EventType::RolloutPromoted => format!(
                "Ferry: rollout {} promoted {} {}",
                s("rollout_id"),
                s("connector"),
                s("candidate_version")
            ),
            EventType::Test => "Ferry: a test event".to_string(),
        }
    }
}

/// What an endpoint accepts: its scope and its type filter, read from its
/// config (`global`, `event_types`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Every tenant's events and the nodes' (admins without a tenant only);
    /// otherwise only the events of the endpoint's own tenant.
    #[serde(default)]
    pub global: bool,
    /// Exact names or `prefix.*`; empty means every type.
    #[serde(default)]
    pub event_types: Vec<String>,
}

impl Filter {
    pub fn from_config(config: &Value) -> Filter {
        Filter {
            global: config["global"].as_bool().unwrap_or(false),
            event_types: config["event_types"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Whether an endpoint of `tenant` with this filter gets `event`.
    pub fn accepts(&self, tenant: &str, event: &Event) -> bool {
        let in_scope = self.global || event.tenant.as_deref() == Some(tenant);
        in_scope && self.accepts_type(event.kind)
    }

    pub fn accepts_type(&self, kind: EventType) -> bool {
        kind == EventType::Test
            || self.event_types.is_empty()
            || self.event_types.iter().any(|p| matches(p, kind.as_str()))
    }

    /// A pattern that can match nothing is a mistake in the config.
    pub fn unknown_patterns(&self) -> Vec<String> {
        self.event_types
            .iter()
            .filter(|p| !EventType::ALL.iter().any(|t| matches(p, t.as_str())))
            .cloned()
            .collect()
    }
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_endpoint_gets_its_tenant_s_events_of_the_types_it_asked_for() {
        let f = Filter {
            global: false,
            event_types: vec!["failure_group.*".into(), "run.dead_lettered".into()],
        };
        let ev = |kind, tenant: Option<&str>| Event::new(kind, tenant, 0, json!({}));
        assert!(f.accepts("acme", &ev(EventType::FailureGroupOpened, Some("acme"))));
        assert!(f.accepts("acme", &ev(EventType::FailureGroupReopened, Some("acme"))));
        assert!(f.accepts("acme", &ev(EventType::RunDeadLettered, Some("acme"))));
        assert!(!f.accepts("acme", &ev(EventType::FailureGroupOpened, Some("globex"))));
        assert!(!f.accepts("acme", &ev(EventType::IntegrationFailing, Some("acme"))));
        assert!(!f.accepts("acme", &ev(EventType::NodeStoreDegraded, None)));
        let global = Filter {
            global: true,
            event_types: vec![],
        };
        assert!(global.accepts("ops", &ev(EventType::NodeStoreDegraded, None)));
        assert!(global.accepts("ops", &ev(EventType::FailureGroupOpened, Some("globex"))));
    }

    #[test]
    fn patterns_that_match_no_event_type_are_named() {
        let f = Filter {
            global: false,
            event_types: vec![
                "node.*".into(),
                "failure_group.open".into(),
                "nope.*".into(),
            ],
        };
        assert_eq!(f.unknown_patterns(), vec!["failure_group.open", "nope.*"]);
    }

    #[test]
    fn an_event_reads_back_as_written() {
        let ev = Event::new(
            EventType::IntegrationAutoPaused,
            Some("acme"),
            1_700_000_000_123,
            json!({"integration_id": "x", "reason": "failing"}),
        );
        assert_eq!(Event::from_json(&ev.to_json()), Ok(ev.clone()));
        assert!(ev.summary().contains("paused: failing"));
        assert!(Event::from_json(&json!({"id": ev.id, "type": "nope"}))
            .unwrap_err()
            .contains("nope"));
    }
}
