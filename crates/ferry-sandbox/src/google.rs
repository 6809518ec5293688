//! Google: the OAuth token endpoint (service-account RS256 JWT grant,
//! refresh-token grant, revocation) and Sheets API v4 (values get, update,
//! append, clear, batchUpdate; spreadsheet metadata and `addSheet`), with
//! the per-project write quota. Mounted under `/google`: the token URL is
//! `/google/token`, the Sheets base URL `/google`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::Verifier;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::oauth::{bearer, form, now_ms};
use crate::{guard, Sandbox};

/// The service-account key the sandbox trusts (a test key: it protects
/// nothing but the sandbox).
pub const SERVICE_ACCOUNT_JSON: &str =
    include_str!("../../../fixtures/google_service_account.json");
pub const CLIENT_ID: &str = "sandbox-client-id.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "sandbox-client-secret";
pub const REFRESH_TOKEN: &str = "sandbox-refresh-token";
pub const SPREADSHEET_ID: &str = "sheet-1";
pub const SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets";
/// Google refuses bodies over 10 MB; it advises staying under 2 MB.
pub const MAX_BODY: usize = 10 * 1024 * 1024;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Tab {
    pub sheet_id: u64,
    pub title: String,
    pub rows: Vec<Vec<Value>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Spreadsheet {
    pub title: String,
    pub tabs: Vec<Tab>,
    /// Write requests served, and the largest body among them.
    pub writes: u64,
    pub largest_write_bytes: usize,
}

impl Spreadsheet {
    pub fn tab(&self, title: &str) -> Option<&Tab> {
        self.tabs.iter().find(|t| t.title == title)
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Google {
    pub spreadsheets: BTreeMap<String, Spreadsheet>,
    /// Service-account email → (project, public key PEM).
    #[serde(skip)]
    pub service_accounts: BTreeMap<String, (String, rsa::RsaPublicKey)>,
    /// Live refresh tokens.
    pub refresh_tokens: Vec<String>,
    pub writes_per_minute: usize,
    #[serde(skip)]
    writes: BTreeMap<String, VecDeque<Instant>>,
}

impl Google {
    pub fn seeded() -> Google {
        let mut service_accounts = BTreeMap::new();
        if let Ok(v) = serde_json::from_str::<Value>(SERVICE_ACCOUNT_JSON) {
            if let (Some(email), Some(pem), Some(project)) = (
                v["client_email"].as_str(),
                v["private_key"].as_str(),
                v["project_id"].as_str(),
            ) {
                if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
                    service_accounts.insert(
                        email.to_string(),
                        (project.to_string(), key.to_public_key()),
                    );
                }
            }
        }
        Google {
            spreadsheets: BTreeMap::from([(
                SPREADSHEET_ID.to_string(),
                Spreadsheet {
                    title: "Ferry exports".into(),
                    tabs: vec![Tab {
                        sheet_id: 0,
                        title: "Sheet1".into(),
                        rows: Vec::new(),
                    }],
                    writes: 0,
                    largest_write_bytes: 0,
                },
            )]),
            service_accounts,
            refresh_tokens: vec![REFRESH_TOKEN.to_string()],
            writes_per_minute: 300,
            writes: BTreeMap::new(),
        }
    }

    /// Counts a write for `project`; false when it is over the quota.
    fn take_write(&mut self, project: &str) -> bool {
        let limit = self.writes_per_minute;
        let q = self.writes.entry(project.to_string()).or_default();
        let now = Instant::now();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            q.pop_front();
        }
        if q.len() >= limit {
            return false;
        }
        q.push_back(now);
        true
    }
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn api_error(status: u16, google_status: &str, message: impl Into<String>) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(
            json!({"error": {"code": status, "message": message.into(), "status": google_status}}),
        ),
    )
        .into_response()
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// An OAuth error: status, `error`, `error_description`.
type OauthError = (u16, &'static str, String);

/// Checks a service-account assertion; `Ok(project)` or the OAuth error.
fn check_assertion(g: &Google, jwt: &str, audience: &str) -> Result<String, OauthError> {
    let bad = |d: &str| Err((400, "invalid_grant", d.to_string()));
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, sig] = parts.as_slice() else {
        return bad("Invalid JWT: it must have three parts.");
    };
    let (Some(header), Some(claims), Some(sig)) = (
        b64url(h).and_then(|b| serde_json::from_slice::<Value>(&b).ok()),
        b64url(c).and_then(|b| serde_json::from_slice::<Value>(&b).ok()),
        b64url(sig),
    ) else {
        return bad("Invalid JWT: it is not base64url-encoded JSON.");
    };
    if header["alg"] != "RS256" {
        return bad("Invalid JWT: the algorithm must be RS256.");
    }
    let Some((project, key)) = claims["iss"]
        .as_str()
        .and_then(|i| g.service_accounts.get(i))
    else {
        return Err((
            401,
            "invalid_client",
            "The OAuth client was not found.".into(),
        ));
    };
    let signature = Signature::try_from(sig.as_slice());
    let valid = signature.is_ok_and(|s| {
        VerifyingKey::<Sha256>::new(key.clone())
            .verify(format!("{h}.{c}").as_bytes(), &s)
            .is_ok()
    });
    if !valid {
        return bad("Invalid JWT Signature.");
    }
    if claims["aud"] != audience {
        return bad(&format!("Invalid JWT: the audience must be {audience}."));
    }
    let scopes = claims["scope"].as_str().unwrap_or("");
    if !scopes.split(' ').any(|s| s == SCOPE) {
        return Err((
            400,
            "invalid_scope",
            "The spreadsheets scope is missing.".into(),
        ));
    }
    let now = now_ms() / 1000;
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return bad("Invalid JWT: iat and exp are required.");
    };
    if iat > now + 60 || exp <= now || exp > iat + 3600 {
        return bad("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.");
    }
    Ok(project.clone())
}

/// `POST /google/token`: the JWT-bearer and refresh-token grants.
async fn token(State(s): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = guard(&s, "google_oauth").await {
        return r;
    }
    let f = form(&body);
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    // The token URL as called: this fake is mounted at `/google`.
    let audience = format!("http://{host}/google/token");
    let mut w = s.world();
    let subject = match f.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let Some(jwt) = f.get("assertion") else {
                return oauth_error(
                    400,
                    "invalid_request",
                    "Missing required parameter: assertion",
                );
            };
            match check_assertion(&w.google, jwt, &audience) {
                Ok(project) => project,
                Err((status, error, description)) => {
                    return oauth_error(status, error, &description)
                }
            }
        }
        Some("refresh_token") => {
            if f.get("client_id").map(String::as_str) != Some(CLIENT_ID)
                || f.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
            {
                return oauth_error(401, "invalid_client", "The OAuth client was not found.");
            }
            let live = f
                .get("refresh_token")
                .is_some_and(|t| w.google.refresh_tokens.contains(t));
            if !live {
                return oauth_error(400, "invalid_grant", "Token has been expired or revoked.");
            }
            "oauth-client".to_string()
        }
        _ => return oauth_error(400, "unsupported_grant_type", "Invalid grant_type"),
    };
    let token = w.tokens.issue("sheets", &subject, "ya29.sandbox-", 3599);
    Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer", "scope": SCOPE}))
        .into_response()
}

#[derive(Deserialize)]
struct RevokeQuery {
    token: Option<String>,
}

/// `POST /google/revoke?token=…`: revokes a refresh or access token.
async fn revoke(State(s): State<Sandbox>, Query(q): Query<RevokeQuery>, body: Bytes) -> Response {
    let token = q.token.or_else(|| form(&body).remove("token"));
    let Some(token) = token else {
        return oauth_error(400, "invalid_request", "Missing required parameter: token");
    };
    let mut w = s.world();
    let before = w.google.refresh_tokens.len();
    w.google.refresh_tokens.retain(|t| *t != token);
    if w.google.refresh_tokens.len() < before || w.tokens.revoke(&token) {
        Json(json!({})).into_response()
    } else {
        oauth_error(400, "invalid_token", "Token expired or revoked")
    }
}

#[derive(Deserialize)]
struct QuotaReq {
    writes_per_minute: usize,
}

/// `POST /_sandbox/google/quota {"writes_per_minute": N}`.
async fn set_quota(State(s): State<Sandbox>, Json(q): Json<QuotaReq>) -> Response {
    s.world().google.writes_per_minute = q.writes_per_minute;
    Json(json!({"writes_per_minute": q.writes_per_minute})).into_response()
}

/// A parsed A1 range: the tab, the first cell, and the last row if bounded.
#[derive(Debug, PartialEq)]
struct A1 {
    sheet: String,
    row: usize,
    col: usize,
    end_row: Option<usize>,
    end_col: Option<usize>,
}

fn col_index(letters: &str) -> Option<usize> {
    if letters.is_empty() {
        return None;
    }
    letters
        .chars()
        .try_fold(0usize, |acc, ch| {
            ch.is_ascii_alphabetic()
                .then(|| acc * 26 + (ch.to_ascii_uppercase() as usize - 'A' as usize + 1))
        })
        .map(|n| n - 1)
}

fn col_name(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push((b'A' + (i % 26) as u8) as char);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.iter().rev().collect()
}

/// `(col, row)` of a cell reference like `B3`, `C`, or `4`.
fn cell(r: &str) -> (Option<usize>, Option<usize>) {
    let split = r.find(|c: char| c.is_ascii_digit()).unwrap_or(r.len());
    let (letters, digits) = r.split_at(split);
    (
        col_index(letters),
        digits
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| n - 1),
    )
}

fn parse_a1(range: &str) -> Result<A1, String> {
    let (sheet, cells) = match range.rsplit_once('!') {
        Some((s, c)) => (s, Some(c)),
        None => (range, None),
    };
    let sheet = sheet
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .map(|s| s.replace("''", "'"))
        .unwrap_or_else(|| sheet.to_string());
    if sheet.is_empty() {
        return Err(format!("Unable to parse range: {range}"));
    }
    let Some(cells) = cells else {
        return Ok(A1 {
            sheet,
            row: 0,
            col: 0,
            end_row: None,
            end_col: None,
        });
    };
    let (start, end) = match cells.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (cells, None),
    };
    let (c0, r0) = cell(start);
    if c0.is_none() && r0.is_none() {
        return Err(format!("Unable to parse range: {range}"));
    }
    let (end_col, end_row) = match end {
        Some(e) => cell(e),
        None => (c0, r0),
    };
    Ok(A1 {
        sheet,
        row: r0.unwrap_or(0),
        col: c0.unwrap_or(0),
        end_row,
        end_col,
    })
}

fn a1_name(sheet: &str, row: usize, col: usize, rows: usize, cols: usize) -> String {
    let quoted = if sheet.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        sheet.to_string()
    } else {
        format!("'{}'", sheet.replace('\'', "''"))
    };
    format!(
        "{quoted}!{}{}:{}{}",
        col_name(col),
        row + 1,
        col_name(col + cols.max(1) - 1),
        row + rows.max(1)
    )
}

#[derive(Deserialize)]
struct ValuesQuery {
    #[serde(rename = "valueInputOption")]
    value_input_option: Option<String>,
    #[serde(rename = "insertDataOption")]
    insert_data_option: Option<String>,
}

#[derive(Deserialize)]
struct ValueRange {
    range: Option<String>,
    #[serde(rename = "majorDimension")]
    major_dimension: Option<String>,
    #[serde(default)]
    values: Vec<Vec<Value>>,
}

fn write_cells(tab: &mut Tab, row: usize, col: usize, values: &[Vec<Value>]) {
    for (i, r) in values.iter().enumerate() {
        while tab.rows.len() <= row + i {
            tab.rows.push(Vec::new());
        }
        let target = &mut tab.rows[row + i];
        for (j, v) in r.iter().enumerate() {
            while target.len() <= col + j {
                target.push(Value::String(String::new()));
            }
            target[col + j] = v.clone();
        }
    }
}

fn updates(id: &str, sheet: &str, row: usize, col: usize, values: &[Vec<Value>]) -> Value {
    let rows = values.len();
    let cols = values.iter().map(Vec::len).max().unwrap_or(0);
    json!({
        "spreadsheetId": id,
        "updatedRange": a1_name(sheet, row, col, rows, cols),
        "updatedRows": rows,
        "updatedColumns": cols,
        "updatedCells": values.iter().map(Vec::len).sum::<usize>(),
    })
}

/// Everything under `/google/v4/spreadsheets/`: the catch-all route parses
/// Google's `{id}:verb` and `{range}:verb` forms itself.
async fn spreadsheets(
    State(s): State<Sandbox>,
    method: axum::http::Method,
    headers: HeaderMap,
    Path(rest): Path<String>,
    Query(q): Query<ValuesQuery>,
    body: Bytes,
) -> Response {
    if let Some(r) = guard(&s, "sheets").await {
        return r;
    }
    let mut w = s.world();
    let Some(project) = bearer(&headers).and_then(|t| w.tokens.check("sheets", t)) else {
        return api_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    };
    let (id, tail) = match rest.split_once('/') {
        Some((id, t)) => (id.to_string(), Some(t.to_string())),
        None => (rest.clone(), None),
    };
    let (id, verb) = match id.split_once(':') {
        Some((i, v)) => (i.to_string(), Some(v.to_string())),
        None => (id, None),
    };
    let is_write = method != axum::http::Method::GET;
    if is_write {
        if body.len() > MAX_BODY {
            return api_error(
                400,
                "INVALID_ARGUMENT",
                format!("Request payload size exceeds the limit: {MAX_BODY} bytes."),
            );
        }
        if !w.google.take_write(&project) {
            return crate::faults::answer("sheets", 429, None);
        }
    }
    let Some(sheet) = w.google.spreadsheets.get_mut(&id) else {
        return api_error(404, "NOT_FOUND", "Requested entity was not found.");
    };
    if is_write {
        sheet.writes += 1;
        sheet.largest_write_bytes = sheet.largest_write_bytes.max(body.len());
    }
    let parse_json = |body: &Bytes| {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| format!("Invalid JSON payload received. {e}"))
    };
    let needs_option = || {
        api_error(
            400,
            "INVALID_ARGUMENT",
            "'valueInputOption' is required but not specified",
        )
    };
    let valid_option = |o: &Option<String>| matches!(o.as_deref(), Some("RAW" | "USER_ENTERED"));
    match (method.as_str(), tail.as_deref(), verb.as_deref()) {
        ("GET", None, None) => Json(json!({
            "spreadsheetId": id,
            "properties": {"title": sheet.title},
            "sheets": sheet.tabs.iter().enumerate().map(|(i, t)| json!({"properties": {"sheetId": t.sheet_id, "title": t.title, "index": i}})).collect::<Vec<_>>(),
        }))
        .into_response(),
        ("POST", None, Some("batchUpdate")) => {
            let v = match parse_json(&body) {
                Ok(v) => v,
                Err(m) => return api_error(400, "INVALID_ARGUMENT", m),
            };
            let Some(requests) = v["requests"].as_array() else {
                return api_error(400, "INVALID_ARGUMENT", "requests[] is required");
            };
            // All or nothing: check every request first.
            let mut titles: Vec<String> = sheet.tabs.iter().map(|t| t.title.clone()).collect();
            let mut added = Vec::new();
            for r in requests {
                let Some(title) = r["addSheet"]["properties"]["title"].as_str() else {
                    return api_error(400, "INVALID_ARGUMENT", "Only addSheet requests are supported by the sandbox");
                };
                if titles.iter().any(|t| t == title) {
                    return api_error(400, "INVALID_ARGUMENT", format!("Invalid requests[0].addSheet: A sheet with the name \"{title}\" already exists. Please enter another name."));
                }
                titles.push(title.to_string());
                added.push(title.to_string());
            }
            let mut replies = Vec::new();
            for title in added {
                let sheet_id = sheet.tabs.iter().map(|t| t.sheet_id).max().unwrap_or(0) + 1;
                sheet.tabs.push(Tab { sheet_id, title: title.clone(), rows: Vec::new() });
                replies.push(json!({"addSheet": {"properties": {"sheetId": sheet_id, "title": title, "index": sheet.tabs.len() - 1}}}));
            }
            Json(json!({"spreadsheetId": id, "replies": replies})).into_response()
        }
        ("POST", Some("values:batchUpdate"), None) => {
            let v = match parse_json(&body) {
                Ok(v) => v,
                Err(m) => return api_error(400, "INVALID_ARGUMENT", m),
            };
            if !valid_option(&v["valueInputOption"].as_str().map(str::to_string)) {
                return needs_option();
            }
            let data: Vec<ValueRange> = match serde_json::from_value(v["data"].clone()) {
                Ok(d) => d,
                Err(e) => return api_error(400, "INVALID_ARGUMENT", format!("Invalid data[]: {e}")),
            };
            let mut parsed = Vec::new();
            for d in &data {
                let r = match parse_a1(d.range.as_deref().unwrap_or("")) {
                    Ok(r) => r,
                    Err(m) => return api_error(400, "INVALID_ARGUMENT", m),
                };
                if sheet.tab(&r.sheet).is_none() {
                    return api_error(400, "INVALID_ARGUMENT", format!("Unable to parse range: {}", r.sheet));
                }
                parsed.push(r);
            }
            let mut responses = Vec::new();
            for (r, d) in parsed.iter().zip(&data) {
                if let Some(tab) = sheet.tabs.iter_mut().find(|t| t.title == r.sheet) {
                    write_cells(tab, r.row, r.col, &d.values);
                }
                responses.push(updates(&id, &r.sheet, r.row, r.col, &d.values));
            }
            let total = |k: &str| responses.iter().filter_map(|r| r[k].as_u64()).sum::<u64>();
            Json(json!({
                "spreadsheetId": id,
                "totalUpdatedRows": total("updatedRows"),
                "totalUpdatedColumns": total("updatedColumns"),
                "totalUpdatedCells": total("updatedCells"),
                "totalUpdatedSheets": parsed.iter().map(|r| &r.sheet).collect::<std::collections::BTreeSet<_>>().len(),
                "responses": responses,
            }))
            .into_response()
        }
        (m, Some(t), None) if t.starts_with("values/") => {
            let range = &t["values/".len()..];
            let (range, action) = if let Some(r) = range.strip_suffix(":append") {
                (r, "append")
            } else if let Some(r) = range.strip_suffix(":clear") {
                (r, "clear")
            } else {
                (range, "")
            };
            let a1 = match parse_a1(range) {
                Ok(r) => r,
                Err(m) => return api_error(400, "INVALID_ARGUMENT", m),
            };
            let Some(tab) = sheet.tabs.iter_mut().find(|t| t.title == a1.sheet) else {
                return api_error(400, "INVALID_ARGUMENT", format!("Unable to parse range: {range}"));
            };
            match (m, action) {
                ("GET", "") => {
                    let end = a1.end_row.map(|e| e + 1).unwrap_or(tab.rows.len()).min(tab.rows.len());
                    let mut values: Vec<Vec<Value>> = tab.rows.get(a1.row..end).unwrap_or(&[]).iter().map(|r| {
                            r.iter()
                                .skip(a1.col)
                                .take(a1.end_col.map_or(usize::MAX, |e| e + 1 - a1.col.min(e + 1)))
                                .cloned()
                                .collect()
                        }).collect();
                    while values.last().is_some_and(|r: &Vec<Value>| r.iter().all(|v| v == "")) {
                        values.pop();
                    }
                    let mut out = json!({"range": a1_name(&a1.sheet, a1.row, a1.col, values.len(), values.iter().map(Vec::len).max().unwrap_or(1)), "majorDimension": "ROWS"});
                    if !values.is_empty() {
                        out["values"] = json!(values);
                    }
                    Json(out).into_response()
                }
                ("POST", "clear") => {
                    let end = a1.end_row.map(|e| e + 1).unwrap_or(tab.rows.len()).min(tab.rows.len());
                    if a1.row == 0 && a1.col == 0 && a1.end_row.is_none() {
                        tab.rows.clear();
                    } else {
                        for r in tab.rows.iter_mut().take(end).skip(a1.row) {
                            r.truncate(a1.col);
                        }
                    }
                    Json(json!({"spreadsheetId": id, "clearedRange": range})).into_response()
                }
                ("PUT", "") | ("POST", "append") => {
                    if !valid_option(&q.value_input_option) {
                        return needs_option();
                    }
                    if action == "append" && !matches!(q.insert_data_option.as_deref(), None | Some("OVERWRITE" | "INSERT_ROWS")) {
                        return api_error(400, "INVALID_ARGUMENT", "insertDataOption must be OVERWRITE or INSERT_ROWS");
                    }
                    let vr: ValueRange = match serde_json::from_slice(&body) {
                        Ok(v) => v,
                        Err(e) => return api_error(400, "INVALID_ARGUMENT", format!("Invalid JSON payload received. {e}")),
                    };
                    if vr.major_dimension.as_deref().is_some_and(|d| d != "ROWS") {
                        return api_error(400, "INVALID_ARGUMENT", "the sandbox takes majorDimension ROWS only");
                    }
                    if action == "append" {
                        let table_end = tab.rows.iter().rposition(|r| r.iter().any(|v| v != "")).map_or(0, |p| p + 1);
                        let row = table_end.max(a1.row);
                        let table_range = a1_name(&a1.sheet, 0, a1.col, table_end, tab.rows.iter().map(Vec::len).max().unwrap_or(1));
                        write_cells(tab, row, a1.col, &vr.values);
                        Json(json!({"spreadsheetId": id, "tableRange": table_range, "updates": updates(&id, &a1.sheet, row, a1.col, &vr.values)})).into_response()
                    } else {
                        write_cells(tab, a1.row, a1.col, &vr.values);
                        Json(updates(&id, &a1.sheet, a1.row, a1.col, &vr.values)).into_response()
                    }
                }
                _ => api_error(404, "NOT_FOUND", "Method not found."),
            }
        }
        _ => api_error(404, "NOT_FOUND", "Method not found."),
    }
}

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .route(
            "/v4/spreadsheets/{*rest}",
            get(spreadsheets).put(spreadsheets).post(spreadsheets),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY + 1024))
}

pub fn control_routes() -> Router<Sandbox> {
    Router::new().route("/quota", post(set_quota))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1_ranges_parse_like_sheets() {
        assert_eq!(
            parse_a1("Sheet1").unwrap(),
            A1 {
                sheet: "Sheet1".into(),
                row: 0,
                col: 0,
                end_row: None,
                end_col: None
            }
        );
        assert_eq!(
            parse_a1("'My tab'!B3:D").unwrap(),
            A1 {
                sheet: "My tab".into(),
                row: 2,
                col: 1,
                end_row: None,
                end_col: Some(3)
            }
        );
        assert_eq!(
            parse_a1("S!1:1").unwrap(),
            A1 {
                sheet: "S".into(),
                row: 0,
                col: 0,
                end_row: Some(0),
                end_col: None
            }
        );
        assert_eq!(parse_a1("S!A5").unwrap().end_row, Some(4));
        assert_eq!(parse_a1("'S'!A:A").unwrap().end_col, Some(0));
        assert!(parse_a1("S!:").is_err());
        assert_eq!(col_name(0), "A");
        assert_eq!(col_name(27), "AB");
        assert_eq!(col_index("AB"), Some(27));
        assert_eq!(a1_name("Stats 2026", 0, 0, 2, 3), "'Stats 2026'!A1:C2");
    }

    #[test]
    fn the_seeded_service_account_loads() {
        assert_eq!(Google::seeded().service_accounts.len(), 1);
    }
}
