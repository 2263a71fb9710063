//! The IPC bridge: reads requests from the control socket and translates each into a call on
//! the [`SupervisorHandle`]. Its only state is the configuration in force, which a reload
//! replaces.
//!
//! It is also where the tree's types become wire types ([`crate::protocol`] knows nothing of
//! the tree): the status in `report`, the lifecycle states in `wire_state`, the events in
//! `event_report`.
//!
//! Every connection is checked (peer uid), every frame is bounded in size and in time, and a
//! request can only name configured components: nothing a client sends can make the daemon
//! run a command of its choosing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use imageserving_actors::events::{EventKind, TreeEvent};
use imageserving_actors::lifecycle::ExitReason;
use imageserving_actors::{format, SupervisorHandle, TreeError, TreeStatus};
use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::config::{self, Config};
use crate::home::Home;
use crate::peer;
use crate::protocol::{
    self, ComponentStatus, ErrorKind, EventReport, ProtocolError, Request, Response, State,
    StatusReport, SupervisorStatus,
};

/// How long a client may take to send one request.
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// How long a client may take to read one answer; one that stops reading loses its connection
/// (and its slot), so it can never block the others.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// Connections served at once; more wait for a slot.
const MAX_CONNECTIONS: usize = 2048;

/// The bridge between the control socket and the tree.
pub(super) struct Bridge {
    handle: SupervisorHandle,
    /// The configuration in force: replaced by a reload.
    config: RwLock<Arc<Config>>,
    /// Serializes reloads.
    reloading: tokio::sync::Mutex<()>,
    /// For re-reading the configuration.
    home_dir: Home,
    /// The program `@self` names in the configuration.
    exe: PathBuf,
    home: String,
    started_at: SystemTime,
    uid: u32,
    slots: Arc<Semaphore>,
    shutting_down: AtomicBool,
    shutdown_done: watch::Sender<bool>,
}

impl Bridge {
    /// A bridge onto `handle`.
    pub(super) fn new(
        handle: SupervisorHandle,
        config: Config,
        home: &Home,
        exe: PathBuf,
        started_at: SystemTime,
        shutdown_done: watch::Sender<bool>,
    ) -> Self {
        Bridge {
            handle,
            config: RwLock::new(Arc::new(config)),
            reloading: tokio::sync::Mutex::new(()),
            home_dir: home.clone(),
            exe,
            home: home.root().display().to_string(),
            started_at,
            uid: nix::unistd::geteuid().as_raw(),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            shutting_down: AtomicBool::new(false),
            shutdown_done,
        }
    }

    /// The configuration in force.
    fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Re-reads the configuration and applies the difference (a `reload` request or SIGHUP).
    /// An invalid configuration changes nothing; the error says why. Only the components and
    /// the supervisor-wide policy follow a reload; the socket and the home stay as they are.
    pub(super) async fn reload(&self, wait: Option<Duration>) -> Response {
        let _one_at_a_time = self.reloading.lock().await;
        let config = match config::load(&self.home_dir, &super::self_program(&self.exe)) {
            Ok(config) => config,
            Err(e) => {
                warn!(error = %e, "reload refused: the configuration is invalid; nothing changed");
                return Response::Error {
                    kind: ErrorKind::BadConfig,
                    message: format!("{e}; nothing was changed"),
                };
            }
        };
        let before = self.generations(&[]).await;
        let plan = match self.handle.reload(config.tree.clone()).await {
            Ok(plan) => plan,
            Err(e @ (TreeError::Spec(_) | TreeError::Reload(_))) => {
                warn!(error = %e, "reload refused; nothing changed");
                return Response::Error {
                    kind: ErrorKind::BadConfig,
                    message: e.to_string(),
                };
            }
            Err(e) => return tree_error(e),
        };
        let wait = wait.unwrap_or(config.start_wait);
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        info!(added = ?plan.added, removed = ?plan.removed, changed = ?plan.changed,
            restarted = ?plan.restarted, "configuration reloaded");
        let started: Vec<String> = plan.restarted.iter().chain(&plan.added).cloned().collect();
        let status = if started.is_empty() {
            self.handle.status().await
        } else {
            self.handle.wait_settled(&started, wait).await
        };
        match status {
            Ok(status) => {
                let handover_failed = handovers_failed(&plan.handed_over, &before, &status)
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect();
                Response::Reloaded {
                    added: plan.added,
                    removed: plan.removed,
                    changed: plan.changed,
                    restarted: plan.restarted,
                    handover_failed,
                    report: self.report(status, None),
                }
            }
            Err(e) => tree_error(e),
        }
    }

    /// Streams the tree's events to the client until it closes the connection, falls too far
    /// behind to be written to, or the tree is gone.
    async fn stream_events(
        &self,
        read: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
        write: &mut tokio::net::unix::OwnedWriteHalf,
    ) -> Result<(), ProtocolError> {
        let mut events = self.handle.subscribe();
        send(write, &protocol::encode(&Response::Subscribed)).await?;
        let mut sink = [0u8; 256];
        loop {
            let frame = tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => Response::Event(event_report(&event)),
                    Err(RecvError::Lagged(count)) => Response::Missed { count },
                    Err(RecvError::Closed) => return Ok(()),
                },
                // The client sends nothing more; anything it does send is ignored, and the end
                // of its side ends the stream.
                read = read.read(&mut sink) => match read {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(_) => continue,
                },
            };
            send(write, &protocol::encode(&frame)).await?;
        }
    }

    /// Whether a `stop` request began the shutdown.
    pub(super) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Foreground mode: start every component and log the outcome.
    pub(super) async fn start_all_and_log(&self) {
        if let Err(e) = self.handle.start(&[]).await {
            warn!(error = %e, "could not start the components");
            return;
        }
        match self
            .handle
            .wait_settled(&[], self.config().start_wait)
            .await
        {
            Ok(status) => {
                for c in status.components {
                    info!(component = %c.name, state = %c.state, info = %c.info(SystemTime::now()), "after start");
                }
            }
            Err(e) => warn!(error = %e, "could not read the status after start"),
        }
    }

    /// Serves one connection in its own task.
    /// Past [`MAX_CONNECTIONS`] at once, a connection waits for a slot rather than being
    /// refused: a burst of clients is served in turn, none is dropped.
    pub(super) fn accept(self: Arc<Self>, stream: UnixStream) {
        tokio::spawn(async move {
            let Ok(_permit) = self.slots.clone().acquire_owned().await else {
                return;
            };
            if let Err(e) = self.serve(stream).await {
                debug!(error = %e, "control connection ended with an error");
            }
        });
    }

    async fn serve(&self, stream: UnixStream) -> Result<(), ProtocolError> {
        let cred = stream.peer_cred()?;
        let (peer_uid, peer_pid) = (cred.uid(), cred.pid());
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        if let Err(denied) = peer::authorize(peer_uid, self.uid) {
            warn!(peer_uid, peer_pid, "refused a control connection: {denied}");
            let answer = Response::Error {
                kind: ErrorKind::Forbidden,
                message: denied.to_string(),
            };
            return send(&mut write, &protocol::encode(&answer)).await;
        }
        loop {
            let frame = match tokio::time::timeout(READ_DEADLINE, protocol::read_frame(&mut read))
                .await
            {
                Err(_) => {
                    let answer = Response::Error {
                        kind: ErrorKind::Timeout,
                        message: format!(
                            "no complete request within {}",
                            format::duration(READ_DEADLINE)
                        ),
                    };
                    return send(&mut write, &protocol::encode(&answer)).await;
                }
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(frame))) => frame,
                Ok(Err(e)) => {
                    warn!(peer_uid, peer_pid, error = %e, "unreadable control request");
                    let _ = send(&mut write, &protocol::encode(&Response::from_error(&e))).await;
                    return Err(e);
                }
            };
            let request = match protocol::decode_request(&frame) {
                Ok(r) => r,
                Err(e) => {
                    warn!(peer_uid, peer_pid, error = %e, "invalid control request");
                    send(&mut write, &protocol::encode(&Response::from_error(&e))).await?;
                    if e.is_fatal_to_connection() {
                        return Err(e);
                    }
                    continue;
                }
            };
            if matches!(request, Request::Events) {
                info!(peer_uid, peer_pid, "events subscribed");
                return self.stream_events(&mut read, &mut write).await;
            }
            let is_shutdown = matches!(request, Request::Shutdown);
            let answer = self.answer(request, peer_uid, peer_pid).await;
            let shutdown_done = is_shutdown && matches!(answer, Response::ShuttingDown { .. });
            let written = send(&mut write, &protocol::encode(&answer)).await;
            if shutdown_done {
                let _ = self.shutdown_done.send(true);
                return written;
            }
            written?;
        }
    }

    async fn answer(&self, request: Request, uid: u32, pid: Option<i32>) -> Response {
        match request {
            Request::Ping => Response::Pong {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                protocol: protocol::PROTOCOL_VERSION,
            },
            Request::Status { component } => {
                let name = match component.as_deref().map(|c| self.resolve(c)).transpose() {
                    Ok(name) => name,
                    Err(e) => return e.into(),
                };
                match self.handle.status().await {
                    Ok(status) => Response::Status(self.report(status, name.as_deref())),
                    Err(e) => tree_error(e),
                }
            }
            Request::Start {
                components,
                wait_ms,
            } => {
                let names = match components
                    .iter()
                    .map(|c| self.resolve(c))
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(names) => names,
                    Err(e) => return e.into(),
                };
                info!(peer_uid = uid, peer_pid = pid, components = ?names, "start requested");
                let already = match self.handle.start(&names).await {
                    Ok(a) => a,
                    Err(e) => return tree_error(e),
                };
                match self
                    .handle
                    .wait_settled(&names, Duration::from_millis(wait_ms))
                    .await
                {
                    Ok(status) => Response::Started {
                        already_running: already,
                        report: self.report(status, None),
                    },
                    Err(e) => tree_error(e),
                }
            }
            Request::Restart { component, wait_ms } => {
                let name = match self.resolve(&component) {
                    Ok(n) => n,
                    Err(e) => return e.into(),
                };
                info!(peer_uid = uid, peer_pid = pid, component = %name, "restart requested");
                let names = [name];
                // Only a handover can leave the component on its attempt: for any other
                // component, no status is read before the restart.
                let hands_over = self
                    .config()
                    .component(&names[0])
                    .is_some_and(imageserving_actors::ComponentSpec::hands_over);
                let before = if hands_over {
                    self.generations(&names).await
                } else {
                    HashMap::new()
                };
                if let Err(e) = self.handle.restart(&names[0]).await {
                    return tree_error(e);
                }
                match self
                    .handle
                    .wait_settled(&names, Duration::from_millis(wait_ms))
                    .await
                {
                    Ok(status) => {
                        let handover_failed = handovers_failed(&names, &before, &status)
                            .into_iter()
                            .next()
                            .map(|(_, why)| why);
                        Response::Restarted {
                            report: self.report(status, Some(&names[0])),
                            handover_failed,
                        }
                    }
                    Err(e) => tree_error(e),
                }
            }
            Request::Reload { wait_ms } => {
                info!(peer_uid = uid, peer_pid = pid, "reload requested");
                self.reload(Some(Duration::from_millis(wait_ms))).await
            }
            // Answered by `serve`, which turns the connection into a stream.
            Request::Events => Response::Subscribed,
            Request::Shutdown => {
                info!(peer_uid = uid, peer_pid = pid, "stop requested");
                self.shutting_down.store(true, Ordering::SeqCst);
                match self.handle.shutdown().await {
                    Ok(status) => Response::ShuttingDown {
                        report: self.report(status, None),
                    },
                    Err(e) => tree_error(e),
                }
            }
        }
    }

    /// The current attempt of each named component (all when empty), to tell afterwards
    /// whether a restart replaced its process.
    async fn generations(&self, names: &[String]) -> HashMap<String, u64> {
        match self.handle.wait_settled(names, Duration::ZERO).await {
            Ok(status) => status
                .components
                .into_iter()
                .map(|c| (c.name, c.generation))
                .collect(),
            Err(_) => HashMap::new(),
        }
    }

    /// The configured name for a name or alias, or the error answer listing the names.
    fn resolve(&self, name: &str) -> Result<String, Unknown> {
        let config = self.config();
        config.resolve(name).map(String::from).ok_or_else(|| {
            Unknown(format!(
                "unknown component `{name}` (configured: {})",
                config.component_names().join(", ")
            ))
        })
    }

    /// Converts the tree's status into the wire report, optionally for one component.
    fn report(&self, status: TreeStatus, only: Option<&str>) -> StatusReport {
        let now = SystemTime::now();
        let (strategy, group_restarts, escalation) = (
            status.strategy.as_str().to_string(),
            status.group_restarts,
            status.escalation.clone(),
        );
        let components = status
            .components
            .into_iter()
            .filter(|c| only.is_none_or(|n| c.name == n))
            .map(|c| ComponentStatus {
                info: c.info(now),
                state: wire_state(c.state),
                since: protocol::rfc3339_ms(c.since),
                since_unix_ms: protocol::unix_ms(c.since),
                pid: c.pid,
                uptime_ms: c.uptime.map(|d| d.as_millis() as u64),
                memory_bytes: c.memory,
                restarts: c.restarts,
                last_exit: c.last_exit,
                next_retry_unix_ms: c.next_retry.map(protocol::unix_ms),
                fatal_reason: c.fatal_reason,
                depends_on: c.depends_on,
                restart: c.restart.as_str().to_string(),
                critical: c.critical,
                memory_limit_bytes: c.memory_limit,
                log_dropped_bytes: c.log_dropped_bytes,
                outgoing: c
                    .outgoing
                    .iter()
                    .map(|o| protocol::OutgoingProcess {
                        pid: o.pid,
                        uptime_ms: o.uptime.as_millis() as u64,
                        state: if o.draining_for.is_some() {
                            "DRAINING"
                        } else {
                            "SERVING"
                        }
                        .to_string(),
                        draining_ms: o.draining_for.map(|d| d.as_millis() as u64),
                    })
                    .collect(),
                name: c.name,
            })
            .collect();
        StatusReport {
            home: self.home.clone(),
            supervisor: SupervisorStatus {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: protocol::rfc3339_ms(self.started_at),
                uptime_ms: now
                    .duration_since(self.started_at)
                    .map_or(0, |d| d.as_millis() as u64),
                memory_bytes: own_memory(),
                strategy,
                group_restarts,
                escalation,
            },
            components,
        }
    }
}

/// Writes one answer within [`WRITE_DEADLINE`].
async fn send<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    frame: &[u8],
) -> Result<(), ProtocolError> {
    match tokio::time::timeout(WRITE_DEADLINE, protocol::write_frame(w, frame)).await {
        Ok(written) => written,
        Err(_) => Err(ProtocolError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not read its answer in time",
        ))),
    }
}

/// A name that is not configured, with the message that lists the configured ones.
struct Unknown(String);

impl From<Unknown> for Response {
    fn from(Unknown(message): Unknown) -> Self {
        Response::Error {
            kind: ErrorKind::UnknownComponent,
            message,
        }
    }
}

fn wire_state(s: imageserving_actors::State) -> State {
    use imageserving_actors::State as S;
    match s {
        S::Stopped => State::Stopped,
        S::Starting => State::Starting,
        S::Running => State::Running,
        S::Backoff => State::Backoff,
        S::Stopping => State::Stopping,
        S::Exited => State::Exited,
        S::Fatal => State::Fatal,
    }
}

/// The wire form of a tree event: its name, when, its line for humans, and the details that
/// apply to its kind.
fn event_report(event: &TreeEvent) -> EventReport {
    let mut report = EventReport {
        component: event.component.clone(),
        event: event.kind.name().to_string(),
        at: protocol::rfc3339_ms(event.at),
        at_unix_ms: protocol::unix_ms(event.at),
        text: event.to_string(),
        pid: None,
        attempt: None,
        exit_code: None,
        signal: None,
        delay_ms: None,
        reason: None,
        used_bytes: None,
        limit_bytes: None,
    };
    match &event.kind {
        EventKind::Spawned { pid, attempt } => {
            report.pid = Some(*pid);
            report.attempt = Some(*attempt);
        }
        EventKind::Running { pid }
        | EventKind::HandoverStarted { old: pid }
        | EventKind::Draining { pid } => report.pid = Some(*pid),
        EventKind::Exited { pid, reason } => {
            report.pid = *pid;
            match reason {
                ExitReason::Code(c) => report.exit_code = Some(*c),
                ExitReason::Signal(s) => report.signal = Some(*s),
            }
        }
        EventKind::Backoff { delay } => {
            report.delay_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        }
        EventKind::Fatal { reason } | EventKind::Unhealthy { reason } => {
            report.reason = Some(reason.clone());
        }
        EventKind::MemoryLimit { used, limit } => {
            report.used_bytes = Some(*used);
            report.limit_bytes = Some(*limit);
        }
        _ => {}
    }
    report
}

fn tree_error(e: TreeError) -> Response {
    let kind = match e {
        TreeError::UnknownComponent { .. } => ErrorKind::UnknownComponent,
        TreeError::ShuttingDown => ErrorKind::ShuttingDown,
        TreeError::Spec(_) | TreeError::Reload(_) => ErrorKind::BadConfig,
        _ => ErrorKind::Internal,
    };
    Response::Error {
        kind,
        message: e.to_string(),
    }
}

/// Those of the `restarted` components that are RUNNING on the attempt they had `before`: a
/// handover whose new process failed to start (the lifecycle made the old one live again),
/// with why.
fn handovers_failed(
    restarted: &[String],
    before: &HashMap<String, u64>,
    after: &TreeStatus,
) -> Vec<(String, String)> {
    after
        .components
        .iter()
        .filter(|c| restarted.contains(&c.name))
        .filter(|c| c.state == imageserving_actors::State::Running)
        .filter(|c| before.get(&c.name) == Some(&c.generation))
        .map(|c| {
            let why = c
                .last_exit
                .clone()
                .unwrap_or_else(|| "handover failed".into());
            (c.name.clone(), why)
        })
        .collect()
}

/// The supervisor's own resident memory (not its children's): one read of its `statm`.
fn own_memory() -> Option<u64> {
    imageserving_actors::process::resident_memory(std::process::id())
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn event(kind: EventKind) -> TreeEvent {
        TreeEvent {
            component: "is".into(),
            at: UNIX_EPOCH + Duration::from_millis(1_764_192_178_004),
            kind,
        }
    }

    /// The JSON line `events --json` prints for `kind`: the response without its envelope.
    fn json(kind: EventKind) -> String {
        serde_json::to_string(&event_report(&event(kind))).unwrap()
    }

    #[test]
    fn events_carry_the_details_of_their_kind_and_no_others() {
        let head = r#"{"component":"is","#;
        let at = r#""at":"2025-11-26T21:22:58.004Z","at_unix_ms":1764192178004,"#;
        let cases = [
            (
                EventKind::Spawned { pid: 7, attempt: 2 },
                r#""pid":7,"attempt":2"#,
            ),
            (EventKind::Running { pid: 7 }, r#""pid":7"#),
            (
                EventKind::Exited {
                    pid: Some(7),
                    reason: ExitReason::Signal(9),
                },
                r#""pid":7,"signal":9"#,
            ),
            (
                EventKind::Exited {
                    pid: None,
                    reason: ExitReason::Code(1),
                },
                r#""exit_code":1"#,
            ),
            (
                EventKind::Backoff {
                    delay: Duration::from_millis(1500),
                },
                r#""delay_ms":1500"#,
            ),
            (
                EventKind::Fatal {
                    reason: "gave up".into(),
                },
                r#""reason":"gave up""#,
            ),
            (
                EventKind::Unhealthy {
                    reason: "no answer".into(),
                },
                r#""reason":"no answer""#,
            ),
            (
                EventKind::MemoryLimit { used: 10, limit: 8 },
                r#""used_bytes":10,"limit_bytes":8"#,
            ),
            (EventKind::Stopping, ""),
            (EventKind::Stopped, ""),
            (EventKind::Completed, ""),
        ];
        for (kind, details) in cases {
            let name = kind.name();
            let text = event(kind.clone()).to_string();
            let details = if details.is_empty() {
                String::new()
            } else {
                format!(",{details}")
            };
            assert_eq!(
                json(kind),
                format!(r#"{head}"event":"{name}",{at}"text":"{text}"{details}}}"#)
            );
        }
    }

    #[test]
    fn every_state_has_its_wire_name() {
        use imageserving_actors::State as S;
        for (state, name) in [
            (S::Stopped, "STOPPED"),
            (S::Starting, "STARTING"),
            (S::Running, "RUNNING"),
            (S::Backoff, "BACKOFF"),
            (S::Stopping, "STOPPING"),
            (S::Exited, "EXITED"),
            (S::Fatal, "FATAL"),
        ] {
            assert_eq!(wire_state(state).as_str(), name);
        }
    }

    /// A restart whose component is RUNNING on the attempt it had before failed its handover;
    /// the components that were not restarted are not judged, whatever their attempt.
    #[test]
    fn only_a_restarted_component_still_on_its_attempt_is_a_failed_handover() {
        let component = |name: &str, state, generation| imageserving_actors::ComponentStatus {
            name: name.into(),
            state,
            since: UNIX_EPOCH,
            generation,
            pid: Some(10),
            uptime: None,
            memory: None,
            restarts: 0,
            last_exit: Some(format!("handover failed: {name}")),
            fatal_reason: None,
            next_retry: None,
            wanted: true,
            waiting_for: None,
            blocked_by: None,
            depends_on: Vec::new(),
            restart: imageserving_actors::spec::RestartType::Permanent,
            critical: false,
            memory_limit: None,
            log_dropped_bytes: 0,
            outgoing: Vec::new(),
        };
        use imageserving_actors::State::{Running, Starting};
        let after = TreeStatus {
            components: vec![
                component("is", Running, 3),
                component("svg", Running, 1),
                component("ps", Running, 5),
                component("web", Starting, 2),
            ],
            strategy: imageserving_actors::spec::Strategy::OneForOne,
            group_restarts: 0,
            escalation: None,
        };
        let before: HashMap<String, u64> = [("is", 3), ("svg", 1), ("ps", 4), ("web", 2)]
            .into_iter()
            .map(|(n, g)| (n.to_string(), g))
            .collect();
        let restarted = ["is", "ps", "web"].map(String::from);
        assert_eq!(
            handovers_failed(&restarted, &before, &after),
            vec![("is".to_string(), "handover failed: is".to_string())]
        );
    }
}
