//! `ferry demo`, the README's first command, through the binary: every
//! phase runs, and what the demo says it accepted, it delivered — the
//! webhooks taken while its store was cut off included.

use std::process::Command;

/// The number in `line` right after `label` (`"40 webhooks"` → 40).
fn figure(out: &str, label: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in the demo's output:\n{out}"));
    line.trim_start()[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no figure after {label:?} in {line:?}"))
}

#[test]
fn the_demo_runs_every_phase_and_delivers_what_it_accepted() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["demo", "--duration", "30s"])
        .env_remove("FERRY_LOG")
        .output()
        .expect("run ferry demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");

    // Bad requests are refused with the reason.
    assert!(stdout.contains("bad cron            -> 422"), "{stdout}");
    assert!(stdout.contains("forged signature    -> 401"), "{stdout}");
    assert!(stdout.contains("malformed body      -> 400"), "{stdout}");

    // The storm: 300 distinct events accepted, the 30 repeats answered
    // with the first event's id.
    assert!(
        stdout.contains("webhooks accepted        300 (+30 duplicates"),
        "{stdout}"
    );

    // The storage outage: readiness says degraded while the store is cut
    // off, webhooks are still accepted, and every one is delivered after.
    assert!(stdout.contains("store DOWN: /readyz degraded"), "{stdout}");
    let accepted = figure(&stdout, "storage outage");
    assert_eq!(accepted, 40, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{accepted} webhooks accepted while the store was down, {accepted} delivered after it returned; /readyz now ready, spool depth 0"
        )),
        "{stdout}"
    );

    // Operational events: the outage and the fragile integration's dead
    // letters were announced.
    let events = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("operational events"))
        .unwrap_or_else(|| panic!("no operational events line:\n{stdout}"));
    assert!(events.contains("node.store_degraded ×1"), "{events}");
    assert!(events.contains("node.store_recovered ×1"), "{events}");
    assert!(events.contains("failure_group.opened"), "{events}");

    // A safe release: shadow diffs, then a canary that rolls itself back.
    let rollout = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("rollout webhook 1 → 2"))
        .unwrap_or_else(|| panic!("no rollout line:\n{stdout}"));
    assert!(
        rollout.contains("rolled_back: shadow compared"),
        "{rollout}"
    );
    assert!(
        rollout.contains("rolled back by analysis of step 1"),
        "{rollout}"
    );
    assert!(!rollout.contains(", 0 differing"), "{rollout}");
    assert!(stdout.contains("-> rollout shadow:"), "{stdout}");

    // Every connector ran against the sandbox.
    assert!(figure(&stdout, "platform contacts") > 0, "{stdout}");
    let registry = ferry_connectors::builtin().expect("the built-in connectors");
    let mut connectors: Vec<&str> = registry.all().map(|r| r.manifest().id.as_str()).collect();
    connectors.dedup();
    assert!(connectors.len() >= 6, "{connectors:?}");
    for connector in connectors {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{connector} ")))
            .unwrap_or_else(|| panic!("no summary line for {connector}:\n{stdout}"));
        let succeeded: u64 = line
            .split("runs succeeded")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no run count in {line:?}"));
        assert!(succeeded > 0, "{connector} never succeeded:\n{stdout}");
    }
}
