//! An example connector, written the way `docs/connectors.md` teaches:
//! `form_contacts` reads a platform form's responses page by page (cursor
//! `after`) and upserts each respondent as a contact, rejecting responses
//! without an email with a reason.
//!
//! `cargo run --example form_contacts` registers it beside the built-in
//! connectors and runs it twice against an in-process sandbox;
//! `cargo test --example form_contacts` (part of `cargo test --workspace`)
//! puts it through the conformance harness every connector passes.

use std::collections::BTreeMap;

use ferry_connectors::platform::{ContactUpsert, PlatformClient};
use ferry_core::{
    Connector, ConnectorError, Manifest, Rejection, RunContext, RunReport, SecretSpec, TriggerKind,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The config, as the JSON Schema in the manifest describes it.
#[derive(Debug, Deserialize)]
struct Config {
    form_id: String,
    platform_base_url: String,
    address_book_id: Option<String>,
    /// Platform data field → response field.
    #[serde(default)]
    field_map: BTreeMap<String, String>,
}

pub struct FormContacts {
    manifest: Manifest,
}

impl FormContacts {
    pub fn new() -> Self {
        FormContacts {
            manifest: Manifest {
                id: "form_contacts".into(),
                version: "0.1.0".into(),
                changelog: "First version.".into(),
                name: "Form responses → contacts".into(),
                description: "Upserts each respondent of a platform form as a contact.".into(),
                triggers: vec![TriggerKind::Schedule],
                config_schema: json!({
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["form_id", "platform_base_url"],
                    "properties": {
                        "form_id": {"type": "string", "minLength": 1},
                        "platform_base_url": {"type": "string", "pattern": "^https?://[^\\s]+$"},
                        "address_book_id": {"type": "string", "minLength": 1},
                        "field_map": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}
                    }
                }),
                secrets: vec![SecretSpec {
                    name: "platform_api_key".into(),
                    required: true,
                    description: "API key of the platform API.".into(),
                }],
            },
        }
    }
}

impl Default for FormContacts {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Connector for FormContacts {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    async fn run(&self, ctx: RunContext) -> Result<RunReport, ConnectorError> {
        let config: Config = serde_json::from_value((*ctx.config).clone())
            .map_err(|e| ConnectorError::InvalidConfig(format!("config: {e}")))?;
        let key = ferry_connectors::secret(&ctx.secrets, "platform_api_key")?;
        let platform = PlatformClient::new(ctx.http.clone(), &config.platform_base_url, key);

        // Read every page after the committed cursor before writing
        // anything: a run cut mid-way then writes nothing, and its retry
        // starts again from the same cursor.
        let mut after = ctx.state["after"].as_str().map(str::to_string);
        let mut responses = Vec::new();
        loop {
            if ctx.cancel.is_cancelled() {
                return Err(ConnectorError::Transient("cancelled".into()));
            }
            let path = match &after {
                Some(a) => format!("/v1/forms/{}/responses?after={a}", config.form_id),
                None => format!("/v1/forms/{}/responses", config.form_id),
            };
            let page = platform.get(&path, ctx.now_ms).await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if let Some(last) = items.last().and_then(|r| r["id"].as_str()) {
                after = Some(last.to_string());
            }
            responses.extend(items);
            if page["next"].is_null() {
                break;
            }
        }

        let mut contacts = Vec::new();
        let mut rejections = Vec::new();
        for r in &responses {
            let id = r["id"].as_str().unwrap_or("?");
            let Some(email) = r["fields"]["email"].as_str().filter(|e| !e.is_empty()) else {
                rejections.push(Rejection {
                    record: format!("response {id}"),
                    reason: "has no email".into(),
                });
                continue;
            };
            let mut fields = Map::new();
            for (field, from) in &config.field_map {
                if let Some(v) = r["fields"].get(from).filter(|v| !v.is_null()) {
                    fields.insert(field.clone(), v.clone());
                }
            }
            contacts.push(ContactUpsert {
                email: email.to_string(),
                data_fields: fields,
                address_book_id: config.address_book_id.clone(),
                label: format!("response {id} ({email})"),
            });
        }
        // Suppressed contacts and invalid values come back as rejections;
        // the rest of the batch goes through.
        let done = platform.upsert(&contacts, ctx.now_ms).await?;
        rejections.extend(done.rejections);
        Ok(RunReport {
            records_ok: done.ok,
            records_rejected: rejections.len() as u64,
            rejections,
            // Committed with the run's completion, never before.
            state: Some(match after {
                Some(a) => json!({"after": a}),
                None => json!({}),
            }),
        })
    }
}

fn config(base: &str) -> Value {
    json!({"form_id": "form-big", "platform_base_url": format!("{base}/platform"), "address_book_id": "ab-2", "field_map": {"COMPANY": "company"}})
}

fn secrets() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "platform_api_key".to_string(),
        ferry_sandbox::platform::API_KEY.to_string(),
    )])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Registered in one line, beside the built-in connectors. A node built
    // with this registry (`ferry_node::start(&config, Connectors {
    // registry, transport: ferry_connectors::http::transport() }, clock)`)
    // runs it like any other.
    let mut registry = ferry_connectors::builtin()?;
    registry.register(FormContacts::new())?;
    let names: Vec<String> = registry.all().map(|r| r.manifest().id.clone()).collect();
    println!("registered: {}", names.join(", "));

    let (sandbox, e) = ferry_connectors::testkit::sandbox().await;
    let c = &registry.resolve("form_contacts", None)?.connector;
    let first = c
        .run(ferry_connectors::testkit::context(
            config(&e.http),
            secrets(),
            None,
            json!({}),
            0,
        ))
        .await?;
    println!(
        "first run: {} contacts, {} rejected, cursor {:?}",
        first.records_ok, first.records_rejected, first.state
    );
    let second = c
        .run(ferry_connectors::testkit::context(
            config(&e.http),
            secrets(),
            None,
            first.state.unwrap_or_default(),
            0,
        ))
        .await?;
    println!("second run: {} contacts (nothing new)", second.records_ok);
    println!(
        "the sandbox's address book ab-2 now has {} members",
        sandbox.world().platform.address_books["ab-2"].len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_connectors::testkit::{conform, platform_contacts, Case};
    use ferry_sandbox::faults::Fault;

    use super::*;

    #[tokio::test]
    async fn form_contacts_passes_the_conformance_harness() {
        conform(Case {
            connector: Arc::new(FormContacts::new()),
            config: |e| config(&e.http),
            secrets: |_| secrets(),
            bad_configs: vec![
                (json!({"form_id": null}), "config.form_id"),
                (
                    json!({"platform_base_url": "not a url"}),
                    "config.platform_base_url",
                ),
            ],
            webhook: None,
            payload: None,
            faults: vec![
                Fault::status("platform", 429).retry_after(2),
                Fault::status("platform", 503),
            ],
            // The first of three pages, then a cut.
            cut: Some(Fault::status("platform", 503).skip(1)),
            outcome: platform_contacts,
            now_ms: 0,
        })
        .await;
    }
}
