//! `stop`: every component in reverse dependency order, then the supervisor.

use std::time::{Duration, Instant};

use super::{answer_error, connect, not_running};
use crate::exit;
use crate::home::Home;
use crate::protocol::{Request, Response};

/// The longest a whole stop may take before we give up waiting (stop timeouts are per
/// component and per dependency level; this only bounds a wedged daemon).
const STOP_ANSWER_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the daemon may take to exit after answering.
const EXIT_DEADLINE: Duration = Duration::from_secs(15);

pub(super) fn run(home: &Home) -> anyhow::Result<u8> {
    if !stop(home)? {
        println!("{}; nothing to stop", not_running(home));
    }
    Ok(exit::OK)
}

/// Stops the supervisor of `home` and waits until it has exited. False when none ran.
pub(super) fn stop(home: &Home) -> anyhow::Result<bool> {
    let Some(mut client) = connect(home)? else {
        return Ok(false);
    };
    let answer = client.request(&Request::Shutdown, STOP_ANSWER_TIMEOUT)?;
    let Response::ShuttingDown { report } = answer else {
        return Err(answer_error(answer));
    };
    // The components are gone; the daemon exits next and releases its lock.
    let until = Instant::now() + EXIT_DEADLINE;
    while crate::daemon::is_locked(home) {
        if Instant::now() >= until {
            anyhow::bail!(
                "the Server Supervisor (pid {}) stopped its components but has not exited after {}s",
                report.supervisor.pid,
                EXIT_DEADLINE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let names: Vec<&str> = report
        .components
        .iter()
        .rev()
        .map(|c| c.name.as_str())
        .collect();
    println!("stopped: {}", names.join(", "));
    println!("Server Supervisor stopped (pid {})", report.supervisor.pid);
    Ok(true)
}
