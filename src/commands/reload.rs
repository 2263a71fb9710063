//! `reload`: re-read the configuration and apply the difference.

use std::time::Duration;

use super::{answer_error, answer_timeout, connect, load_config, not_running};
use crate::exit::{self, Exit};
use crate::home::Home;
use crate::protocol::{Request, Response, State};

pub(super) fn run(home: &Home, wait: Option<Duration>) -> anyhow::Result<u8> {
    // Checked here first, so that a broken file is reported with the CLI's exit code for it
    // (the supervisor checks again: the file may change in between).
    let config = load_config(home)?;
    let wait = wait.unwrap_or(config.start_wait);
    let Some(mut client) = connect(home)? else {
        return Err(Exit::new(
            exit::NEEDS_SUPERVISOR,
            format!("{}; nothing to reload", not_running(home)),
        )
        .into());
    };
    let answer = client.request(
        &Request::Reload {
            wait_ms: wait.as_millis() as u64,
        },
        answer_timeout(wait),
    )?;
    let Response::Reloaded {
        added,
        removed,
        changed,
        restarted,
        handover_failed,
        report,
    } = answer
    else {
        return Err(answer_error(answer));
    };
    if added.is_empty() && removed.is_empty() && changed.is_empty() {
        println!("configuration unchanged: nothing to do");
    }
    let list = |names: &[String]| names.join(", ");
    if !removed.is_empty() {
        println!("removed (stopped): {}", list(&removed));
    }
    if !changed.is_empty() {
        let idle: Vec<String> = changed
            .iter()
            .filter(|c| !restarted.contains(c))
            .cloned()
            .collect();
        if !restarted.is_empty() {
            println!("changed (restarted): {}", list(&restarted));
        }
        if !idle.is_empty() {
            println!(
                "changed (not running, takes effect at its next start): {}",
                list(&idle)
            );
        }
    }
    if !added.is_empty() {
        println!("added: {}", list(&added));
    }
    let mut failed = Vec::new();
    for c in report
        .components
        .iter()
        .filter(|c| restarted.contains(&c.name) || added.contains(&c.name))
    {
        println!("{}", super::start::line(c, false));
        if c.state != State::Running {
            failed.push(c.name.clone());
        }
    }
    if !handover_failed.is_empty() {
        let why: Vec<String> = report
            .components
            .iter()
            .filter(|c| handover_failed.contains(&c.name))
            .map(|c| {
                format!(
                    "{}: {}",
                    c.name,
                    c.last_exit.as_deref().unwrap_or("handover failed")
                )
            })
            .collect();
        return Err(Exit::new(
            exit::FAILED,
            format!(
                "reloaded, but the new settings did not take over (the old processes serve on): {}",
                why.join("; ")
            ),
        )
        .into());
    }
    if !failed.is_empty() {
        return Err(Exit::new(
            exit::FAILED,
            format!(
                "reloaded, but not running after {}: {}; see `imageserving status`",
                humantime::format_duration(wait),
                failed.join(", ")
            ),
        )
        .into());
    }
    Ok(exit::OK)
}
