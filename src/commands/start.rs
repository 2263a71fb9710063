//! `start`: the supervisor (as a background daemon) if needed, then every component.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use imageserving_actors::{format, process::TREE_ENV};

use super::{answer_error, answer_timeout, connect, load_config};
use crate::client::Client;
use crate::exit::{self, Exit};
use crate::home::Home;
use crate::protocol::{ComponentStatus, Request, Response, State};

/// How long a new daemon may take to answer on its socket.
const DAEMON_READY_DEADLINE: Duration = Duration::from_secs(15);

pub(super) fn run(home: &Home, wait: Option<Duration>) -> anyhow::Result<u8> {
    home.ensure_layout()?;
    home.check_socket_path()?;
    // An invalid configuration stops here, before any daemon exists.
    let config = load_config(home)?;
    let wait = wait.unwrap_or(config.start_wait);
    let client = match connect(home)? {
        Some(client) => {
            println!("Server Supervisor already running; starting what is not running");
            client
        }
        None => spawn_daemon(home)?,
    };
    start_components(client, wait)
}

fn start_components(mut client: Client, wait: Duration) -> anyhow::Result<u8> {
    let answer = client.request(
        &Request::Start {
            components: vec![],
            wait_ms: wait.as_millis() as u64,
        },
        answer_timeout(wait),
    )?;
    let Response::Started {
        already_running,
        report,
    } = answer
    else {
        return Err(answer_error(answer));
    };
    let mut failures = Vec::new();
    for c in &report.components {
        println!("{}", line(c, already_running.contains(&c.name)));
        if c.state != State::Running {
            failures.push(failure(c, wait));
        }
    }
    if failures.is_empty() {
        Ok(exit::OK)
    } else {
        Err(Exit::new(exit::FAILED, failures.join("\n")).into())
    }
}

/// One line of the outcome of a start.
pub(super) fn line(c: &ComponentStatus, already: bool) -> String {
    let mut s = format!("{:<8} {:<9}", c.name, c.state);
    if let Some(pid) = c.pid {
        s.push_str(&format!(" pid {pid}"));
    }
    if already {
        s.push_str(" (already running)");
    } else if c.state != State::Running && !c.info.is_empty() {
        s.push_str("  ");
        s.push_str(&c.info);
    }
    s.trim_end().to_string()
}

/// Why a component is not running after a start, pointing at its log.
pub(super) fn failure(c: &ComponentStatus, wait: Duration) -> String {
    let why = match c.state {
        State::Fatal => c.fatal_reason.clone().unwrap_or_else(|| c.info.clone()),
        State::Stopped if !c.info.is_empty() => c.info.clone(),
        state => {
            let mut s = format!("still {state} after {}", format::duration(wait));
            if let Some(last) = &c.last_exit {
                s.push_str(&format!("; last: {last}"));
            }
            s
        }
    };
    format!("{}: {why}; see logs/{}.log", c.name, c.name)
}

/// Starts the daemon in a new session, detached from the terminal, and waits until its
/// control socket answers. The daemon is `imageserving-supervisor` (or, where that is not
/// installed, this same program re-executed; see [`crate::daemon::program`]): we never fork a
/// process that runs an async runtime.
///
/// The daemon opens its own log, `logs/supervisor.log` (rotated); its standard output and
/// error go to `logs/supervisor.stderr` (appended, not rotated), which only receives what
/// bypasses its log: a panic's message, the error it exits with.
fn spawn_daemon(home: &Home) -> anyhow::Result<Client> {
    let stderr_path = home.supervisor_stderr();
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stderr_path)
        .with_context(|| format!("opening {}", stderr_path.display()))?;
    // What the daemon writes there from now on is shown if it fails to start.
    let stderr_start = stderr.metadata().map_or(0, |m| m.len());
    let mut cmd = crate::daemon::command(home, true, 0, false)?;
    cmd.env(TREE_ENV, home.tree_id())
        .stdin(Stdio::null())
        .stdout(stderr.try_clone()?)
        .stderr(stderr);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the Server Supervisor")?;
    let until = Instant::now() + DAEMON_READY_DEADLINE;
    let mut lost_race = false;
    loop {
        if let Some(client) = ready(home) {
            println!(
                "Server Supervisor started (pid {})",
                pid_of(home).unwrap_or(child.id())
            );
            return Ok(client);
        }
        if !lost_race {
            if let Some(status) = child.try_wait()? {
                if status.code() == Some(exit::LOCKED.into()) {
                    // Another `start` won the lock: wait for its daemon instead.
                    lost_race = true;
                } else {
                    return Err(daemon_failed(home, status, stderr_start));
                }
            }
        }
        if Instant::now() >= until {
            anyhow::bail!(
                "the Server Supervisor did not answer within {}s; see {} and {}",
                DAEMON_READY_DEADLINE.as_secs(),
                home.supervisor_log().display(),
                stderr_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A client, once the daemon answers a ping.
fn ready(home: &Home) -> Option<Client> {
    let mut client = Client::connect(home).ok()?;
    match client.request(&Request::Ping, Duration::from_secs(2)) {
        Ok(Response::Pong { .. }) => Some(client),
        _ => None,
    }
}

fn pid_of(home: &Home) -> Option<u32> {
    std::fs::read_to_string(home.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Why the daemon ended before it was ready: how it ended, the last lines of its log, and
/// what it wrote to its standard error since `stderr_start` (a panic, its final error).
fn daemon_failed(
    home: &Home,
    status: std::process::ExitStatus,
    stderr_start: u64,
) -> anyhow::Error {
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (_, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".into(),
    };
    let code = if status.code() == Some(exit::BAD_CONFIG.into()) {
        exit::BAD_CONFIG
    } else {
        exit::FAILED
    };
    let log = std::fs::read_to_string(home.supervisor_log()).unwrap_or_default();
    let mut message = format!(
        "the Server Supervisor {how} before it was ready; last lines of {}:\n{}",
        home.supervisor_log().display(),
        last_lines(&log, 5)
    );
    let stderr_path = home.supervisor_stderr();
    let stderr = read_from(&stderr_path, stderr_start);
    if !stderr.trim().is_empty() {
        message.push_str(&format!(
            "\nits standard error ({}):\n{}",
            stderr_path.display(),
            last_lines(&stderr, 10)
        ));
    }
    Exit::new(code, message).into()
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let mut tail: Vec<&str> = text.lines().rev().take(n).collect();
    tail.reverse();
    tail.join("\n")
}

/// What `path` holds from byte `offset` on (empty if it cannot be read).
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_daemon_shows_only_its_new_standard_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("supervisor.stderr");
        std::fs::write(&path, "an old panic\nthread 'main' panicked\nboom\n").expect("write");
        assert_eq!(read_from(&path, 13), "thread 'main' panicked\nboom\n");
        assert_eq!(read_from(&dir.path().join("missing"), 0), "");
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("", 2), "");
    }
}
