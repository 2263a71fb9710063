//! The specs in `docs/` pinned to the code they describe, without a daemon: each spec has one
//! home, and where a table there must agree with a type or a parser, a test here says so.
//!
//! - [`status_json`]: `docs/status-json.md`, the keys of `status --json` and `events --json`,
//!   against the protocol's types;
//! - [`configuration`]: `docs/configuration.md`, the configuration keys and their defaults,
//!   against the configuration parser;
//! - [`url_commands`]: `docs/image-serving.md`, the URL protocol's command table, against the
//!   URL parser;
//! - [`markdown`]: the little Markdown reading they share.
//!
//! Every failure names the document, the table and the key to fix, and all the disagreements
//! of one spec are reported at once.

mod configuration;
mod markdown;
mod status_json;
mod url_commands;

/// Fails with every problem found, one per line, or passes when there is none.
fn report(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "the spec and the code disagree:\n- {}",
        problems.join("\n- ")
    );
}
