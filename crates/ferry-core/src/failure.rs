//! Failure fingerprints: the key that groups a thousand failed attempts
//! into the few causes behind them (Sentry's grouping, on our errors).
//!
//! A fingerprint is the connector, its version, the error class and the
//! error text with what changes from one failure to the next masked: ids
//! (any word holding a digit, or a long token), numbers (but the status
//! in `HTTP 503`), e-mail addresses, and the path and query of URLs
//! (their scheme and host stay). Timestamps hold digits, so they are ids.

use sha2::{Digest, Sha256};

/// Masked messages are cut to this many characters.
const MAX_MESSAGE: usize = 300;

/// A failure's group key and the masked text it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// 32 lower-case hex characters.
    pub id: String,
    pub message: String,
}

/// The fingerprint of one failed attempt.
pub fn fingerprint(connector: &str, version: &str, class: &str, error: &str) -> Fingerprint {
    let message = mask(error);
    let mut h = Sha256::new();
    for part in [connector, version, class, message.as_str()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let id = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Fingerprint { id, message }
}

/// Whether `s` has a fingerprint's shape (32 lower-case hex digits).
pub fn is_fingerprint(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric()
        || matches!(
            c,
            '_' | '-' | '.' | '@' | '+' | '/' | ':' | '%' | '=' | '?' | '&'
        )
}

/// `error` with its varying parts masked (`#` numbers, `<id>`, `<email>`,
/// URLs as `scheme://host/…`), whitespace collapsed.
pub fn mask(error: &str) -> String {
    let mut out = String::with_capacity(error.len().min(MAX_MESSAGE));
    let mut previous = String::new();
    let mut chars = error.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            out.push(' ');
            continue;
        }
        if !is_word(c) {
            out.push(c);
            chars.next();
            continue;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if !is_word(c) {
                break;
            }
            word.push(c);
            chars.next();
        }
        let masked = mask_word(&word, &previous);
        out.push_str(&masked);
        previous = word;
        if out.len() > MAX_MESSAGE {
            break;
        }
    }
    let mut m: String = out.trim().chars().take(MAX_MESSAGE).collect();
    if m.is_empty() {
        m.push_str("(no message)");
    }
    m
}

fn mask_word(word: &str, previous: &str) -> String {
    // Punctuation that ends a sentence or a clause stays outside the mask.
    let core = word.trim_end_matches(['.', ':', ',', ';']);
    let tail = &word[core.len()..];
    let masked = if let Some((scheme, rest)) = core.split_once("://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit('@').next().unwrap_or(host);
        if rest.len() > host.len() {
            format!("{scheme}://{host}/…")
        } else {
            format!("{scheme}://{host}")
        }
    } else if core.contains('@') && core.contains('.') {
        "<email>".into()
    } else if core.chars().all(|c| c.is_ascii_digit()) && !core.is_empty() {
        if previous.eq_ignore_ascii_case("http") && core.len() == 3 {
            core.to_string()
        } else {
            "#".into()
        }
    } else if core.chars().any(|c| c.is_ascii_digit()) {
        // Mixed digits: an id, a timestamp, a version, a number with a unit.
        let only_number = core
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | ',' | '-' | ':' | '+'));
        if only_number {
            "#".into()
        } else {
            "<id>".into()
        }
    } else if core.len() >= 24
        && core
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        "<id>".into()
    } else {
        core.to_string()
    };
    format!("{masked}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_changes_between_failures_is_masked() {
        assert_eq!(
            mask("HTTP 500: internal error (request id 7f9e2c1a-55aa-4b7e-9d0e-1c2b3a4d5e6f, took 1532 ms)"),
            "HTTP 500: internal error (request id <id>, took # ms)"
        );
        assert_eq!(
            mask("HTTP 503: upstream req_8f3a9c at 2026-12-05T05:45:38Z"),
            "HTTP 503: upstream <id> at <id>"
        );
        assert_eq!(
            mask("contact ada@example.com is suppressed; 42 records left"),
            "contact <email> is suppressed; # records left"
        );
        assert_eq!(
            mask("connection failed: https://api.typeform.com/forms/abc/responses?before=tok123 refused"),
            "connection failed: https://api.typeform.com/… refused"
        );
        assert_eq!(
            mask("token   aGVsbG8gd29ybGQgdGhpcyBpcyBsb25n\n expired."),
            "token <id> expired."
        );
        assert_eq!(mask("   "), "(no message)");
    }

    #[test]
    fn one_cause_is_one_fingerprint_and_another_cause_another() {
        let a = fingerprint(
            "webhook",
            "1.0.0",
            "transient",
            "HTTP 500: boom (request id 1a2b3c)",
        );
        let b = fingerprint(
            "webhook",
            "1.0.0",
            "transient",
            "HTTP 500: boom (request id 9z8y7x)",
        );
        assert_eq!(a, b);
        assert_eq!(a.id.len(), 32);
        let other_status = fingerprint(
            "webhook",
            "1.0.0",
            "transient",
            "HTTP 502: boom (request id 1a2b3c)",
        );
        assert_ne!(a.id, other_status.id, "the status is part of the cause");
        let other_version = fingerprint(
            "webhook",
            "2.0.0",
            "transient",
            "HTTP 500: boom (request id 1a2b3c)",
        );
        assert_ne!(a.id, other_version.id);
        let other_class = fingerprint(
            "webhook",
            "1.0.0",
            "permanent",
            "HTTP 500: boom (request id 1a2b3c)",
        );
        assert_ne!(a.id, other_class.id);
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "word ".repeat(500);
        assert!(mask(&long).chars().count() <= MAX_MESSAGE);
    }
}
