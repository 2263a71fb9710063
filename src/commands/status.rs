//! `status [component] [--json]`.

use std::time::Duration;

use imageserving_actors::format;

use super::{answer_error, connect, load_config, not_running, resolve_name};
use crate::exit;
use crate::home::Home;
use crate::protocol::{Request, Response, State, StatusReport};

pub(super) fn run(home: &Home, component: Option<&str>, json: bool) -> anyhow::Result<u8> {
    // A name unknown to the configuration is a usage error even when nothing runs. If the file
    // is broken now, the running daemon (which read it earlier) resolves the name instead.
    // Without a name the configuration is not read at all (with a thousand components, parsing
    // it would cost more than the whole request).
    let name = match component.map(|c| (c, load_config(home))) {
        Some((c, Ok(config))) => Some(resolve_name(&config, c)?),
        Some((c, Err(_))) => Some(c.to_string()),
        None => None,
    };
    let Some(mut client) = connect(home)? else {
        // Informational, like the original's: on standard output, exit 3 (LSB "not running").
        if json {
            eprintln!("{}", not_running(home));
        } else {
            println!("{}", not_running(home));
        }
        return Ok(exit::NOT_RUNNING);
    };
    let answer = client.request(
        &Request::Status {
            component: name.clone(),
        },
        Duration::from_secs(10),
    )?;
    let Response::Status(report) = answer else {
        return Err(answer_error(answer));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    let down = name.is_some() && report.components.iter().any(|c| c.state != State::Running);
    Ok(if down { exit::NOT_RUNNING } else { exit::OK })
}

/// The status table: the supervisor first, then one row per component.
pub(super) fn table(report: &StatusReport) -> String {
    let s = &report.supervisor;
    let mut out = format!(
        "Server Supervisor  pid {}  up {}  memory {}  strategy {}  home {}\n",
        s.pid,
        format::duration(Duration::from_millis(s.uptime_ms)),
        s.memory_bytes.map_or("-".into(), format::bytes),
        s.strategy,
        report.home
    );
    if let Some(reason) = &s.escalation {
        out.push_str(&format!("ESCALATION: {reason}; stopping everything\n"));
    }
    let rows: Vec<[String; 8]> = report
        .components
        .iter()
        .map(|c| {
            [
                c.name.clone(),
                c.state.to_string(),
                c.pid.map_or("-".into(), |p| p.to_string()),
                c.uptime_ms
                    .map_or("-".into(), |u| format::duration(Duration::from_millis(u))),
                memory(c.memory_bytes, c.memory_limit_bytes),
                c.restarts.to_string(),
                policy(c),
                info(c),
            ]
        })
        .collect();
    let header = [
        "NAME", "STATE", "PID", "UPTIME", "MEMORY", "RESTARTS", "POLICY", "INFO",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Written straight into `out`, padded by hand: no string per padded cell.
    for r in std::iter::once(&header).chain(&rows) {
        let start = out.len();
        for (i, cell) in r.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < r.len() {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let line = out[start..].trim_end().len();
        out.truncate(start + line);
        out.push('\n');
    }
    out
}

/// `12.3 MiB`, or `12.3 MiB/512.0 MiB` against a limit.
fn memory(used: Option<u64>, limit: Option<u64>) -> String {
    let used = used.map_or("-".into(), format::bytes);
    match limit {
        Some(limit) => format!("{used}/{}", format::bytes(limit)),
        None => used,
    }
}

/// The restart type, and `critical` when its FATAL escalates.
fn policy(c: &crate::protocol::ComponentStatus) -> String {
    if c.critical {
        format!("{} critical", c.restart)
    } else {
        c.restart.clone()
    }
}

/// The info column, with the output lost to a full disk when there was some.
fn info(c: &crate::protocol::ComponentStatus) -> String {
    if c.log_dropped_bytes == 0 {
        return c.info.clone();
    }
    let lost = format!("log: {} dropped", format::bytes(c.log_dropped_bytes));
    if c.info.is_empty() {
        lost
    } else {
        format!("{}; {lost}", c.info)
    }
}
