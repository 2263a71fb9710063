//! A host application embedding the supervision tree: two processes, their lifecycle events
//! printed as they happen, an orderly stop on Ctrl-C (or SIGTERM, or after the number of
//! seconds given as the first argument).
//!
//! ```text
//! cargo run -p imageserving-actors --example embed          # until Ctrl-C
//! cargo run -p imageserving-actors --example embed -- 3     # for 3 seconds
//! ```
//!
//! `ticker` prints a line every half second and runs for good; `flaky` depends on it, exits
//! with status 3 after 300 ms and is restarted with a growing backoff. Stopping stops `flaky`
//! first (it depends on `ticker`), then `ticker`.

use std::time::Duration;

use imageserving_actors::spec::{ComponentSpec, TreeSpec};
use imageserving_actors::SupervisorHandle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast::error::RecvError;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run_for = match std::env::args().nth(1) {
        Some(secs) => Some(Duration::try_from_secs_f64(secs.parse()?)?),
        None => None,
    };

    let ticker = ComponentSpec::builder("ticker", "sh")
        .args(["-c", "while :; do echo tick; sleep 0.5; done"])
        .start_secs(Duration::from_millis(200))
        .build()?;
    let flaky = ComponentSpec::builder("flaky", "sh")
        .args(["-c", "sleep 0.3; exit 3"])
        .start_secs(Duration::from_millis(100))
        .depends_on("ticker")
        .build()?;
    // The tree id marks every process of this tree: one per running instance.
    let tree = TreeSpec::builder(format!("embed-example-{}", std::process::id()))
        .component(ticker)
        .component(flaky)
        .build()?;

    let (handle, join) = SupervisorHandle::spawn(tree).await?;
    let mut events = handle.subscribe();
    let printer = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => println!("{} {event}", humantime::format_rfc3339_millis(event.at)),
                Err(RecvError::Lagged(missed)) => println!("(missed {missed} events)"),
                // Every actor of the tree is gone.
                Err(RecvError::Closed) => break,
            }
        }
    });

    handle.start(&[]).await?;
    let mut term = signal(SignalKind::terminate())?;
    match run_for {
        Some(duration) => tokio::time::sleep(duration).await,
        None => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
    }

    // Stops `flaky`, then `ticker`, each with SIGTERM (SIGKILL after its stop timeout).
    let status = handle.shutdown().await?;
    join.await?;
    printer.await?;
    for c in &status.components {
        println!("final: {} {}", c.name, c.state);
    }
    Ok(())
}
