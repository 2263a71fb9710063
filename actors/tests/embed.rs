//! The tree embedded in a host application: lifecycle events, the builder, the tree placed
//! under the host's own ractor supervisor (and what happens to the processes in each way the
//! host can end), and `examples/embed.rs` run as a program.
//!
//! Every test bounds its time and leaves no process behind (the [`common::Fixture`] guard, or
//! a sweep of the tree's marker).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bounded, fast_policy, shell, unique_tree_id, wait_for, Fixture};
use imageserving_actors::events::{EventKind, TreeEvent};
use imageserving_actors::lifecycle::ExitReason;
use imageserving_actors::process::{find_marked, kill_marked};
use imageserving_actors::spec::{ComponentSpec, LogSpec, TreeSpec};
use imageserving_actors::{State, SupervisorHandle};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, oneshot};

/// Collects events until `done` says the list is complete, or fails after 10 s.
async fn events_until(
    rx: &mut broadcast::Receiver<TreeEvent>,
    mut done: impl FnMut(&[TreeEvent]) -> bool,
) -> Vec<TreeEvent> {
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while !done(&seen) {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(event)) => seen.push(event),
            Ok(Err(e)) => panic!("event stream ended ({e}) after {seen:#?}"),
            Err(_) => panic!("timed out; events so far: {seen:#?}"),
        }
    }
    seen
}

fn of<'a>(events: &'a [TreeEvent], component: &str) -> Vec<&'a EventKind> {
    events
        .iter()
        .filter(|e| e.component == component)
        .map(|e| &e.kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_every_step_of_each_component_in_order() {
    bounded(async {
        let fx = Fixture::spawn("events", |dir| {
            let mut flaky = shell(dir, "flaky", "sleep 0.3; exit 3");
            flaky.policy.start_secs = Duration::from_millis(100);
            flaky.policy.max_restarts = 1;
            // 64 MiB, written to so that it is resident, then held.
            let hog_script = "import time\nx = b'x' * (64 * 1024 * 1024)\ntime.sleep(1000)\n";
            let mut hog = common::command(dir, "hog", &["python3", "-c", hog_script]);
            hog.memory_limit = Some(16 * 1024 * 1024);
            hog.memory_check_interval = Duration::from_millis(50);
            vec![shell(dir, "steady", "exec sleep 1000"), flaky, hog]
        })
        .await;
        let mut rx = fx.handle.subscribe();
        fx.handle.start(&[]).await.expect("start");

        let events = events_until(&mut rx, |seen| {
            of(seen, "flaky")
                .iter()
                .any(|k| matches!(k, EventKind::Fatal { .. }))
                && of(seen, "hog")
                    .iter()
                    .any(|k| matches!(k, EventKind::MemoryLimit { .. }))
                && of(seen, "steady")
                    .iter()
                    .any(|k| matches!(k, EventKind::Running { .. }))
        })
        .await;

        let steady = of(&events, "steady");
        let EventKind::Spawned { pid, .. } = steady[0] else {
            panic!("first event of steady: {steady:?}")
        };
        assert_eq!(steady[1], &EventKind::Running { pid: *pid });

        // flaky: spawned, running, exited with 3; restarted at once (a first failure), exited
        // again: over its budget of one restart, FATAL with the reason.
        let flaky = of(&events, "flaky");
        let names: Vec<&str> = flaky.iter().map(|k| k.name()).collect();
        assert_eq!(
            &names[..4],
            ["spawned", "running", "exited", "spawned"],
            "{flaky:?}"
        );
        assert!(flaky.iter().any(|k| matches!(
            k,
            EventKind::Exited {
                pid: Some(_),
                reason: ExitReason::Code(3)
            }
        )));
        let Some(EventKind::Fatal { reason }) = flaky.last() else {
            panic!("flaky did not end FATAL: {flaky:?}")
        };
        assert!(!reason.is_empty());

        let hog = of(&events, "hog");
        assert!(hog.iter().any(|k| matches!(
            k,
            EventKind::MemoryLimit { used, limit } if used > limit && *limit == 16 * 1024 * 1024
        )));

        // Stopping shows in the stream too, then the tree's end closes it.
        let status = fx.handle.shutdown().await.expect("shutdown");
        assert!(status
            .components
            .iter()
            .all(|c| matches!(c.state, State::Stopped | State::Fatal)));
        let mut rest = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Ok(event)) => rest.push(event),
                Ok(Err(RecvError::Closed)) => break,
                Ok(Err(RecvError::Lagged(n))) => panic!("lagged by {n}"),
                Err(_) => panic!("the stream did not end with the tree: {rest:#?}"),
            }
        }
        let steady = of(&rest, "steady");
        assert!(steady.contains(&&EventKind::Stopping), "{steady:?}");
        assert_eq!(steady.last(), Some(&&EventKind::Stopped), "{steady:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_after_the_tree_is_gone_ends_at_once() {
    bounded(async {
        let mut fx = Fixture::spawn("gone", |dir| vec![shell(dir, "x", "exec sleep 1000")]).await;
        fx.handle.shutdown().await.expect("shutdown");
        fx.join.take().expect("join").await.expect("root task");
        let mut rx = fx.handle.subscribe();
        assert!(matches!(rx.recv().await, Err(RecvError::Closed)));
    })
    .await;
}

#[test]
fn the_builder_checks_what_the_configuration_file_checks() {
    let err = |b: imageserving_actors::spec::ComponentBuilder| b.build().unwrap_err().to_string();
    assert!(err(ComponentSpec::builder("", "true")).contains("invalid"));
    assert!(err(ComponentSpec::builder("ok", "")).contains("`command` is missing"));
    let mut policy = fast_policy();
    policy.max_window = Duration::ZERO;
    assert!(err(ComponentSpec::builder("ok", "true").policy(policy)).contains("max_window"));

    let a = ComponentSpec::builder("a", "true")
        .port(4000)
        .build()
        .unwrap();
    let b = ComponentSpec::builder("b", "true")
        .port(4000)
        .build()
        .unwrap();
    let dup = TreeSpec::builder("t")
        .component(a.clone())
        .component(b)
        .build();
    assert!(dup.unwrap_err().to_string().contains("both use port 4000"));
    let unknown = TreeSpec::builder("t")
        .component(
            ComponentSpec::builder("c", "true")
                .depends_on("nobody")
                .build()
                .unwrap(),
        )
        .build();
    assert!(unknown
        .unwrap_err()
        .to_string()
        .contains("unknown component"));
    assert!(TreeSpec::builder("t").component(a).build().is_ok());
}

// ---------------------------------------------------------------------------------------------
// The tree under the host's own supervisor.

/// A host actor that spawns the tree linked under itself and records what it is told about it.
struct Host;

enum HostMessage {
    Panic,
}

struct HostArgs {
    spec: TreeSpec,
    handle: oneshot::Sender<SupervisorHandle>,
    told: Arc<Mutex<Vec<String>>>,
}

impl Actor for Host {
    type Msg = HostMessage;
    type State = Arc<Mutex<Vec<String>>>;
    type Arguments = HostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: HostArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (handle, _join) = SupervisorHandle::spawn_linked(args.spec, myself.get_cell()).await?;
        let _ = args.handle.send(handle);
        Ok(args.told)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HostMessage::Panic => panic!("the host application panics"),
        }
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        told: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let what = match event {
            SupervisionEvent::ActorTerminated(..) => "terminated",
            SupervisionEvent::ActorFailed(..) => "failed",
            _ => return Ok(()),
        };
        told.lock().unwrap().push(what.to_string());
        Ok(())
    }
}

/// The components of the host tests: `db`, and `app` depending on it; each appends
/// `start <name>` and, on SIGTERM, `stop <name>` to `events.txt`.
fn host_tree(dir: &Path, tag: &str) -> TreeSpec {
    let record = |name: &str| {
        let script = format!(
            "trap 'echo stop {name} >> \"$EVENTS\"; exit 0' TERM; echo start {name} >> \"$EVENTS\"; sleep 1000 & wait"
        );
        ComponentSpec::builder(name, "sh")
            .args(["-c", &script])
            .env("EVENTS", dir.join("events.txt").display().to_string())
            .policy(fast_policy())
            .log(LogSpec::file(dir.join(format!("{name}.log"))))
    };
    TreeSpec::builder(unique_tree_id(tag))
        .component(record("app").depends_on("db").build().unwrap())
        .component(record("db").build().unwrap())
        .build()
        .unwrap()
}

/// Kills every process of `tree` when dropped (the test's own guard, as the host owns the tree).
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        let until = Instant::now() + Duration::from_secs(10);
        while !find_marked(&self.0, None).is_empty() && Instant::now() < until {
            kill_marked(&self.0, None);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Hosted {
    host: ActorRef<HostMessage>,
    host_join: tokio::task::JoinHandle<()>,
    handle: SupervisorHandle,
    told: Arc<Mutex<Vec<String>>>,
    tree_id: String,
    dir: tempfile::TempDir,
    _sweep: Sweep,
}

async fn hosted(tag: &str) -> Hosted {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = host_tree(dir.path(), tag);
    let tree_id = spec.tree_id.clone();
    let sweep = Sweep(tree_id.clone());
    let told = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = oneshot::channel();
    let (host, host_join) = Actor::spawn(
        None,
        Host,
        HostArgs {
            spec,
            handle: tx,
            told: Arc::clone(&told),
        },
    )
    .await
    .expect("spawning the host");
    let handle = rx.await.expect("the tree's handle");
    handle.start(&[]).await.expect("start");
    let running = handle
        .wait_settled(&[], Duration::from_secs(10))
        .await
        .expect("settled");
    assert!(
        running.components.iter().all(|c| c.state == State::Running),
        "{running:#?}"
    );
    assert!(
        wait_for(
            || find_marked(&tree_id, None).len() >= 4,
            Duration::from_secs(5)
        )
        .await
    );
    Hosted {
        host,
        host_join,
        handle,
        told,
        tree_id,
        dir,
        _sweep: sweep,
    }
}

fn recorded(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("events.txt"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_shutdown_through_the_handle_stops_in_reverse_order_and_tells_the_host() {
    bounded(async {
        let h = hosted("host-orderly").await;
        h.handle.shutdown().await.expect("shutdown");
        assert!(find_marked(&h.tree_id, None).is_empty());
        // Both got SIGTERM, the dependent first.
        assert_eq!(
            recorded(h.dir.path()),
            ["start db", "start app", "stop app", "stop db"]
        );
        assert!(
            wait_for(
                || h.told.lock().unwrap().contains(&"terminated".to_string()),
                Duration::from_secs(5)
            )
            .await,
            "the host was not told: {:?}",
            h.told.lock().unwrap()
        );
        h.host.stop(None);
        h.host_join.await.expect("host");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_all_stops_in_reverse_order_then_starts_in_order() {
    bounded(async {
        let h = hosted("host-restart-all").await;
        h.handle.restart_all().await.expect("restart all");
        let status = h
            .handle
            .wait_settled(&[], Duration::from_secs(10))
            .await
            .expect("settled");
        assert!(status.components.iter().all(|c| c.state == State::Running));
        assert_eq!(
            recorded(h.dir.path()),
            [
                "start db",
                "start app",
                "stop app",
                "stop db",
                "start db",
                "start app"
            ]
        );
        h.handle.shutdown().await.expect("shutdown");
        h.host.stop(None);
        h.host_join.await.expect("host");
    })
    .await;
}

/// No process of the hosted tree is left, and its root actor is gone.
async fn assert_tree_gone(tree_id: &str, handle: &SupervisorHandle) {
    assert!(
        wait_for(
            || find_marked(tree_id, None).is_empty(),
            Duration::from_secs(5)
        )
        .await,
        "processes outlive their host: {:?}",
        find_marked(tree_id, None)
    );
    assert!(handle.status().await.is_err(), "the tree still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_actor_killed_takes_every_process_with_it() {
    bounded(async {
        let h = hosted("host-killed").await;
        h.host.kill();
        h.host_join.await.expect("host");
        assert_tree_gone(&h.tree_id, &h.handle).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_actor_panicking_takes_every_process_with_it() {
    bounded(async {
        let h = hosted("host-panics").await;
        h.host.send_message(HostMessage::Panic).expect("send");
        h.host_join.await.expect("host");
        assert_tree_gone(&h.tree_id, &h.handle).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// examples/embed.rs, run as a program.

/// The example's binary, built by `cargo test` with the other targets (or built here).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    // target/<profile>/deps/embed-<hash> -> target/<profile>/examples/embed
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let binary = profile_dir.join("examples").join("embed");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "imageserving-actors", "--example", "embed"])
            .status()
            .expect("running cargo");
        assert!(status.success(), "building the example failed");
    }
    binary
}

#[test]
fn the_embed_example_prints_the_events_and_stops_in_order() {
    let binary = example_binary();
    let mut child = Command::new(&binary)
        .arg("2.5")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running the example");
    let tree = format!("embed-example-{}", child.id());
    let _sweep = Sweep(tree.clone());
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            panic!("the example did not stop in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("output");
    assert!(status.success(), "{status}\n{out}");
    for expected in [
        "ticker spawned: pid ",
        "ticker running: pid ",
        "flaky exited: pid ",
        "exited with status 3",
        "ticker stopping",
        "ticker stopped",
        "final: ticker STOPPED",
    ] {
        assert!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
    // Reverse dependency order: flaky (the dependent) stops before ticker.
    let ticker_stop = out.find("ticker stopping").unwrap();
    if let Some(flaky_stop) = out.find("flaky stopping") {
        assert!(flaky_stop < ticker_stop, "{out}");
    }
    assert!(
        find_marked(&tree, None).is_empty(),
        "the example left processes"
    );
}

// ---------------------------------------------------------------------------------------------
// Reloading a new configuration.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_restarts_only_what_changed_and_an_invalid_one_changes_nothing() {
    bounded(async {
        let fx = Fixture::spawn("reload", |dir| {
            vec![
                shell(dir, "same", "exec sleep 1000"),
                shell(dir, "changed", "exec sleep 1000"),
                shell(dir, "removed", "exec sleep 1000"),
            ]
        })
        .await;
        let before = fx.start_all_running().await;
        let pid = |status: &imageserving_actors::TreeStatus, name: &str| {
            common::component(status, name).pid
        };
        let dir = fx.dir.path();
        let new_tree = |changed_script: &str| {
            TreeSpec::builder(fx.tree_id.clone())
                .component(shell(dir, "same", "exec sleep 1000"))
                .component(shell(dir, "changed", changed_script))
                .component(shell(dir, "added", "exec sleep 1001"))
                .build()
                .unwrap()
        };

        // Invalid: a dependency on nobody. Nothing moves.
        let mut bad = new_tree("exec sleep 2000");
        bad.components[0].depends_on.push("nobody".into());
        let err = fx.handle.reload(bad).await.unwrap_err();
        assert!(err.to_string().contains("unknown component"), "{err}");
        let after_bad = fx.status().await;
        for name in ["same", "changed", "removed"] {
            assert_eq!(pid(&after_bad, name), pid(&before, name), "{name} moved");
        }
        // Another tree's id is refused too.
        let mut other = new_tree("exec sleep 2000");
        other.tree_id.push_str("-other");
        assert!(fx.handle.reload(other).await.is_err());

        let plan = fx
            .handle
            .reload(new_tree("exec sleep 2000"))
            .await
            .expect("reload");
        assert_eq!(plan.added, ["added"]);
        assert_eq!(plan.removed, ["removed"]);
        assert_eq!(plan.changed, ["changed"]);
        assert_eq!(plan.restarted, ["changed"]);

        let after = fx
            .wait_status("the new tree running", Duration::from_secs(10), |s| {
                s.components.len() == 3 && s.components.iter().all(|c| c.state == State::Running)
            })
            .await;
        assert_eq!(
            pid(&after, "same"),
            pid(&before, "same"),
            "same was restarted"
        );
        assert_ne!(pid(&after, "changed"), pid(&before, "changed"));
        let changed_pid = pid(&after, "changed").expect("changed runs");
        let cmdline = std::fs::read(format!("/proc/{changed_pid}/cmdline")).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&cmdline).contains("2000"),
            "the changed component runs its old command"
        );
        assert!(fx.marked(Some("removed")).is_empty(), "removed still runs");
        assert!(after.components.iter().all(|c| c.name != "removed"));

        // The same configuration again changes nothing.
        let again = fx
            .handle
            .reload(new_tree("exec sleep 2000"))
            .await
            .expect("reload");
        assert!(again.is_empty(), "{again:?}");
    })
    .await;
}
