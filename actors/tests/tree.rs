//! A real supervision tree with real (tiny) processes: start and stop order, restarts after a
//! crash or an actor panic, the restart budget, stale events, stop escalation, leftovers,
//! readiness probes and blocked dependencies.
//!
//! Each test spawns its own tree under a unique marker and leaves no process behind, even when
//! it fails (see [`common::Fixture`]).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{
    bounded, command, component, free_port, is_alive, kill9, local, shell, wait_for, Fixture,
};
use imageserving_actors::lifecycle::{Event, ExitReason};
use imageserving_actors::process::find_marked;
use imageserving_actors::State;

/// A component that logs its start (with a nanosecond timestamp) and its stop to `$EVENTS`.
const RECORDS_START_AND_STOP: &str = r#"
trap 'echo "stop $NAME" >> "$EVENTS"; exit 0' TERM
echo "start $NAME $(date +%s%N)" >> "$EVENTS"
sleep 1000 & wait
"#;

/// A component with a child in its group and a grandchild that escaped into its own session.
const FORKS_AND_ESCAPES: &str = "sleep 1000 & setsid sleep 1001 & wait";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_follows_dependencies_and_stop_reverses_them() {
    bounded(async {
        let fx = Fixture::spawn("order", |dir| {
            let events = dir.join("events").display().to_string();
            // `c` comes first in the configuration: the order must come from `depends_on`.
            ["c", "a", "b"]
                .into_iter()
                .map(|name| {
                    let mut c = shell(dir, name, RECORDS_START_AND_STOP);
                    c.env = vec![
                        ("NAME".into(), name.into()),
                        ("EVENTS".into(), events.clone()),
                    ];
                    if name == "c" {
                        c.depends_on = vec!["a".into(), "b".into()];
                    }
                    c
                })
                .collect()
        })
        .await;
        let events = fx.dir.path().join("events");
        let read_events = || std::fs::read_to_string(&events).unwrap_or_default();

        let status = fx.start_all_running().await;
        for c in &status.components {
            assert_eq!(c.restarts, 0, "{c:?}");
        }
        // Every start line is written before the component can be RUNNING.
        let text = read_events();
        let starts: Vec<(&str, u128)> = text
            .lines()
            .filter_map(|l| {
                let mut words = l.strip_prefix("start ")?.split(' ');
                Some((words.next()?, words.next()?.parse().ok()?))
            })
            .collect();
        let names: Vec<&str> = starts.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), 3, "{text}");
        assert_eq!(names[2], "c", "c must start last: {text}");
        let c_started = starts[2].1;
        for dep in ["a", "b"] {
            let running_since = component(&status, dep)
                .since
                .duration_since(UNIX_EPOCH)
                .expect("since after the epoch")
                .as_nanos();
            assert!(
                c_started > running_since,
                "c started at {c_started} ns, before {dep} was RUNNING at {running_since} ns"
            );
        }

        fx.handle.stop(&[]).await.expect("stop");
        let status = fx.status().await;
        for c in &status.components {
            assert_eq!(c.state, State::Stopped, "{c:?}");
            assert_eq!(c.pid, None, "{c:?}");
        }
        assert_eq!(fx.marked(None), Vec::<u32>::new(), "processes survive stop");
        let text = read_events();
        let stops: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("stop "))
            .collect();
        assert_eq!(
            stops.len(),
            3,
            "every component got the stop signal: {text}"
        );
        assert_eq!(stops[0], "c", "c must stop before its dependencies: {text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_stops_gracefully_and_leaves_dependents_running() {
    bounded(async {
        let fx = Fixture::spawn("restart", |dir| {
            let events = dir.join("events").display().to_string();
            ["a", "b"]
                .into_iter()
                .map(|name| {
                    let mut c = shell(dir, name, RECORDS_START_AND_STOP);
                    c.env = vec![
                        ("NAME".into(), name.into()),
                        ("EVENTS".into(), events.clone()),
                    ];
                    if name == "b" {
                        c.depends_on = vec!["a".into()];
                    }
                    c
                })
                .collect()
        })
        .await;
        let status = fx.start_all_running().await;
        let (old_a, b) = (
            component(&status, "a").pid.expect("a pid"),
            component(&status, "b").pid.expect("a pid"),
        );

        fx.handle.restart("a").await.expect("restart");
        let status = fx
            .wait_status("a RUNNING with a new pid", Duration::from_secs(10), |s| {
                let a = component(s, "a");
                a.state == State::Running && a.pid.is_some_and(|p| p != old_a)
            })
            .await;
        let a = component(&status, "a");
        assert_eq!(a.restarts, 0, "an operator restart is not automatic: {a:?}");
        assert!(!is_alive(old_a), "the old process survives");
        let events = std::fs::read_to_string(fx.dir.path().join("events")).unwrap_or_default();
        let a_events: Vec<&str> = events
            .lines()
            .filter(|l| l.split(' ').nth(1) == Some("a"))
            .map(|l| l.split(' ').next().unwrap_or_default())
            .collect();
        assert_eq!(a_events, ["start", "stop", "start"], "{events}");
        let b_now = component(&status, "b");
        assert_eq!(
            (b_now.state, b_now.pid, b_now.restarts),
            (State::Running, Some(b), 0),
            "the dependent must keep running"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_restarted_with_a_new_pid() {
    bounded(async {
        let fx = Fixture::spawn("kill9", |dir| vec![command(dir, "x", &["sleep", "1000"])]).await;
        let status = fx.start_all_running().await;
        let old = component(&status, "x").pid.expect("a pid");

        kill9(old);
        let status = fx
            .wait_status("x RUNNING with a new pid", Duration::from_secs(10), |s| {
                let x = component(s, "x");
                x.state == State::Running && x.pid.is_some_and(|p| p != old)
            })
            .await;
        let x = component(&status, "x");
        assert_eq!(x.restarts, 1, "{x:?}");
        let last = x.last_exit.as_deref().unwrap_or_default();
        assert!(last.contains("signal 9"), "last_exit: {last:?}");
        assert_eq!(fx.marked(Some("x")), vec![x.pid.expect("a pid")]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_component_actor_is_replaced_without_two_processes_at_once() {
    bounded(async {
        let fx = Fixture::spawn("panic", |dir| vec![command(dir, "x", &["sleep", "1000"])]).await;
        let status = fx.start_all_running().await;
        let mut pids = vec![component(&status, "x").pid.expect("a pid")];

        // Count the marked processes of `x`, as often as we can, for the whole recovery.
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (done, tree) = (Arc::clone(&done), fx.tree_id.clone());
            std::thread::spawn(move || {
                let until = Instant::now() + common::TEST_LIMIT;
                let mut most = 0;
                while !done.load(Ordering::Relaxed) && Instant::now() < until {
                    most = most.max(find_marked(&tree, Some("x")).len());
                }
                most
            })
        };

        // Several rounds, so that a race between the old actor's tasks and the new actor's
        // process has more than one chance to show.
        for round in 1..=3 {
            let old = *pids.last().expect("a pid");
            fx.handle.inject_actor_panic("x");
            let status = fx
                .wait_status(
                    "x RUNNING again with a new pid",
                    Duration::from_secs(10),
                    |s| {
                        let x = component(s, "x");
                        x.state == State::Running && x.pid.is_some_and(|p| p != old)
                    },
                )
                .await;
            let x = component(&status, "x");
            assert_eq!(x.restarts, round, "one restart per replaced actor: {x:?}");
            let last = x.last_exit.as_deref().unwrap_or_default();
            assert!(last.contains("component actor failed"), "{last:?}");
            pids.push(x.pid.expect("a pid"));
        }

        // The new process stays: nothing left over from an old actor kills it later.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let x = fx.component("x").await;
        done.store(true, Ordering::Relaxed);
        let most = sampler.join().expect("sampler");
        let current = *pids.last().expect("a pid");
        assert_eq!(
            (x.state, x.pid, x.restarts),
            (State::Running, Some(current), 3)
        );
        assert!(most <= 1, "{most} processes of x existed at once");
        assert_eq!(fx.marked(Some("x")), vec![current]);
        for &old in &pids[..pids.len() - 1] {
            assert!(!is_alive(old), "old process {old} survives");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_quickly_during_a_restart_loop() {
    bounded(async {
        let fx = Fixture::spawn("loop", |dir| {
            // The short sleep keeps each attempt in STARTING long enough to be seen.
            let mut c = shell(dir, "x", "sleep 0.05; exit 1");
            c.policy.max_restarts = 1000;
            c.policy.backoff_initial = Duration::from_millis(50);
            c.policy.backoff_max = Duration::from_millis(400);
            vec![c]
        })
        .await;
        fx.handle.start(&[]).await.expect("start");

        let mut seen = HashSet::new();
        let mut restarts = Vec::new();
        let mut slowest = Duration::ZERO;
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(3) {
            let asked = Instant::now();
            let status = fx.handle.status().await.expect("status");
            let took = asked.elapsed();
            slowest = slowest.max(took);
            assert!(took < Duration::from_millis(200), "status took {took:?}");
            let x = component(&status, "x");
            seen.insert(x.state);
            restarts.push(x.restarts);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            seen.contains(&State::Backoff) && seen.contains(&State::Starting),
            "states seen: {seen:?}"
        );
        assert!(
            restarts.windows(2).all(|w| w[0] <= w[1]),
            "restarts went down"
        );
        let (first, last) = (restarts[0], *restarts.last().expect("samples"));
        assert!(
            last >= first + 3,
            "restarts only went from {first} to {last} (slowest status: {slowest:?})"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_ends_fatal_and_start_clears_it() {
    bounded(async {
        let fx = Fixture::spawn("fatal", |dir| {
            let mut c = shell(dir, "x", "exit 3");
            c.policy.max_restarts = 3;
            c.policy.max_window = Duration::from_secs(60);
            c.policy.backoff_initial = Duration::from_millis(20);
            vec![c]
        })
        .await;
        fx.handle.start(&[]).await.expect("start");
        let fatal = |what| {
            fx.wait_status(what, Duration::from_secs(10), |s| {
                component(s, "x").state == State::Fatal
            })
        };
        let status = fatal("x FATAL").await;
        let x = component(&status, "x");
        let reason = x.fatal_reason.as_deref().unwrap_or_default();
        assert!(reason.contains("4 failures"), "{reason:?}");
        assert!(reason.contains("exited with status 3"), "{reason:?}");
        assert_eq!(x.restarts, 3, "{x:?}");
        assert_eq!(x.pid, None);
        assert!(fx.marked(None).is_empty());

        fx.handle.start(&["x".into()]).await.expect("start again");
        let x = fx.component("x").await;
        assert_ne!(x.state, State::Fatal, "start must clear FATAL: {x:?}");
        assert_eq!(x.fatal_reason, None, "{x:?}");
        // With a fresh budget it takes four more failures to give up again.
        let status = fatal("x FATAL again").await;
        let x = component(&status, "x");
        let reason = x.fatal_reason.as_deref().unwrap_or_default();
        assert!(reason.contains("4 failures"), "{reason:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_exit_is_ignored() {
    bounded(async {
        let fx = Fixture::spawn("stale", |dir| vec![command(dir, "x", &["sleep", "1000"])]).await;
        let status = fx.start_all_running().await;
        // Crash once, so the stale event names a generation that really existed.
        let first = component(&status, "x").pid.expect("a pid");
        kill9(first);
        let before = fx
            .wait_status("x RUNNING after a crash", Duration::from_secs(10), |s| {
                let x = component(s, "x");
                x.state == State::Running && x.pid.is_some_and(|p| p != first)
            })
            .await;
        let before = component(&before, "x").clone();
        assert!(before.generation >= 2, "{before:?}");

        for generation in [before.generation - 1, 0] {
            fx.handle.inject_event(
                "x",
                Event::Exited {
                    generation,
                    reason: ExitReason::Code(1),
                },
            );
        }
        // Nothing may happen: give it time to go wrong.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = fx.component("x").await;
        assert_eq!(after.state, State::Running, "{after:?}");
        assert_eq!(after.pid, before.pid, "{after:?}");
        assert_eq!(after.generation, before.generation, "{after:?}");
        assert_eq!(after.restarts, before.restarts, "{after:?}");
        assert_eq!(after.last_exit, before.last_exit, "{after:?}");
        let pid = after.pid.expect("a pid");
        assert!(is_alive(pid));
        assert_eq!(fx.marked(Some("x")), vec![pid]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_cancels_a_pending_restart() {
    bounded(async {
        let fx = Fixture::spawn("cancel", |dir| {
            let mut c = shell(dir, "x", "sleep 0.3; exit 1");
            c.policy.start_secs = Duration::from_millis(100);
            c.policy.backoff_initial = Duration::from_secs(2);
            c.policy.backoff_max = Duration::from_secs(5);
            vec![c]
        })
        .await;
        fx.handle.start(&[]).await.expect("start");
        // The first failure restarts at once; the second backs off for about 2 s.
        fx.wait_status("x in BACKOFF", Duration::from_secs(10), |s| {
            component(s, "x").state == State::Backoff
        })
        .await;

        fx.handle.stop(&["x".into()]).await.expect("stop");
        let stopped = fx.component("x").await;
        assert_eq!(stopped.state, State::Stopped, "{stopped:?}");
        assert!(fx.marked(None).is_empty());

        // Past the backoff delay (and its jitter): the cancelled restart must not happen.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let later = fx.component("x").await;
        assert_eq!(later.state, State::Stopped, "{later:?}");
        assert_eq!(later.generation, stopped.generation, "{later:?}");
        assert_eq!(later.restarts, stopped.restarts, "{later:?}");
        assert!(
            fx.marked(None).is_empty(),
            "a process was spawned after stop"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trees_with_the_same_component_names_are_independent() {
    bounded(async {
        let mut one = Fixture::spawn("twin-one", |dir| {
            vec![command(dir, "web", &["sleep", "1000"])]
        })
        .await;
        let two = Fixture::spawn("twin-two", |dir| {
            vec![command(dir, "web", &["sleep", "1000"])]
        })
        .await;
        let pid_one = component(&one.start_all_running().await, "web")
            .pid
            .expect("a pid");
        let pid_two = component(&two.start_all_running().await, "web")
            .pid
            .expect("a pid");
        assert_eq!(one.marked(None), vec![pid_one]);
        assert_eq!(two.marked(None), vec![pid_two]);

        kill9(pid_one);
        one.wait_status("tree one restarted web", Duration::from_secs(10), |s| {
            let web = component(s, "web");
            web.state == State::Running && web.pid.is_some_and(|p| p != pid_one)
        })
        .await;
        let web_two = two.component("web").await;
        assert_eq!(
            (web_two.state, web_two.pid, web_two.restarts),
            (State::Running, Some(pid_two), 0)
        );

        let last = one.handle.shutdown().await.expect("shutdown of tree one");
        assert!(last.components.iter().all(|c| c.state == State::Stopped));
        let join = one.join.take().expect("join handle");
        tokio::time::timeout(Duration::from_secs(5), join)
            .await
            .expect("tree one's root actor did not stop")
            .expect("tree one's root actor task");
        assert!(one.marked(None).is_empty());
        let web_two = two.component("web").await;
        assert_eq!(
            (web_two.state, web_two.pid, web_two.restarts),
            (State::Running, Some(pid_two), 0)
        );
        assert!(is_alive(pid_two));
        assert_eq!(two.marked(None), vec![pid_two]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_ignores_sigterm_is_killed_after_stop_timeout() {
    bounded(async {
        let fx = Fixture::spawn("stubborn", |dir| {
            let mut c = shell(dir, "x", r#"trap "" TERM; while :; do sleep 0.1; done"#);
            c.policy.stop_timeout = Duration::from_millis(500);
            vec![c]
        })
        .await;
        fx.start_all_running().await;

        let asked = Instant::now();
        fx.handle.stop(&[]).await.expect("stop");
        let took = asked.elapsed();
        assert!(
            took >= Duration::from_millis(500),
            "stop returned after {took:?}: SIGTERM cannot have worked"
        );
        assert!(took < Duration::from_secs(5), "stop took {took:?}");
        assert_eq!(fx.component("x").await.state, State::Stopped);
        assert!(fx.marked(None).is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_grandchildren_that_left_the_group() {
    bounded(async {
        let fx = Fixture::spawn("grandchildren", |dir| {
            vec![shell(dir, "x", FORKS_AND_ESCAPES)]
        })
        .await;
        let status = fx.start_all_running().await;
        let main = component(&status, "x").pid.expect("a pid");
        let escaped = || {
            fx.marked(Some("x")).into_iter().any(|p| {
                let pid = nix::unistd::Pid::from_raw(i32::try_from(p).expect("pid"));
                nix::unistd::getpgid(Some(pid)).is_ok_and(|g| g.as_raw() as u32 != main)
            })
        };
        assert!(
            wait_for(
                || fx.marked(Some("x")).len() >= 3 && escaped(),
                Duration::from_secs(5)
            )
            .await,
            "expected sh, sleep and an escaped sleep: {:?}",
            fx.marked(Some("x"))
        );

        fx.handle.stop(&[]).await.expect("stop");
        assert_eq!(fx.marked(None), Vec::<u32>::new(), "survivors of stop");
        assert_eq!(fx.component("x").await.state, State::Stopped);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probe_gates_running_and_a_port_that_never_opens_times_out() {
    bounded(async {
        let (ready_port, dead_port) = (free_port(), free_port());
        let fx = Fixture::spawn("probe", |dir| {
            let script = "import os, socket, time\n\
                          time.sleep(0.5)\n\
                          s = socket.socket()\n\
                          s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                          s.bind(('127.0.0.1', int(os.environ['PORT'])))\n\
                          s.listen()\n\
                          while True:\n    s.accept()[0].close()\n";
            let mut late = command(dir, "late", &["python3", "-c", script]);
            late.env = vec![("PORT".into(), ready_port.to_string())];
            late.probe = Some(local(ready_port));
            let mut never = command(dir, "never", &["sleep", "1000"]);
            never.probe = Some(local(dead_port));
            never.policy.start_timeout = Duration::from_secs(1);
            vec![late, never]
        })
        .await;
        fx.handle.start(&[]).await.expect("start");
        let first = fx
            .wait_status("never spawned", Duration::from_secs(5), |s| {
                component(s, "never").pid.is_some()
            })
            .await;
        let first_pid = component(&first, "never").pid.expect("a pid");

        // Before the port accepts, `late` stays STARTING, also well past `start_secs`.
        let mut starting_past_start_secs = false;
        let until = Instant::now() + Duration::from_secs(10);
        let late = loop {
            let late = fx.component("late").await;
            match late.state {
                State::Running => break late,
                State::Starting => {
                    starting_past_start_secs |=
                        late.uptime.is_some_and(|u| u >= Duration::from_millis(300));
                }
                other => panic!("late went {other}: {late:?}\n{}", fx.logs()),
            }
            assert!(Instant::now() < until, "late never RUNNING: {late:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            starting_past_start_secs,
            "late was never seen STARTING past start_secs"
        );
        assert_eq!(late.restarts, 0, "{late:?}");
        assert!(
            late.uptime.is_some_and(|u| u >= Duration::from_millis(500)),
            "RUNNING before the port could accept: {late:?}"
        );
        tokio::net::TcpStream::connect(local(ready_port))
            .await
            .expect("the port accepts once late is RUNNING");

        let status = fx
            .wait_status(
                "never killed for its start timeout",
                Duration::from_secs(10),
                |s| component(s, "never").last_exit.is_some(),
            )
            .await;
        let never = component(&status, "never");
        let last = never.last_exit.as_deref().unwrap_or_default();
        assert!(last.contains("not ready within 1s"), "{last:?}");
        assert!(
            wait_for(|| !is_alive(first_pid), Duration::from_secs(5)).await,
            "the process that was never ready survives"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_dependency_blocks_its_dependent_and_wait_settled_returns() {
    bounded(async {
        let fx = Fixture::spawn("blocked", |dir| {
            let mut a = shell(dir, "a", "exit 1");
            a.policy.max_restarts = 2;
            a.policy.backoff_initial = Duration::from_millis(20);
            // Each attempt must fail before it counts as up, however slow the machine is to
            // run `sh`: otherwise a slow `exit 1` is RUNNING for a moment and `b` starts.
            a.policy.start_secs = Duration::from_secs(5);
            let mut b = command(dir, "b", &["sleep", "1000"]);
            b.depends_on = vec!["a".into()];
            vec![a, b]
        })
        .await;
        // Starting `b` alone brings up its dependency first.
        fx.handle.start(&["b".into()]).await.expect("start");

        let asked = Instant::now();
        let status = fx
            .handle
            .wait_settled(&[], Duration::from_secs(30))
            .await
            .expect("wait_settled");
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(5), "wait_settled took {took:?}");
        let a = component(&status, "a");
        let b = component(&status, "b");
        assert_eq!(a.state, State::Fatal, "{a:?}");
        assert_eq!(b.state, State::Stopped, "{b:?}");
        let blocked = b.blocked_by.as_deref().unwrap_or_default();
        assert!(blocked.contains('a'), "blocked_by: {:?}", b.blocked_by);
        assert_eq!(b.generation, 0, "b was never spawned: {b:?}");
        assert!(fx.marked(Some("b")).is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_root_actor_kills_every_process() {
    bounded(async {
        let mut fx = Fixture::spawn("rootkill", |dir| {
            vec![
                command(dir, "plain", &["sleep", "1000"]),
                shell(dir, "forks", FORKS_AND_ESCAPES),
            ]
        })
        .await;
        fx.start_all_running().await;
        assert!(
            wait_for(|| fx.marked(None).len() >= 4, Duration::from_secs(5)).await,
            "{:?}",
            fx.marked(None)
        );

        // No orderly shutdown: the actors die, and their guards must kill the processes.
        fx.handle.actor().kill();
        let join = fx.join.take().expect("join handle");
        tokio::time::timeout(Duration::from_secs(5), join)
            .await
            .expect("the root actor did not stop")
            .expect("the root actor's task");
        assert!(
            wait_for(|| fx.marked(None).is_empty(), Duration::from_secs(5)).await,
            "processes survive their tree: {:?}",
            fx.marked(None)
        );
        assert!(fx.handle.status().await.is_err(), "a dead tree answered");
    })
    .await;
}

/// The exit watcher of a replaced actor outlives it and sweeps by the component's marker, which
/// the replacement's processes carry too: while the old process group takes time to die, it
/// kills every new process of the component (the `kill_leftovers` call in
/// `ComponentState::spawn`, component.rs). Fails until that sweep is limited to its own attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleanup_of_a_replaced_actor_spares_the_new_process() {
    bounded(async {
        let fx = Fixture::spawn("successor", |dir| {
            // A gigabyte takes the kernel tens of milliseconds to free after SIGKILL: the old
            // process is still dying, and its marker already unreadable, while the replacement
            // actor spawns.
            let script = r#"python3 -c 'import os, time
ballast = b"x" * (1 << 30)
open(os.environ["READY"] + str(os.getppid()), "w").close()
time.sleep(1000)' & wait"#;
            let mut c = shell(dir, "x", script);
            c.env = vec![("READY".into(), dir.join("ready-").display().to_string())];
            vec![c]
        })
        .await;
        let status = fx.start_all_running().await;
        let old = component(&status, "x").pid.expect("a pid");
        let ready = fx.dir.path().join(format!("ready-{old}"));
        assert!(
            wait_for(|| ready.exists(), Duration::from_secs(20)).await,
            "the ballast was never allocated\n{}",
            fx.logs()
        );

        fx.handle.inject_actor_panic("x");
        let status = fx
            .wait_status("x STARTING with a new pid", Duration::from_secs(10), |s| {
                let x = component(s, "x");
                x.pid.is_some_and(|p| p != old)
            })
            .await;
        let new = component(&status, "x").pid.expect("a pid");
        // The old actor's tasks have had every chance to finish their cleanup by now.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let x = fx.component("x").await;
        assert_eq!(
            (x.pid, x.restarts),
            (Some(new), 1),
            "the replacement's process was killed: {x:?}"
        );
        assert!(
            x.last_exit
                .as_deref()
                .is_some_and(|l| l.contains("component actor failed")),
            "{x:?}"
        );
    })
    .await;
}

/// A component that crashes every 0.3 s once running; with `max_restarts = 2` it is FATAL at
/// its third failure, unless someone reports each crash as a poison request's.
fn crashes_after_running(dir: &std::path::Path, port: u16) -> imageserving_actors::ComponentSpec {
    let ready = dir.join("ready");
    std::fs::write(&ready, b"").expect("the ready file");
    let mut c = shell(dir, "x", "sleep 0.3; exit 3");
    c.probe = Some(local(port));
    c.ready = imageserving_actors::spec::Ready::File(ready);
    c.policy.start_secs = Duration::from_millis(50);
    c.policy.max_restarts = 2;
    c.policy.max_window = Duration::from_secs(60);
    c.policy.backoff_initial = Duration::from_millis(20);
    c
}

/// The poison notification (issue #14 §3): crashes another component's process reports as a
/// poison request's leave the restart budget, so they never make the component FATAL; the
/// same crashes without the reports do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_reported_as_poison_requests_do_not_make_a_component_fatal() {
    bounded(async {
        let port = free_port();
        // Without reports from a component: FATAL at the third failure. Reports from a process
        // that is no component's (this test) are ignored.
        let fx = Fixture::spawn("poison-control", |dir| vec![crashes_after_running(dir, port)]).await;
        fx.handle.start(&[]).await.expect("start");
        let socket = fx.dir.path().join("notify.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let outsider = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let sender = std::os::unix::net::UnixDatagram::unbound().expect("a socket");
                while !stop.load(Ordering::Relaxed) {
                    let message = format!("X_IMAGESERVING_POISON=127.0.0.1:{port}");
                    let _ = sender.send_to(message.as_bytes(), &socket);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        let status = fx
            .wait_status("x FATAL", Duration::from_secs(10), |s| {
                component(s, "x").state == State::Fatal
            })
            .await;
        stop.store(true, Ordering::Relaxed);
        outsider.join().expect("the outsider");
        assert_eq!(component(&status, "x").restarts, 2);
        drop(fx);

        // With a component that reports every crash of x as a poison request's, from its own
        // process (the supervisor knows the sender by the kernel's credentials).
        let reporter = format!(
            "import os, socket, time\n\
             s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
             while True:\n    \
                 s.sendto(b'X_IMAGESERVING_POISON=127.0.0.1:{port}', os.environ['NOTIFY_SOCKET'])\n    \
                 time.sleep(0.05)\n"
        );
        let fx = Fixture::spawn("poison", |dir| {
            vec![
                crashes_after_running(dir, port),
                command(dir, "reporter", &["python3", "-c", &reporter]),
            ]
        })
        .await;
        fx.handle.start(&[]).await.expect("start");
        let status = fx
            .wait_status("x restarted 5 times", Duration::from_secs(15), |s| {
                let x = component(s, "x");
                assert_ne!(x.state, State::Fatal, "{x:?}\n{}", fx.logs());
                x.restarts >= 5
            })
            .await;
        assert_eq!(component(&status, "reporter").state, State::Running);
        let logs = fx.logs();
        assert!(
            logs.contains("poison request that reporter quarantined"),
            "{logs}"
        );
    })
    .await;
}
