//! Shadow runs: a version run beside the real run on the same input,
//! reaching no provider. Its reads are answered from the real run's
//! recorded exchanges (`Replay`); its writes (every request that is not a
//! read) are kept, never sent, and answered as the real run's same write
//! was (or `200 {}`). Anything a shadow run would do outside HTTP (an SMTP
//! send) is refused by its client's fence.
//!
//! `compare` then lays two runs side by side (outcome, records,
//! rejections, state and writes) as a list of differences, each naming
//! its field and both values. Comparing the real run with the stable
//! version's own shadow gives the noise (ids, timestamps): the fields that
//! differ between two runs of one version. Those are dropped from the
//! candidate's differences (the pattern of Twitter's Diffy).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{Exchange, HttpClient, Request, Response, Transport, TransportError};

/// Answers a shadow run from a real run's exchanges, and keeps its writes.
pub struct Replay {
    recorded: Vec<Exchange>,
    used: Mutex<Vec<bool>>,
    writes: Mutex<Vec<Request>>,
}

impl Replay {
    pub fn new(recorded: Vec<Exchange>) -> Arc<Replay> {
        let used = vec![false; recorded.len()];
        Arc::new(Replay {
            recorded,
            used: Mutex::new(used),
            writes: Mutex::new(Vec::new()),
        })
    }

    /// A client over this replay: fenced for anything outside HTTP.
    pub fn client(self: &Arc<Replay>) -> HttpClient {
        HttpClient::new(self.clone(), 64).shadowed()
    }

    /// The writes the shadow run made, in order.
    pub fn writes(&self) -> Vec<Request> {
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The first unused exchange that `matches`, marked used.
    fn take(&self, matches: impl Fn(&Request) -> bool) -> Option<&Exchange> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let k =
            (0..self.recorded.len()).find(|k| !used[*k] && matches(&self.recorded[*k].request))?;
        used[k] = true;
        Some(&self.recorded[k])
    }
}

#[async_trait::async_trait]
impl Transport for Replay {
    async fn send(&self, req: Request) -> Result<Response, TransportError> {
        let answer = |e: &Exchange| e.response.clone().map_err(TransportError::Other);
        if req.method.is_read() {
            return match self.take(|r| r.method == req.method && r.url == req.url) {
                Some(e) => answer(e),
                None => Err(TransportError::Other(format!(
                    "shadow run: the real run did not read {} {}",
                    req.method,
                    req.target()
                ))),
            };
        }
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(req.clone());
        let same = self
            .take(|r| r.method == req.method && r.url == req.url && r.body == req.body)
            .or_else(|| self.take(|r| r.method == req.method && r.url == req.url));
        match same {
            Some(e) => answer(e),
            None => Ok(Response {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: b"{}".to_vec(),
            }),
        }
    }
}

/// What a run did, as shadow comparison sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// `succeeded`, or the error class of the failure.
    pub outcome: String,
    pub records_ok: u64,
    pub records_rejected: u64,
    /// Record → reason.
    pub rejections: BTreeMap<String, String>,
    /// The state it would commit (`null`: unchanged).
    pub state: Value,
    /// Its writes: method and target (no query), and the body (JSON when
    /// it parses, else text).
    pub writes: Vec<(String, String, Value)>,
}

impl Observed {
    /// The writes among a real run's exchanges.
    pub fn writes_of(requests: impl IntoIterator<Item = Request>) -> Vec<(String, String, Value)> {
        requests
            .into_iter()
            .filter(|r| !r.method.is_read())
            .map(|r| {
                let body = serde_json::from_slice(&r.body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&r.body).into_owned())
                });
                (r.method.to_string(), r.target(), body)
            })
            .collect()
    }
}

/// One difference between two runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Difference {
    /// `outcome`, `records`, `rejection`, `state` or `write`.
    pub kind: String,
    /// Where: `records_ok`, `rejections["r1"]`, `state.cursor`,
    /// `writes[2].body.contacts[0].email`, `writes[3]` (one run has it).
    pub field: String,
    #[schema(value_type = Object)]
    pub control: Value,
    #[schema(value_type = Object)]
    pub candidate: Value,
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                flatten(&format!("{prefix}.{k}"), x, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

fn diff_values(kind: &str, prefix: &str, a: &Value, b: &Value, out: &mut Vec<Difference>) {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten(prefix, a, &mut fa);
    flatten(prefix, b, &mut fb);
    let keys: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    for k in keys {
        let (x, y) = (
            fa.get(k).cloned().unwrap_or(Value::Null),
            fb.get(k).cloned().unwrap_or(Value::Null),
        );
        if x != y {
            out.push(Difference {
                kind: kind.into(),
                field: k.clone(),
                control: x,
                candidate: y,
            });
        }
    }
}

/// Every difference between `control` and `candidate`.
pub fn compare(control: &Observed, candidate: &Observed) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut one = |kind: &str, field: &str, a: Value, b: Value| {
        if a != b {
            out.push(Difference {
                kind: kind.into(),
                field: field.into(),
                control: a,
                candidate: b,
            });
        }
    };
    one(
        "outcome",
        "outcome",
        control.outcome.clone().into(),
        candidate.outcome.clone().into(),
    );
    one(
        "records",
        "records_ok",
        control.records_ok.into(),
        candidate.records_ok.into(),
    );
    one(
        "records",
        "records_rejected",
        control.records_rejected.into(),
        candidate.records_rejected.into(),
    );
    let records: BTreeSet<&String> = control
        .rejections
        .keys()
        .chain(candidate.rejections.keys())
        .collect();
    for r in records {
        let side = |o: &Observed| {
            o.rejections
                .get(r)
                .cloned()
                .map_or(Value::Null, Value::String)
        };
        one(
            "rejection",
            &format!("rejections[{r:?}]"),
            side(control),
            side(candidate),
        );
    }
    diff_values("state", "state", &control.state, &candidate.state, &mut out);
    let n = control.writes.len().max(candidate.writes.len());
    for i in 0..n {
        match (control.writes.get(i), candidate.writes.get(i)) {
            (Some((m1, t1, b1)), Some((m2, t2, b2))) if m1 == m2 && t1 == t2 => {
                diff_values("write", &format!("writes[{i}].body"), b1, b2, &mut out);
            }
            (a, b) => {
                let show = |w: Option<&(String, String, Value)>| {
                    w.map_or(
                        Value::Null,
                        |(m, t, b)| serde_json::json!({"request": format!("{m} {t}"), "body": b}),
                    )
                };
                out.push(Difference {
                    kind: "write".into(),
                    field: format!("writes[{i}]"),
                    control: show(a),
                    candidate: show(b),
                });
            }
        }
    }
    out
}

/// The candidate's differences from the real run that the stable version's
/// own shadow does not also show (noise: ids, timestamps).
pub fn signal(real: &Observed, control: &Observed, candidate: &Observed) -> Vec<Difference> {
    let noise: BTreeSet<String> = compare(real, control)
        .into_iter()
        .map(|d| d.field)
        .collect();
    compare(real, candidate)
        .into_iter()
        .filter(|d| !noise.contains(&d.field))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Method;
    use serde_json::json;
    use std::time::Duration;

    fn req(method: Method, url: &str, body: &str) -> Request {
        Request {
            method,
            url: url.into(),
            headers: vec![],
            body: body.as_bytes().to_vec(),
            timeout: Duration::from_secs(1),
        }
    }

    fn ok(body: &str) -> Result<Response, String> {
        Ok(Response {
            status: 200,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        })
    }

    #[tokio::test]
    async fn reads_are_answered_from_the_recording_and_writes_are_kept_not_sent() {
        let replay = Replay::new(vec![
            Exchange {
                request: req(Method::Get, "http://p/a?page=1", ""),
                response: ok("one"),
            },
            Exchange {
                request: req(Method::Get, "http://p/a?page=1", ""),
                response: ok("again"),
            },
            Exchange {
                request: req(Method::Post, "http://p/w", "{\"x\":1}"),
                response: ok("{\"id\":7}"),
            },
        ]);
        let t: &dyn Transport = replay.as_ref();
        assert_eq!(
            t.send(req(Method::Get, "http://p/a?page=1", ""))
                .await
                .unwrap()
                .text(),
            "one"
        );
        assert_eq!(
            t.send(req(Method::Get, "http://p/a?page=1", ""))
                .await
                .unwrap()
                .text(),
            "again"
        );
        let err = t
            .send(req(Method::Get, "http://p/a?page=2", ""))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("did not read GET p/a"), "{err}");
        assert_eq!(
            t.send(req(Method::Post, "http://p/w", "{\"x\":2}"))
                .await
                .unwrap()
                .text(),
            "{\"id\":7}"
        );
        assert_eq!(
            t.send(req(Method::Put, "http://p/new", ""))
                .await
                .unwrap()
                .text(),
            "{}"
        );
        assert_eq!(replay.writes().len(), 2);
        // Its client refuses side effects outside HTTP.
        assert!(replay.client().fence().is_err());
    }

    fn observed(writes: Vec<Value>, state: Value) -> Observed {
        Observed {
            outcome: "succeeded".into(),
            records_ok: writes.len() as u64,
            records_rejected: 0,
            rejections: BTreeMap::new(),
            state,
            writes: writes
                .into_iter()
                .map(|b| ("POST".to_string(), "p/contacts".to_string(), b))
                .collect(),
        }
    }

    #[test]
    fn noise_is_what_two_runs_of_one_version_disagree_on() {
        let real = observed(
            vec![
                json!({"email": "a@x", "sent_at": "10:00"}),
                json!({"email": "open@x", "sent_at": "10:00"}),
            ],
            json!({"cursor": 5, "synced_at": 100}),
        );
        let control = observed(
            vec![
                json!({"email": "a@x", "sent_at": "10:01"}),
                json!({"email": "open@x", "sent_at": "10:01"}),
            ],
            json!({"cursor": 5, "synced_at": 101}),
        );
        // The candidate drops the second write.
        let candidate = observed(
            vec![json!({"email": "a@x", "sent_at": "10:02"})],
            json!({"cursor": 5, "synced_at": 102}),
        );
        let diffs = signal(&real, &control, &candidate);
        let fields: Vec<&str> = diffs.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, vec!["records_ok", "writes[1]"], "{diffs:#?}");
        assert_eq!(diffs[1].control["body"]["email"], "open@x");
        assert_eq!(diffs[1].candidate, Value::Null);
        assert!(signal(&real, &control, &control).is_empty());
    }
}
