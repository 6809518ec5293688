//! The house rules, checked on the source tree (as rust-analyzer's tidy
//! test does): every file says what it is for in a `//!` line; every
//! connector has the common file roles, is registered by the default
//! build, and reaches HTTP only through its run's client; a crate depends only on crates
//! below it; no module of a crate imports, through others, itself; the
//! job state machine is the same in the enum, the migrations and the
//! chart in ARCHITECTURE.md.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The crates from the bottom up, each with the Ferry crates it may depend
/// on (normal dependencies; tests may use anything).
const LAYERS: &[(&str, &[&str])] = &[
    ("ferry-core", &[]),
    ("ferry-sandbox", &["ferry-core"]),
    ("ferry-store", &["ferry-core"]),
    ("ferry-queue", &["ferry-core", "ferry-store"]),
    (
        "ferry-scheduler",
        &["ferry-core", "ferry-store", "ferry-queue"],
    ),
    (
        "ferry-worker",
        &["ferry-core", "ferry-store", "ferry-queue"],
    ),
    ("ferry-connectors", &["ferry-core", "ferry-sandbox"]),
    ("ferry-api", &["ferry-core", "ferry-store", "ferry-queue"]),
    (
        "ferry-node",
        &[
            "ferry-core",
            "ferry-store",
            "ferry-queue",
            "ferry-scheduler",
            "ferry-worker",
            "ferry-api",
        ],
    ),
    (
        "ferry",
        &[
            "ferry-core",
            "ferry-store",
            "ferry-queue",
            "ferry-api",
            "ferry-node",
            "ferry-connectors",
            "ferry-sandbox",
        ],
    ),
];

/// Dependencies that only a feature turns on, and the feature: the sandbox
/// never reaches a library crate's build outside its tests.
const OPTIONAL_ONLY: &[(&str, &str, &str)] = &[
    ("ferry-connectors", "ferry-sandbox", "testkit"),
    ("ferry", "ferry-sandbox", "sandbox"),
];

/// Files every connector has (`verify.rs` too if it takes webhooks).
const CONNECTOR_ROLES: &[&str] = &["mod.rs", "config.rs", "client.rs", "job.rs", "tests.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn crate_dirs() -> Vec<(String, PathBuf)> {
    let mut dirs = vec![("ferry".to_string(), PathBuf::from(ROOT))];
    for e in fs::read_dir(Path::new(ROOT).join("crates"))
        .expect("crates/")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        dirs.push((name, e.path()));
    }
    dirs.sort();
    dirs
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn rel(p: &Path) -> String {
    p.strip_prefix(ROOT).unwrap_or(p).display().to_string()
}

#[test]
fn every_file_opens_with_what_it_is_for() {
    let mut files = Vec::new();
    for sub in ["src", "tests", "benches", "examples"] {
        rust_files(&Path::new(ROOT).join(sub), &mut files);
    }
    for (_, dir) in crate_dirs().iter().skip(1) {
        rust_files(&dir.join("src"), &mut files);
    }
    assert!(files.len() > 100, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = read(f);
            let first = text.lines().find(|l| !l.trim().is_empty());
            !first.is_some_and(|l| l.starts_with("//!"))
        })
        .map(|f| rel(f))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` line: {missing:?}"
    );
}

#[test]
fn every_connector_has_the_common_file_roles() {
    let src = Path::new(ROOT).join("crates/ferry-connectors/src");
    let mut connectors = 0;
    for e in fs::read_dir(&src).expect("connectors").flatten() {
        let dir = e.path();
        if !dir.is_dir() {
            continue;
        }
        connectors += 1;
        let has = |f: &str| dir.join(f).is_file();
        for role in CONNECTOR_ROLES {
            assert!(has(role), "{} lacks {role}", rel(&dir));
        }
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        let takes_webhooks = files.iter().any(|f| read(f).contains("fn verify_webhook"));
        assert_eq!(
            has("verify.rs"),
            takes_webhooks,
            "{}: verify.rs is where a connector that takes webhooks verifies them",
            rel(&dir)
        );
    }
    assert!(connectors >= 6, "found {connectors} connectors");
}

/// Every connector folder is a connector the default build registers: a
/// folder whose feature is left out of `default` (its code and its tests
/// then compile out, and `cargo test` passes with none of them run) or
/// whose registration line is missing fails here instead.
#[test]
fn every_connector_folder_is_registered_by_default() {
    let src = Path::new(ROOT).join("crates/ferry-connectors/src");
    let manifest = read(&Path::new(ROOT).join("crates/ferry-connectors/Cargo.toml"));
    let default = manifest
        .lines()
        .find(|l| l.starts_with("default = "))
        .expect("ferry-connectors has default features");
    let registry = ferry_connectors::builtin().expect("the built-in connectors register");
    let registered: BTreeSet<String> = registry.all().map(|r| r.manifest().id.clone()).collect();
    let mut folders = BTreeSet::new();
    for e in fs::read_dir(&src).expect("connectors").flatten() {
        if !e.path().is_dir() {
            continue;
        }
        let id = e.file_name().to_string_lossy().to_string();
        assert!(
            default.contains(&format!("\"{id}\"")),
            "crates/ferry-connectors/src/{id} has no feature in `default`: its code and tests are compiled out"
        );
        assert!(
            registered.contains(&id),
            "crates/ferry-connectors/src/{id} is not registered in builtin()"
        );
        folders.insert(id);
    }
    assert_eq!(
        registered, folders,
        "every registered connector has its folder"
    );
}

/// A connector reaches HTTP only through `RunContext::http`: no file of a
/// connector (its tests aside) names the HTTP library or builds a client.
#[test]
fn connectors_reach_http_only_through_the_run_s_client() {
    let src = Path::new(ROOT).join("crates/ferry-connectors/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut checked = 0;
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // The transport itself, the test kit, and tests may use reqwest.
        if matches!(name, "http.rs" | "testkit.rs" | "tests.rs") {
            continue;
        }
        checked += 1;
        let code = code_of(&read(&f));
        for forbidden in ["reqwest", "HttpClient::new(", "hyper::", "TcpStream"] {
            assert!(
                !code.contains(forbidden),
                "{} uses {forbidden}: a connector's calls go through ctx.http",
                rel(&f)
            );
        }
    }
    assert!(checked > 20, "checked {checked} files");
}

/// Every metric the alert rules and the dashboard in `deploy/` use is one
/// a node serves: a renamed metric cannot silently empty an alert.
#[test]
fn deploy_uses_only_metrics_ferry_serves() {
    let mut served = String::new();
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("crates"), &mut files);
    for f in &files {
        served.push_str(&read(f));
    }
    let mut used = BTreeSet::new();
    for file in [
        "deploy/prometheus/ferry-alerts.yml",
        "deploy/prometheus/ferry-alerts.test.yml",
        "deploy/grafana/ferry-dashboard.json",
    ] {
        let text = read(&Path::new(ROOT).join(file));
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(at) = text[i..].find("ferry_") {
            let start = i + at;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
                end += 1;
            }
            let before = start.checked_sub(1).map(|b| bytes[b]);
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
                used.insert(text[start..end].to_string());
            }
            i = end.max(start + 1);
        }
    }
    assert!(used.len() >= 10, "found {used:?}");
    for name in &used {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            served.contains(&format!("\"{base}\"")),
            "deploy/ uses {name}, which no node serves"
        );
    }
}

/// The `[dependencies]` table of a manifest: Ferry crate → optional.
fn ferry_dependencies(manifest: &str) -> BTreeMap<String, bool> {
    let mut deps = BTreeMap::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if !in_deps || !line.starts_with("ferry") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let name = name.split('.').next().unwrap_or_default().to_string();
        deps.insert(name, line.contains("optional = true"));
    }
    deps
}

#[test]
fn a_crate_depends_only_on_the_crates_below_it() {
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    for (name, dir) in crate_dirs() {
        let allowed = layers
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} is not in tests/tidy.rs LAYERS"));
        let manifest = read(&dir.join("Cargo.toml"));
        for (dep, optional) in ferry_dependencies(&manifest) {
            assert!(
                allowed.contains(&dep.as_str()),
                "{name} depends on {dep}, which is not below it"
            );
            if let Some((_, _, feature)) = OPTIONAL_ONLY
                .iter()
                .find(|(c, d, _)| *c == name && *d == dep)
            {
                assert!(
                    optional,
                    "{name}: {dep} only behind the `{feature}` feature"
                );
                assert!(
                    manifest.contains(&format!("dep:{dep}")),
                    "{name}: {feature}"
                );
            } else {
                assert!(
                    dep != "ferry-sandbox",
                    "{name} depends on the sandbox outside its tests"
                );
            }
        }
    }
}

/// `crate::a::b::Item` paths in `text`, with groups expanded:
/// `crate::a::{b::C, D}` is `a::b::C` and `a::D`.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        let head = segments(rest);
        let after: usize = head.iter().map(|s| s.len() + 2).sum();
        match rest.get(after..).and_then(|r| r.strip_prefix('{')) {
            Some(group) => {
                let end = group.find('}').unwrap_or(group.len());
                for part in group[..end].split(',') {
                    let mut path = head.clone();
                    path.extend(segments(part.trim()));
                    out.push(path);
                }
            }
            None if rest.starts_with('{') => {
                let end = rest.find('}').unwrap_or(rest.len());
                for part in rest[1..end].split(',') {
                    out.push(segments(part.trim()));
                }
            }
            None => out.push(head),
        }
    }
    out
}

fn segments(s: &str) -> Vec<String> {
    s.split("::")
        .map(|seg| {
            seg.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .take_while(|seg| !seg.is_empty())
        .collect()
}

/// Lines outside `#[cfg(test)]` modules and doc comments.
fn code_of(text: &str) -> String {
    let cut = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..cut]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_module_imports_itself_through_others() {
    for (name, dir) in crate_dirs().iter().skip(1) {
        let src = dir.join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        // Module path of each file: src/a/b.rs and src/a/b/mod.rs are a::b.
        let module_of = |f: &Path| -> Vec<String> {
            let r = f.strip_prefix(&src).expect("under src");
            let mut parts: Vec<String> = r
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            parts
        };
        let modules: BTreeMap<Vec<String>, PathBuf> =
            files.iter().map(|f| (module_of(f), f.clone())).collect();
        // Items a module re-exports, and where they live: `crate::Queue`
        // is `jobs`' Queue, `crate::keys::SeenKeys` is `keys::seen`'s.
        let mut reexports: BTreeMap<(Vec<String>, String), Vec<String>> = BTreeMap::new();
        for f in &files {
            let here = module_of(f);
            for line in read(f).lines() {
                let Some(path) = line
                    .strip_prefix("pub use ")
                    .or_else(|| line.strip_prefix("pub(crate) use "))
                else {
                    continue;
                };
                let path = path.trim_end_matches(';');
                let (module, items) = match path.split_once("::{") {
                    Some((m, items)) => (m, items.trim_end_matches('}').to_string()),
                    None => match path.rsplit_once("::") {
                        Some((m, item)) => (m, item.to_string()),
                        None => continue,
                    },
                };
                let mut target = here.clone();
                let mut segs = module.split("::").peekable();
                if segs.peek() == Some(&"crate") {
                    target.clear();
                    segs.next();
                }
                for seg in segs {
                    match seg {
                        "self" => {}
                        "super" => {
                            target.pop();
                        }
                        s => target.push(s.to_string()),
                    }
                }
                if !modules.contains_key(&target) {
                    continue; // another crate's items
                }
                for item in items.split(',') {
                    let item = item.trim().rsplit(" as ").next().unwrap_or("").trim();
                    reexports.insert((here.clone(), item.to_string()), target.clone());
                }
            }
        }
        let resolve = |path: &[String]| -> Option<Vec<String>> {
            // The longest prefix of the path that is a module, followed
            // through the re-export of the next segment if there is one.
            let n = (0..=path.len())
                .rev()
                .find(|n| modules.contains_key(&path[..*n]))?;
            let mut m = path[..n].to_vec();
            if let Some(item) = path.get(n) {
                if let Some(t) = reexports.get(&(m.clone(), item.clone())) {
                    m = t.clone();
                }
            }
            Some(m)
        };
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for f in &files {
            let from = module_of(f);
            if from.is_empty() {
                continue;
            }
            for path in crate_paths(&code_of(&read(f))) {
                if let Some(to) = resolve(&path) {
                    // A module's own children and parents are its rooms.
                    if !to.is_empty() && !to.starts_with(&from) && !from.starts_with(&to) {
                        edges.entry(from.clone()).or_default().insert(to);
                    }
                }
            }
        }
        // Depth-first search for a cycle.
        fn visit(
            m: &Vec<String>,
            edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
            stack: &mut Vec<Vec<String>>,
            done: &mut BTreeSet<Vec<String>>,
        ) -> Option<Vec<Vec<String>>> {
            if let Some(i) = stack.iter().position(|s| s == m) {
                let mut cycle = stack[i..].to_vec();
                cycle.push(m.clone());
                return Some(cycle);
            }
            if done.contains(m) {
                return None;
            }
            stack.push(m.clone());
            for next in edges.get(m).into_iter().flatten() {
                if let Some(c) = visit(next, edges, stack, done) {
                    return Some(c);
                }
            }
            stack.pop();
            done.insert(m.clone());
            None
        }
        let mut done = BTreeSet::new();
        for m in edges.keys() {
            if let Some(cycle) = visit(m, &edges, &mut Vec::new(), &mut done) {
                let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
                panic!("{name}: an import circle: {}", names.join(" → "));
            }
        }
    }
}

#[test]
fn the_import_circle_check_sees_a_circle() {
    let paths =
        crate_paths("use crate::{a::B, c};\nuse crate::f::{g::H, I};\nfn f() { crate::d::e(); }");
    let words = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        paths,
        vec![
            words(&["a", "B"]),
            words(&["c"]),
            words(&["f", "g", "H"]),
            words(&["f", "I"]),
            words(&["d", "e"]),
        ]
    );
}

/// The values a migration's CHECK allows `column` (`column = 'a' OR
/// column = 'b' …`), in order.
fn check_list(sql: &str, column: &str) -> Vec<String> {
    let at = sql
        .find(&format!("CHECK ({column} = "))
        .unwrap_or_else(|| panic!("no CHECK on {column}"));
    let rest = &sql[at + "CHECK (".len()..];
    let list = &rest[..rest.find(')').expect(")")];
    list.split(" OR ")
        .map(|term| {
            let (col, value) = term.split_once(" = ").expect("column = 'value'");
            assert_eq!(col.trim(), column, "{term}");
            value.trim().trim_matches('\'').to_string()
        })
        .collect()
}

#[test]
fn the_state_machine_is_one_in_the_enum_the_migrations_and_the_chart() {
    let states: Vec<String> = ferry_core::JobState::ALL
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    let finished: Vec<String> = ferry_core::RunStatus::FINISHED
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    for engine in ["sqlite", "postgres"] {
        let sql = read(&Path::new(ROOT).join(format!("migrations/{engine}/0008_state_checks.sql")));
        assert_eq!(check_list(&sql, "state"), states, "{engine} jobs.state");
        assert_eq!(check_list(&sql, "status"), finished, "{engine} runs.status");
    }
    let doc = read(&Path::new(ROOT).join("ARCHITECTURE.md"));
    let chart = doc
        .split("stateDiagram-v2")
        .nth(1)
        .and_then(|c| c.split("```").next())
        .expect("a state chart in ARCHITECTURE.md");
    let mut drawn = BTreeSet::new();
    for line in chart.lines().filter(|l| l.contains("-->")) {
        let (from, rest) = line.split_once("-->").expect("-->");
        let to = rest.split(':').next().unwrap_or("");
        for s in [from.trim(), to.trim()] {
            if s != "[*]" {
                drawn.insert(s.to_string());
            }
        }
    }
    let known: BTreeSet<String> = states.iter().chain(&finished).cloned().collect();
    assert_eq!(drawn, known, "the chart's states are the enum's");
}
