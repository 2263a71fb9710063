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
    let mut grid = Grid::with_rows(report.components.len() + 1);
    for title in [
        "NAME", "STATE", "PID", "UPTIME", "MEMORY", "RESTARTS", "POLICY", "INFO",
    ] {
        grid.push(title);
    }
    for c in &report.components {
        grid.push(&c.name);
        grid.push(c.state);
        match c.pid {
            Some(pid) => grid.push(pid),
            None => grid.push("-"),
        }
        match c.uptime_ms {
            Some(ms) => grid.push(format::duration(Duration::from_millis(ms))),
            None => grid.push("-"),
        }
        grid.push(memory(c.memory_bytes, c.memory_limit_bytes));
        grid.push(c.restarts);
        grid.push(format_args!(
            "{}{}",
            c.restart,
            if c.critical { " critical" } else { "" }
        ));
        grid.push(info(c));
        for o in &c.outgoing {
            // The process a handover replaces, on its own row under the component's.
            grid.push("");
            grid.push(&o.state);
            grid.push(o.pid);
            grid.push(format::duration(Duration::from_millis(o.uptime_ms)));
            grid.push("");
            grid.push("");
            grid.push("");
            match (o.draining_ms, c.pid) {
                (Some(ms), _) => grid.push(format_args!(
                    "handover: finishing its requests for {}",
                    format::duration(Duration::from_millis(ms))
                )),
                (None, Some(pid)) => {
                    grid.push(format_args!("handover: serving until pid {pid} is ready"));
                }
                (None, None) => grid.push("handover: serving until its successor is ready"),
            }
        }
    }
    grid.write_into(&mut out);
    out
}

/// The number of columns of the status table.
const COLUMNS: usize = 8;

/// The cells of the table, row after row, in one string (`ends` says where each ends): with a
/// thousand components, a string per cell was most of the table's cost.
struct Grid {
    text: String,
    ends: Vec<usize>,
    widths: [usize; COLUMNS],
}

impl Grid {
    fn with_rows(rows: usize) -> Self {
        Self {
            text: String::with_capacity(rows * 64),
            ends: Vec::with_capacity(rows * COLUMNS),
            widths: [0; COLUMNS],
        }
    }

    /// Appends the next cell (rows are filled left to right, top to bottom).
    fn push(&mut self, cell: impl std::fmt::Display) {
        use std::fmt::Write;
        let start = self.text.len();
        let _ = write!(self.text, "{cell}");
        let column = self.ends.len() % COLUMNS;
        let width = self.text[start..].chars().count();
        self.widths[column] = self.widths[column].max(width);
        self.ends.push(self.text.len());
    }

    /// Writes the rows, each column padded to its widest cell and two spaces apart, without
    /// trailing blanks.
    fn write_into(&self, out: &mut String) {
        let row_width: usize = self.widths.iter().map(|w| w + 2).sum();
        out.reserve(self.ends.len() / COLUMNS * (row_width + 1));
        let mut start = 0;
        for row in self.ends.chunks(COLUMNS) {
            let line = out.len();
            for (column, &end) in row.iter().enumerate() {
                let cell = &self.text[start..end];
                start = end;
                out.push_str(cell);
                if column + 1 < COLUMNS {
                    let pad = self.widths[column].saturating_sub(cell.chars().count()) + 2;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            let kept = out[line..].trim_end().len();
            out.truncate(line + kept);
            out.push('\n');
        }
    }
}

/// `12.3 MiB`, or `12.3 MiB/512.0 MiB` against a limit.
fn memory(used: Option<u64>, limit: Option<u64>) -> String {
    let used = used.map_or("-".into(), format::bytes);
    match limit {
        Some(limit) => format!("{used}/{}", format::bytes(limit)),
        None => used,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's columns are as wide as their widest cell (the title included) and two spaces
    /// apart, rows carry no trailing blanks, and a missing figure reads `-`.
    #[test]
    fn the_table_aligns_every_column() {
        let component = |name: &str, state: &str, extra: &str| {
            format!(
                r#"{{"name":"{name}","state":"{state}","since":"2025-11-26T20:23:05.120Z",
                "since_unix_ms":1764188585120,"restarts":0,"info":"","last_exit":null,
                "next_retry_unix_ms":null,"fatal_reason":null,"depends_on":[],{extra}}}"#
            )
        };
        let json = format!(
            r#"{{"home":"/srv/is","supervisor":{{"pid":42,"version":"0.1.0",
            "started_at":"2025-11-26T20:23:00.000Z","uptime_ms":3600000,"memory_bytes":8388608,
            "strategy":"one_for_one","group_restarts":0,"escalation":null}},
            "components":[{},{}]}}"#,
            component(
                "image-server",
                "RUNNING",
                r#""pid":4250,"uptime_ms":192000,"memory_bytes":52428800,"restart":"transient",
                "critical":true,"memory_limit_bytes":536870912"#
            ),
            component(
                "ps",
                "BACKOFF",
                r#""pid":null,"uptime_ms":null,"memory_bytes":null,"restarts":12,
                "info":"retry in 4s","log_dropped_bytes":2048"#
            )
            .replace(r#""restarts":0,"info":"","#, ""),
        );
        let report: StatusReport = serde_json::from_str(&json).expect("a report");
        let expected = "\
Server Supervisor  pid 42  up 1h 00m  memory 8.0 MiB  strategy one_for_one  home /srv/is
NAME          STATE    PID   UPTIME  MEMORY              RESTARTS  POLICY              INFO
image-server  RUNNING  4250  3m 12s  50.0 MiB/512.0 MiB  0         transient critical
ps            BACKOFF  -     -       -                   12        permanent           retry in 4s; log: 2.0 KiB dropped
";
        assert_eq!(table(&report), expected);
    }
}
