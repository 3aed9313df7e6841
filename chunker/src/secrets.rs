//! Secrets by content: the one rule table that finds credentials in a file's text, and the
//! redaction that replaces them (`[REDACTED:aws-access-key]`) without moving a line, so
//! chunk line numbers stay those of the file on disk. No IO.
//!
//! The rules follow gitleaks' maintained rule set (github.com/gitleaks/gitleaks,
//! `config/gitleaks.toml`, MIT) for the formats that are high-signal on their own: a
//! provider's fixed prefix and length, or a PEM private-key block. The Rust crates that
//! package such rules were young (0.x, months old) or far larger than this table, so the
//! table lives here, with each rule's source beside it. Generic `password = "..."`
//! assignments are gated: the value must look random (entropy and character classes), so
//! `password = "changeme"` in docs and `password = get_password()` in code are left alone.
//! Recall and false positives are measured on `chunker/tests/secrets/` (see
//! `chunker/tests/secrets.rs`).

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

/// One rule: a name shown in the redaction marker and a pattern. Where the pattern has a
/// capture group, only the group is redacted (the value of an assignment, not its name).
struct Rule {
    id: &'static str,
    pattern: &'static str,
    /// Generic rules also need the value to look random ([`looks_random`]).
    gated: bool,
}

/// Ordered by precedence: where two rules overlap, the earlier match wins, and at one start
/// the earlier rule wins.
const RULES: &[Rule] = &[
    // gitleaks `private-key`: a PEM block from BEGIN through END, any key type (RSA, EC,
    // DSA, OPENSSH, ENCRYPTED, PGP's "PRIVATE KEY BLOCK"). The body must be 64+ characters
    // of PEM text, so code that merely names the header (`"-----BEGIN PRIVATE KEY-----"` in
    // a PEM parser) is not a key.
    Rule {
        id: "private-key",
        pattern: r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/= \t\r\n:,._()-]{64,}?-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----",
        gated: false,
    },
    // gitleaks `aws-access-token`: access key ids (AKIA long-lived, ASIA temporary, ...).
    // Base32 alphabet after the 4-character prefix, 20 characters in all.
    Rule {
        id: "aws-access-key",
        pattern: r"(?-u:\b)((?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})(?-u:\b)",
        gated: false,
    },
    // gitleaks `github-pat`, `github-oauth`, `github-app-token`, `github-refresh-token`
    // (ghp_/gho_/ghu_/ghs_/ghr_ + 36) and `github-fine-grained-pat` (github_pat_ + 82).
    Rule {
        id: "github-token",
        pattern: r"(?-u:\b)(gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})(?-u:\b)",
        gated: false,
    },
    // gitleaks `gitlab-pat` (glpat-) and the other GitLab token prefixes of the same shape.
    Rule {
        id: "gitlab-token",
        pattern: r"(?-u:\b)((?:glpat|gldt|glrt|glptt|glft|glsoat)-[A-Za-z0-9_-]{20,64})",
        gated: false,
    },
    // gitleaks `slack-bot-token`, `slack-user-token`, `slack-app-token` (xoxb-, xoxp-,
    // xoxe-, xapp-, ...: numeric team/user ids then a random tail) and `slack-webhook-url`.
    Rule {
        id: "slack-token",
        pattern: r"(?-u:\b)(xox[abeoprs]-[0-9]{6,13}-[A-Za-z0-9-]{10,120}|xapp-[0-9]-[A-Z0-9]+-[0-9]+-[A-Za-z0-9]{20,}|hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{30,60})",
        gated: false,
    },
    // gitleaks `stripe-access-token`: secret and restricted keys, live and test.
    Rule {
        id: "stripe-key",
        pattern: r"(?-u:\b)((?:sk|rk)_(?:test|live|prod)_[A-Za-z0-9]{10,99})(?-u:\b)",
        gated: false,
    },
    // gitleaks `gcp-api-key`: Google API keys, AIza + 35.
    Rule {
        id: "google-api-key",
        pattern: r"(?-u:\b)(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)",
        gated: false,
    },
    // gitleaks `jwt`: three base64url parts, the first two JSON objects (`eyJ` is `{"`).
    // High-signal: a signed token is a bearer credential until it expires.
    Rule {
        id: "jwt",
        pattern: r"(?-u:\b)(eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})",
        gated: false,
    },
    // After gitleaks `generic-api-key`, narrowed: a name that says password, secret, token
    // or key, assigned (`=`, `:`, `:=`, `=>`, after an optional type: `PASSWORD: &str =`) a
    // quoted value, or an unquoted value that ends the line (.env, YAML, INI). Gated by
    // [`looks_random`].
    Rule {
        id: "generic-secret",
        pattern: r#"(?i)(?:passw(?:or)?d|(?-u:\b)pwd|secret|api[_-]?key|access[_-]?key|private[_-]?key|auth[_-]?key|token|credential)[A-Za-z0-9_.-]{0,30}["']?[ \t]*(?::[ \t]*&?(?:'static[ \t]+)?[A-Za-z0-9_:<>\[\]]+[ \t]*)?(?:=|:=|=>|:)[ \t]*(?:"([!#-~]{8,200})"|'([!-&(-~]{8,200})'|`([!-_a-~]{8,200})`|([A-Za-z0-9+/=_.~!@#$%^&*-]{8,200})[ \t]*[;,]?[ \t]*(?:\r?\n|$))"#,
        gated: true,
    },
];

/// Values that mark a placeholder, a test value or a name, not a secret (lower-cased
/// substrings). The words are the rule's own keywords and test words: a generated secret
/// holds one by chance about once in a million; `test-m2m-secret`, `refresh-2` and
/// `XXH3_kSecret` (found in real code) hold one by design. A human password that spells
/// one (`MySecretPass1!`) is missed: the price of no false positives.
const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "change_me",
    "change-me",
    "example",
    "placeholder",
    "your_",
    "your-",
    "xxxx",
    "****",
    "....",
    "<",
    "%s",
    "dummy",
    "redacted",
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "access",
    "refresh",
    "progress",
    "test",
    "sample",
    "fake",
    "mock",
];

/// Characters that mark code or a template, not a literal secret: escapes, braces,
/// calls (`\d{1,3}`, `${DB_PASSWORD}`, `{{ .Values.pw }}`, `f(x)`).
const CODE_CHARS: &[char] = &['\\', '{', '}', '(', ')'];

static COMPILED: LazyLock<Vec<(&'static Rule, Regex)>> = LazyLock::new(|| {
    RULES
        .iter()
        .filter_map(|rule| Regex::new(rule.pattern).ok().map(|re| (rule, re)))
        .collect()
});

/// One secret found: which rule, where (1-based line of its start).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Redaction {
    pub rule: &'static str,
    pub line: u32,
    /// The widths the lines the secret touched had before it was replaced, from `line` on:
    /// the replacement keeps every line in place but not its length, and an editor's
    /// positions on those lines are positions in the text the user sees.
    #[serde(skip)]
    pub original_widths: Vec<LineWidth>,
}

/// A line's length without its line break, in the two units editors count positions in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineWidth {
    pub utf8: u32,
    pub utf16: u32,
}

impl LineWidth {
    pub fn of(line: &str) -> LineWidth {
        let line = line.strip_suffix('\r').unwrap_or(line);
        LineWidth {
            utf8: u32::try_from(line.len()).unwrap_or(u32::MAX),
            utf16: u32::try_from(line.encode_utf16().count()).unwrap_or(u32::MAX),
        }
    }
}

impl Redaction {
    /// The original width of 0-based `row`, when this secret touched it.
    pub fn original_width(&self, row: usize) -> Option<LineWidth> {
        let first = (self.line as usize).checked_sub(1)?;
        self.original_widths.get(row.checked_sub(first)?).copied()
    }
}

/// The ids of every rule, in precedence order (for docs and tests).
pub fn rule_ids() -> Vec<&'static str> {
    RULES.iter().map(|r| r.id).collect()
}

/// Byte ranges of the secrets in `text` and the rule that found each, in file order, not
/// overlapping.
pub fn find(text: &str) -> Vec<(std::ops::Range<usize>, &'static str)> {
    let mut found: Vec<(std::ops::Range<usize>, usize)> = Vec::new();
    for (index, (rule, regex)) in COMPILED.iter().enumerate() {
        for caps in regex.captures_iter(text) {
            // The value group if the rule has one that matched, else the whole match.
            let Some(span) = (1..caps.len())
                .find_map(|i| caps.get(i))
                .or_else(|| caps.get(0))
            else {
                continue;
            };
            if rule.gated && !looks_random(span.as_str()) {
                continue;
            }
            found.push((span.range(), index));
        }
    }
    found.sort_by_key(|(range, index)| (range.start, *index));
    let mut kept: Vec<(std::ops::Range<usize>, &'static str)> = Vec::new();
    for (range, index) in found {
        if kept.last().is_some_and(|(last, _)| range.start < last.end) {
            continue;
        }
        kept.push((range, RULES[index].id));
    }
    kept
}

/// `text` with every secret replaced by `[REDACTED:<rule>]`, and what was replaced. A
/// secret that spans lines (a private-key block) keeps its newlines after the marker, so
/// every line after it keeps its number.
pub fn redact(text: String) -> (String, Vec<Redaction>) {
    let found = find(&text);
    if found.is_empty() {
        return (text, Vec::new());
    }
    let mut out = String::with_capacity(text.len());
    let mut redactions = Vec::with_capacity(found.len());
    let mut at = 0;
    let mut line = 1u32;
    for (range, rule) in found {
        let before = &text[at..range.start];
        line += before.matches('\n').count() as u32;
        out.push_str(before);
        out.push_str("[REDACTED:");
        out.push_str(rule);
        out.push(']');
        let newlines = text[range.clone()].matches('\n').count();
        for _ in 0..newlines {
            out.push('\n');
        }
        let row_start = text[..range.start].rfind('\n').map_or(0, |i| i + 1);
        let row_end = text[range.end..]
            .find('\n')
            .map_or(text.len(), |i| range.end + i);
        redactions.push(Redaction {
            rule,
            line,
            original_widths: text[row_start..row_end]
                .split('\n')
                .map(LineWidth::of)
                .collect(),
        });
        line += newlines as u32;
        at = range.end;
    }
    out.push_str(&text[at..]);
    (out, redactions)
}

/// A one-line summary for a warning: "2 secrets redacted (aws-access-key line 3, ...)".
pub fn summary(redactions: &[Redaction]) -> String {
    let shown: Vec<String> = redactions
        .iter()
        .take(5)
        .map(|r| format!("{} line {}", r.rule, r.line))
        .collect();
    let more = redactions.len().saturating_sub(shown.len());
    format!(
        "{} secret{} redacted ({}{})",
        redactions.len(),
        if redactions.len() == 1 { "" } else { "s" },
        shown.join(", "),
        if more > 0 {
            format!(", {more} more")
        } else {
            String::new()
        }
    )
}

/// Whether an assigned value looks like a generated secret rather than a word, a
/// placeholder or an expression. It needs a digit or a symbol other than `-_.`, and then
/// one of two ways in, both measured on the corpus:
/// - a password-like value: 8+ characters from 3+ classes (lower, upper, digit, symbol)
///   with at least 2.5 bits of entropy per character (`Tr0ub4dor&3x`; not `changeme`,
///   `password123`, `get_password`);
/// - a token-like value: 16+ characters with letters and digits and at least 3.0 bits per
///   character (hex and base64 keys; not `django.contrib.auth`).
pub fn looks_random(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) || looks_like_code(value) {
        return false;
    }
    let has = |f: fn(&char) -> bool| value.chars().any(|c| f(&c));
    let has_lower = has(char::is_ascii_lowercase);
    let has_upper = has(char::is_ascii_uppercase);
    let has_digit = has(char::is_ascii_digit);
    let has_symbol = has(|c| !c.is_ascii_alphanumeric());
    let classes = [has_lower, has_upper, has_digit, has_symbol]
        .iter()
        .filter(|&&b| b)
        .count();
    // Words joined by `-`, `_` or `.` (`X-Api-Key`, `settings.SECRET_KEY`) name a secret,
    // they are not one: a value needs a digit or a symbol beyond those joiners.
    if !has_digit && !value.chars().any(|c| "!@#$%^&*+/=?~".contains(c)) {
        return false;
    }
    let n = value.chars().count();
    // An identifier (`AtomicU32Provider`) changes between lower, upper, digit and `_` once
    // a word; a generated string about every other character (0.6 for random base62).
    if value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        let switches = value
            .chars()
            .map(char_class)
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] != w[1])
            .count();
        if (switches as f64) < 0.3 * n as f64 {
            return false;
        }
    }
    let bits = entropy_bits(value);
    (n >= 8 && classes >= 3 && bits >= 2.5)
        || (n >= 16 && has_digit && (has_lower || has_upper) && bits >= 3.0)
}

/// A reference, a path of names, a URL or a template: `&Token`, `$crate::x`, `node.or1_token`,
/// `a->b`, `https://...`, `\d{3}`.
fn looks_like_code(value: &str) -> bool {
    if value.starts_with(['&', '$', '*'])
        || value.contains("::")
        || value.contains("->")
        || value.contains("://")
        || value.contains(CODE_CHARS)
    {
        return true;
    }
    // `item2.first`, `tuple.0.0`: names joined by dots.
    value.contains('.')
        && value.split('.').all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        && value.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
}

fn char_class(c: char) -> u8 {
    match c {
        'a'..='z' => 0,
        'A'..='Z' => 1,
        '0'..='9' => 2,
        _ => 3,
    }
}

/// Shannon entropy of the characters of `value`, in bits per character.
pub fn entropy_bits(value: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for c in value.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_compiles() {
        assert_eq!(COMPILED.len(), RULES.len());
    }

    #[test]
    fn redaction_keeps_every_line_in_place() {
        let key_body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n";
        let text = format!(
            "a = 1\nkey = \"\"\"-----BEGIN PRIVATE KEY-----\n{key_body}-----END PRIVATE KEY-----\"\"\"\nid = \"AKIAIOSFODNN7EXAMPLE\"\nz = 2\n"
        );
        let (out, found) = redact(text.clone());
        assert_eq!(out.lines().count(), text.lines().count());
        let found_at: Vec<(&str, u32)> = found.iter().map(|r| (r.rule, r.line)).collect();
        assert_eq!(found_at, [("private-key", 2), ("aws-access-key", 6)]);
        // The widths the touched lines had: the key block's four, then the key id's line.
        let widths =
            |r: &Redaction| -> Vec<u32> { r.original_widths.iter().map(|w| w.utf8).collect() };
        assert_eq!(widths(&found[0]), [36, 64, 64, 28]);
        assert_eq!(widths(&found[1]), [27]);
        assert_eq!(
            found[1].original_width(5),
            Some(LineWidth::of("id = \"AKIAIOSFODNN7EXAMPLE\""))
        );
        assert_eq!(found[1].original_width(6), None);
        assert_eq!(
            out.lines().nth(5),
            Some("id = \"[REDACTED:aws-access-key]\"")
        );
        assert_eq!(out.lines().nth(6), Some("z = 2"));
        assert!(!out.contains("MIIEv"));
    }

    #[test]
    fn generic_assignments_redact_only_the_value() {
        let (out, found) = redact("DB_PASSWORD=q8F!zR2#vLp9\npassword = \"changeme\"\n".into());
        assert_eq!(
            out,
            "DB_PASSWORD=[REDACTED:generic-secret]\npassword = \"changeme\"\n"
        );
        assert_eq!(found.len(), 1);
    }
}
