//! `events [--json]`: the components' lifecycle events, one line each, as they happen.

use std::io::Write;
use std::time::Duration;

use super::{answer_error, connect, not_running};
use crate::exit::{self, Exit};
use crate::home::Home;
use crate::protocol::{Request, Response};

pub(super) fn run(home: &Home, json: bool) -> anyhow::Result<u8> {
    let Some(mut client) = connect(home)? else {
        return Err(Exit::new(
            exit::NEEDS_SUPERVISOR,
            format!("{}; use `imageserving start`", not_running(home)),
        )
        .into());
    };
    let answer = client.request(&Request::Events, Duration::from_secs(5))?;
    if answer != Response::Subscribed {
        return Err(answer_error(answer));
    }
    let mut out = std::io::stdout().lock();
    while let Some(frame) = client.next_frame()? {
        let line = match frame {
            Response::Event(event) if json => serde_json::to_string(&event)?,
            Response::Event(event) => format!("{}  {}", event.at, event.text),
            Response::Missed { count } if json => format!("{{\"missed\":{count}}}"),
            Response::Missed { count } => {
                format!("(missed {count} events: this terminal fell behind)")
            }
            other => return Err(answer_error(other)),
        };
        // A closed pipe (`events | head`) ends the command quietly.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(exit::OK);
        }
    }
    // The supervisor exited (a `stop`).
    Ok(exit::OK)
}
