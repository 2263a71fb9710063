//! `restart` (everything, the supervisor included) and `restart <component>`.

use std::time::Duration;

use super::{answer_error, answer_timeout, connect, load_config, not_running, resolve_name};
use crate::exit::{self, Exit};
use crate::home::Home;
use crate::protocol::{Request, Response, State};

pub(super) fn all(home: &Home, wait: Option<Duration>) -> anyhow::Result<u8> {
    // Check what the start half needs before stopping anything: a broken file, or a home
    // this user cannot run (`run/` owned by another user), must not leave the installation
    // down.
    load_config(home)?;
    home.ensure_layout()?;
    super::stop::stop(home)?;
    super::start::run(home, wait)
}

pub(super) fn one(home: &Home, name: &str, wait: Option<Duration>) -> anyhow::Result<u8> {
    let config = load_config(home)?;
    let name = resolve_name(&config, name)?;
    let wait = wait.unwrap_or(config.start_wait);
    let Some(mut client) = connect(home)? else {
        return Err(Exit::new(
            exit::NEEDS_SUPERVISOR,
            format!("{}; use `imageserving start`", not_running(home)),
        )
        .into());
    };
    let answer = client.request(
        &Request::Restart {
            component: name.clone(),
            wait_ms: wait.as_millis() as u64,
        },
        answer_timeout(wait),
    )?;
    let Response::Restarted {
        report,
        handover_failed,
    } = answer
    else {
        return Err(answer_error(answer));
    };
    let mut failed = false;
    for c in &report.components {
        println!("{}", super::start::line(c, false));
        failed |= c.state != State::Running;
    }
    if let Some(why) = handover_failed {
        // Nothing was lost: the old process serves on. But the restart did not happen.
        return Err(Exit::new(exit::FAILED, format!("restart of {name} failed: {why}")).into());
    }
    if failed {
        let c = &report.components[0];
        return Err(Exit::new(exit::FAILED, super::start::failure(c, wait)).into());
    }
    Ok(exit::OK)
}
