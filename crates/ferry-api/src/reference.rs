//! The HTTP reference in Markdown (`docs/http-reference.md`), rendered
//! from the OpenAPI document the router is built with, so the reference
//! says what the server does. A test fails when the file in the
//! repository differs from what this renders; `ferry openapi --markdown`
//! prints it.

use std::fmt::Write as _;

use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The reference for `doc` (an OpenAPI 3.1 document as JSON).
pub fn markdown(doc: &Value) -> String {
    let mut out = String::new();
    let title = doc["info"]["title"].as_str().unwrap_or("Ferry");
    let _ = writeln!(out, "# {title} — HTTP reference\n");
    out.push_str(
        "Rendered from the OpenAPI document the server is built with \
         (`ferry openapi --markdown`; a test keeps this file equal to it). \
         The contract around it (authentication, errors, lists, the CLI, \
         the `webhook` connector) is in `docs/api.md`.\n\n",
    );
    out.push_str(
        "Every `/v1` endpoint except `/v1/hooks/*` needs `Authorization: Bearer <token>`. \
         Errors are `{\"error\":{\"code\":\"…\",\"message\":\"…\"}}`.\n",
    );
    let empty = serde_json::Map::new();
    let paths = doc["paths"].as_object().unwrap_or(&empty);
    let mut by_tag: Vec<(String, String, String, &Value)> = Vec::new();
    for (path, item) in paths {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
                by_tag.push((tag, path.clone(), m.to_uppercase(), op));
            }
        }
    }
    by_tag.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    let mut current = None;
    for (tag, path, method, op) in by_tag {
        if current.as_deref() != Some(tag.as_str()) {
            let _ = writeln!(out, "\n## {tag}");
            current = Some(tag);
        }
        operation(&mut out, &method, &path, op);
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        out.push_str("\n## Schemas\n");
        for (name, schema) in schemas {
            schema_section(&mut out, name, schema);
        }
    }
    out
}

fn operation(out: &mut String, method: &str, path: &str, op: &Value) {
    let _ = writeln!(out, "\n### `{method} {path}`\n");
    let text = [&op["summary"], &op["description"]]
        .iter()
        .filter_map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join("\n\n");
    if !text.is_empty() {
        let _ = writeln!(out, "{}\n", text.trim());
    }
    if op["security"].as_array().is_some_and(|s| {
        s.iter()
            .all(|x| x.as_object().is_some_and(|o| o.is_empty()))
    }) {
        out.push_str("No token.\n\n");
    }
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        out.push_str("| parameter | in | required | type | description |\n|---|---|---|---|---|\n");
        for p in params {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                p["name"].as_str().unwrap_or(""),
                p["in"].as_str().unwrap_or(""),
                if p["required"].as_bool().unwrap_or(false) {
                    "yes"
                } else {
                    "no"
                },
                type_of(&p["schema"]),
                cell(p["description"].as_str().unwrap_or("")),
            );
        }
        out.push('\n');
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        for (mime, c) in content {
            let _ = writeln!(out, "Request body (`{mime}`): {}\n", type_of(&c["schema"]));
        }
    }
    if let Some(responses) = op["responses"].as_object() {
        out.push_str("| status | meaning | body |\n|---|---|---|\n");
        for (status, r) in responses {
            let body = r["content"]
                .as_object()
                .and_then(|c| c.values().next())
                .map(|c| type_of(&c["schema"]))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {status} | {} | {body} |",
                cell(r["description"].as_str().unwrap_or(""))
            );
        }
    }
}

fn schema_section(out: &mut String, name: &str, schema: &Value) {
    let _ = writeln!(out, "\n### `{name}`\n");
    if let Some(d) = schema["description"].as_str() {
        let _ = writeln!(out, "{}\n", d.trim());
    }
    if let Some(values) = schema["enum"].as_array() {
        let names: Vec<String> = values.iter().map(|v| format!("`{}`", plain(v))).collect();
        let _ = writeln!(out, "One of {}.", names.join(", "));
        return;
    }
    let Some(props) = schema["properties"].as_object() else {
        let _ = writeln!(out, "{}", type_of(schema));
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    out.push_str("| field | type | required | description |\n|---|---|---|---|\n");
    for (field, p) in props {
        let _ = writeln!(
            out,
            "| `{field}` | {} | {} | {} |",
            type_of(p),
            if required.contains(&field.as_str()) {
                "yes"
            } else {
                "no"
            },
            cell(p["description"].as_str().unwrap_or("")),
        );
    }
}

/// A schema in a few words: a `$ref`'s name, an array of something, a
/// type with its format, or a union.
fn type_of(s: &Value) -> String {
    if let Some(r) = s["$ref"].as_str() {
        return format!("`{}`", r.rsplit('/').next().unwrap_or(r));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(parts) = s[key].as_array() {
            let parts: Vec<String> = parts.iter().map(type_of).collect();
            return parts.join(" or ");
        }
    }
    let ty = match &s["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts.iter().map(plain).collect::<Vec<_>>().join(" or "),
        _ => return "any".to_string(),
    };
    if ty.starts_with("array") {
        return format!("array of {}", type_of(&s["items"]));
    }
    match s["format"].as_str() {
        Some(f) => format!("{ty} ({f})"),
        None => ty,
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Text fit for a table cell: one line, no bare pipes.
fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/http-reference.md` is what the server's own document renders
    /// to. After an API change, `ferry openapi --markdown >
    /// docs/http-reference.md` brings it up to date.
    #[test]
    fn the_reference_in_the_repository_matches_the_openapi_document() {
        let doc = serde_json::to_value(crate::routes::openapi()).expect("document");
        let rendered = markdown(&doc);
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/http-reference.md");
        let stored = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            stored == rendered,
            "docs/http-reference.md differs from the OpenAPI document: run \
             `cargo run -- openapi --markdown > docs/http-reference.md`"
        );
        for path in doc["paths"].as_object().expect("paths").keys() {
            assert!(stored.contains(&format!(" {path}`")), "{path} missing");
        }
    }

    #[test]
    fn types_read_as_words() {
        let s =
            serde_json::json!({"type": "array", "items": {"$ref": "#/components/schemas/RunView"}});
        assert_eq!(type_of(&s), "array of `RunView`");
        let s = serde_json::json!({"type": ["string", "null"], "format": "uuid"});
        assert_eq!(type_of(&s), "string or null (uuid)");
        assert_eq!(cell("a |\n b"), "a \\| b");
    }
}
