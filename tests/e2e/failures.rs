//! Components that misbehave (crash, loop, ignore SIGTERM, fork escapees) and a supervisor
//! that is killed outright: the supervisor recovers what it can, gives up when it must, and
//! never leaves a process behind.

use std::time::Duration;

use crate::harness::{
    component, component_of, describe, free_port, pid, pids, stack_config, wait_for, TestHome,
    SETTLE, SUPERVISOR,
};
use crate::procs::{self, ProcId};

#[test]
fn killed_components_are_restarted_with_a_new_pid() {
    let home = TestHome::stack();
    home.run(&["start"]).expect_code(0);
    home.wait_running(&["is", "svg", "ps"]);

    for name in ["is", "svg", "ps"] {
        let before = home.status_json();
        let c = component_of(&before, name);
        let old = ProcId::of(pid(&c["pid"]).expect("a pid")).expect("it runs");
        let restarts = c["restarts"].as_u64().expect("restarts");

        assert!(procs::kill(old), "could not kill {name}");
        let mut last = serde_json::Value::Null;
        wait_for(SETTLE, format_args!("{name} RUNNING again"), || {
            let Some(status) = home.try_status_json() else {
                return false;
            };
            let c = component_of(&status, name);
            let ok = c["state"] == "RUNNING"
                && pid(&c["pid"]).is_some_and(|p| p != old.pid)
                && c["restarts"].as_u64() == Some(restarts + 1);
            last = c.clone();
            ok
        });
        assert!(
            last["last_exit"]
                .as_str()
                .is_some_and(|e| e.contains("SIGKILL")),
            "last_exit should say how it died\n{last:#}"
        );
        assert!(!old.is_alive());
    }
}

#[test]
fn crash_loop_ends_fatal_with_the_reason() {
    let config = format!(
        "{SUPERVISOR}{}{}",
        component(
            "crasher",
            &["sh", "-c", "exit 1"],
            "max_restarts = 2\nbackoff_initial = \"20ms\""
        ),
        component("steady", &["sleep", "1000"], ""),
    );
    let home = TestHome::new(&config);

    let out = home.run(&["start"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("crasher") && out.stderr.contains("exited with status 1"),
        "stderr names the component and why\n{out}"
    );
    assert!(
        out.stderr.contains("logs/crasher.log"),
        "stderr points at the log\n{out}"
    );
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("crasher"))
        .unwrap_or_else(|| panic!("no line for crasher\n{out}"));
    assert!(line.contains("FATAL"), "{out}");

    let status = home.status_json();
    let crasher = component_of(&status, "crasher");
    assert_eq!(crasher["state"], "FATAL", "{crasher:#}");
    assert!(crasher["pid"].is_null(), "{crasher:#}");
    let info = crasher["info"].as_str().unwrap_or_default();
    assert!(
        info.contains("failures") && info.contains("exited with status 1"),
        "info says why it gave up: {info:?}"
    );
    assert!(
        crasher["fatal_reason"].as_str().is_some_and(|r| r == info),
        "{crasher:#}"
    );
    // Its neighbour is not affected.
    assert_eq!(component_of(&status, "steady")["state"], "RUNNING");

    // The table shows it too.
    let table = home.run(&["status"]);
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("crasher"))
        .unwrap_or_else(|| panic!("no row for crasher\n{table}"));
    assert!(row.contains("FATAL") && row.contains("failures"), "{table}");
    // `status <component>` says by its exit code that it does not run.
    home.run(&["status", "crasher"]).expect_code(3);
    home.run(&["status", "steady"]).expect_code(0);

    // FATAL stays FATAL: nothing restarts it behind our back.
    std::thread::sleep(Duration::from_millis(300));
    let again = home.status_json();
    assert_eq!(component_of(&again, "crasher")["state"], "FATAL");
    assert_eq!(
        component_of(&again, "crasher")["restarts"],
        crasher["restarts"]
    );
}

#[test]
fn component_ignoring_sigterm_is_killed_after_its_stop_timeout() {
    let config = format!(
        "{SUPERVISOR}{}",
        component(
            "stubborn",
            &["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"],
            "stop_timeout = \"1s\""
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    let status = home.wait_running(&["stubborn"]);
    let stubborn = ProcId::of(pids(&status)["stubborn"]).expect("it runs");

    let out = home.run(&["stop"]);
    out.expect_code(0);
    assert!(
        out.elapsed >= Duration::from_secs(1),
        "stop did not wait for the stop timeout\n{out}"
    );
    assert!(!stubborn.is_alive(), "the stubborn component survived stop");
    home.assert_nothing_runs();
}

#[test]
fn forked_and_setsid_grandchildren_die_with_their_component() {
    let config = format!(
        "{SUPERVISOR}{}{}",
        component("forker", &["sh", "-c", "sleep 1000 & wait"], ""),
        component("escaper", &["sh", "-c", "setsid sleep 1000 & wait"], ""),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    home.wait_running(&["forker", "escaper"]);

    // Each component's `sleep` is up, and the escaper's left the process group.
    let sleeps = |home: &TestHome| -> Vec<ProcId> {
        home.marked()
            .into_iter()
            .filter(|id| procs::Stat::read(id.pid).is_some_and(|s| s.comm == "sleep"))
            .collect()
    };
    wait_for(SETTLE, "two grandchildren", || sleeps(&home).len() == 2);
    let grandchildren = sleeps(&home);
    let leaders = grandchildren
        .iter()
        .filter(|id| procs::Stat::read(id.pid).is_some_and(|s| s.session == id.pid))
        .count();
    assert_eq!(
        leaders, 1,
        "exactly one grandchild left for a session of its own"
    );

    home.run(&["stop"]).expect_code(0);
    for id in &grandchildren {
        assert!(!id.is_alive(), "grandchild {} survived stop", id.pid);
    }
    home.assert_nothing_runs();
}

#[test]
fn killed_supervisor_takes_its_components_along_and_next_start_sweeps_escapees() {
    let config = format!(
        "{SUPERVISOR}{}{}",
        stack_config(),
        component("escaper", &["sh", "-c", "setsid sleep 1000 & wait"], ""),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    let status = home.wait_running(&["is", "svg", "ps", "escaper"]);
    let sup = ProcId::of(pid(&status["supervisor"]["pid"]).expect("pid")).expect("it runs");
    let components: Vec<(String, ProcId)> = pids(&status)
        .into_iter()
        .map(|(n, p)| (n, ProcId::of(p).expect("it runs")))
        .collect();
    let is_escapee = |id: &ProcId| {
        procs::Stat::read(id.pid).is_some_and(|s| s.comm == "sleep")
            && !components.iter().any(|(_, c)| c == id)
    };
    wait_for(SETTLE, "the escaper's grandchild", || {
        home.marked().iter().any(is_escapee)
    });
    let escapee = *home
        .marked()
        .iter()
        .find(|id| is_escapee(id))
        .expect("the escapee");
    assert!(
        procs::Stat::read(escapee.pid).is_some_and(|s| s.session == escapee.pid),
        "the escapee leads a session of its own"
    );

    assert!(procs::kill(sup), "could not kill the supervisor");
    wait_for(SETTLE, "the supervisor to die", || !sup.is_alive());
    // PR_SET_PDEATHSIG: every component dies with the supervisor...
    wait_for(
        Duration::from_secs(5),
        "the components to die with the supervisor",
        || components.iter().all(|(_, id)| !id.is_alive()),
    );
    // ...but a grandchild that left for its own session is out of the kernel's reach.
    assert!(
        escapee.is_alive(),
        "the setsid grandchild was expected to outlive a SIGKILLed supervisor"
    );
    let out = home.run(&["status"]);
    out.expect_code(3);
    assert!(out.stdout.contains("not running"), "{out}");

    // The next start sweeps what the dead supervisor left, then works.
    home.run(&["start"]).expect_code(0);
    assert!(
        !escapee.is_alive(),
        "start did not sweep the leftover grandchild"
    );
    let status = home.wait_running(&["is", "svg", "ps", "escaper"]);
    assert_ne!(pid(&status["supervisor"]["pid"]), Some(sup.pid));
    // Only the new escaper's grandchild runs.
    let sleeps = || -> Vec<ProcId> {
        home.marked()
            .into_iter()
            .filter(|id| procs::Stat::read(id.pid).is_some_and(|s| s.comm == "sleep"))
            .collect()
    };
    wait_for(SETTLE, "the new escaper's grandchild", || {
        !sleeps().is_empty()
    });
    let left = sleeps();
    assert_eq!(left.len(), 1, "{}", describe(&left));
    assert_ne!(left[0], escapee);
}

/// The daemon is a child subreaper: a descendant that leaves its group and loses its parent is
/// adopted by the daemon (not by init), reaped when it dies on its own, and killed with its
/// component; a restart does not have to read all of /proc to find it.
#[test]
fn orphans_are_adopted_by_the_daemon_reaped_and_killed_with_their_component() {
    let config = format!(
        "{SUPERVISOR}{}{}",
        component(
            "escaper",
            &[
                "sh",
                "-c",
                "(setsid sleep 0.3 &); (setsid sleep 1000 &); exec sleep 1000",
            ],
            "",
        ),
        // Its subtree is skipped by the escaper's cleanup, and must be left alone.
        component("bystander", &["sh", "-c", "sleep 1000 & wait"], ""),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    let status = home.wait_running(&["escaper", "bystander"]);
    let daemon = pid(&status["supervisor"]["pid"]).expect("the daemon's pid");
    let main = pid(&component_of(&status, "escaper")["pid"]).expect("a pid");
    let bystander = pid(&component_of(&status, "bystander")["pid"]).expect("a pid");
    let children = || -> Vec<(u32, procs::Stat)> {
        let mut out = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{daemon}/task")).unwrap() {
            let list =
                std::fs::read_to_string(task.unwrap().path().join("children")).unwrap_or_default();
            for pid in list.split_whitespace().filter_map(|p| p.parse().ok()) {
                if let Some(stat) = procs::Stat::read(pid) {
                    out.push((pid, stat));
                }
            }
        }
        out
    };
    // The long sleeper is adopted; the short one, once it exits, is reaped: no zombie stays.
    let mut seen = Vec::new();
    wait_for(SETTLE, "the escapee adopted and the other reaped", || {
        seen = children();
        let adopted = seen
            .iter()
            .filter(|(pid, s)| *pid != main && s.comm == "sleep" && s.is_alive())
            .count();
        let zombies = seen.iter().filter(|(_, s)| !s.is_alive()).count();
        adopted == 1 && zombies == 0 && seen.len() == 3
    });
    let bystanders = home
        .marked()
        .into_iter()
        .filter(|id| procs::Stat::read(id.pid).is_some_and(|s| s.pgrp == bystander))
        .collect::<Vec<_>>();
    assert_eq!(bystanders.len(), 2, "the bystander's sh and its sleep");
    let escapee = seen
        .iter()
        .find(|(pid, _)| *pid != main && *pid != bystander)
        .map(|(pid, _)| ProcId::of(*pid).expect("the escapee"))
        .unwrap();

    // A crash of the component takes its adopted escapee with it, and leaves no zombie.
    assert!(procs::kill(ProcId::of(main).expect("main runs")));
    wait_for(SETTLE, "escaper restarted", || {
        home.try_status_json().is_some_and(|s| {
            let c = component_of(&s, "escaper");
            c["state"] == "RUNNING" && pid(&c["pid"]).is_some_and(|p| p != main)
        })
    });
    assert!(
        !escapee.is_alive(),
        "the old attempt's escapee survived the restart"
    );
    wait_for(SETTLE, "no zombie child of the daemon", || {
        children().iter().all(|(_, s)| s.is_alive())
    });
    for id in &bystanders {
        assert!(
            id.is_alive(),
            "the other component's process {} was hit",
            id.pid
        );
    }
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}

/// The memory of a component counts the escapee it left (adopted by the daemon), found by its
/// marker outside the component's process tree.
#[test]
fn an_adopted_escapee_counts_in_its_components_memory() {
    let config = format!(
        "{SUPERVISOR}{}{}",
        component("alone", &["sleep", "1000"], ""),
        component(
            "escaper",
            &["sh", "-c", "(setsid sleep 1000 &); exec sleep 1000"],
            ""
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    home.wait_running(&["alone", "escaper"]);
    wait_for(SETTLE, "the escapee started", || {
        home.marked()
            .iter()
            .filter(|id| procs::Stat::read(id.pid).is_some_and(|s| s.comm == "sleep"))
            .count()
            == 3
    });
    // Two sleeps against one: clearly more than one sleep's worth (shared pages count in each
    // process's resident memory).
    wait_for(SETTLE, "the escaper's memory counts two processes", || {
        let Some(status) = home.try_status_json() else {
            return false;
        };
        let memory = |name| component_of(&status, name)["memory_bytes"].as_u64();
        matches!((memory("alone"), memory("escaper")), (Some(a), Some(e)) if a > 0 && e * 2 >= a * 3)
    });
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}

/// A port another program already listens on is a start error that names it, whether the
/// supervisor holds the component's socket or the program binds its own; never a component
/// that counts as running because the other program answers its readiness check.
#[test]
fn a_port_held_by_another_program_is_a_clear_start_error() {
    let foreign = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = foreign.local_addr().expect("address").port();
    for extra in ["", "hold_socket = true\nready = { http = \"/healthz\" }\n"] {
        let config = format!(
            "{SUPERVISOR}{}",
            component(
                "web",
                &["sleep", "1000"],
                &format!("port = {port}\nmax_restarts = 1\nbackoff_initial = \"20ms\"\n{extra}")
            ),
        );
        let home = TestHome::new(&config);
        let out = home.run(&["start"]);
        out.expect_code(1);
        let expected = format!("port {port} is in use by another program");
        assert!(out.stderr.contains(&expected), "{extra:?}\n{out}");
        let status = home.status_json();
        let web = component_of(&status, "web");
        assert_eq!(web["state"], "FATAL", "{web:#}");
        assert!(web["pid"].is_null(), "never spawned: {web:#}");
        home.run(&["stop"]).expect_code(0);
    }
}

/// A held socket makes connections wait while the component restarts, but a component that
/// will not be restarted (FATAL) gives its socket up: clients are refused at once instead of
/// waiting in a backlog nobody accepts from. `restart` binds it again.
#[test]
fn a_fatal_component_gives_up_its_held_socket() {
    let port = free_port();
    let config = format!(
        "{SUPERVISOR}{}",
        component(
            "web",
            &["sh", "-c", "sleep 1; exit 3"],
            &format!(
                "port = {port}\nhold_socket = true\nready = {{ file = \"never\" }}\n\
                 start_timeout = \"5s\"\nmax_restarts = 1\nbackoff_initial = \"100ms\"\n"
            )
        ),
    );
    let home = TestHome::new(&config);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let held_while_starting = |home: &TestHome, verb: &[&str]| {
        std::thread::scope(|scope| {
            let start = scope.spawn(|| home.run(verb));
            // While it starts and restarts, the kernel accepts on the supervisor's socket.
            wait_for(SETTLE, "the held socket accepts", || {
                std::net::TcpStream::connect(addr).is_ok()
            });
            start.join().expect("the command").expect_code(1);
        });
        let status = home.status_json();
        assert_eq!(component_of(&status, "web")["state"], "FATAL");
        let refused = std::net::TcpStream::connect(addr).expect_err("nobody holds the port");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    };
    held_while_starting(&home, &["start"]);
    // `restart` binds it again, and gives it up again when the component goes FATAL again.
    held_while_starting(&home, &["restart", "web"]);
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}

/// A program written for systemd's socket activation, not ours (a few lines of Python's
/// standard library), works as a component with `hold_socket`: it gets the supervisor's socket
/// as descriptor 3 with `LISTEN_FDS`, `LISTEN_PID` (its own pid) and `LISTEN_FDNAMES` (the
/// component's name), and the same socket again after a restart.
#[test]
fn a_third_party_socket_activated_program_works_as_a_component() {
    const SERVER: &str = r#"
import os, socket, http.server
assert os.environ["LISTEN_PID"] == str(os.getpid()), "LISTEN_PID is not mine"
assert os.environ["LISTEN_FDS"] == "1"
name = os.environ["LISTEN_FDNAMES"]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{name} {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.HTTPServer):
    def server_bind(self):
        pass
    def server_activate(self):
        pass
server = Server(("", 0), Handler, bind_and_activate=False)
server.socket = socket.socket(fileno=3)
server.serve_forever()
"#;
    let port = free_port();
    let config = format!(
        "{SUPERVISOR}{}",
        component(
            "third",
            &["python3", "-c", SERVER],
            &format!("port = {port}\nhold_socket = true\nready = {{ http = \"/\" }}\n"),
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    let get = || {
        let answer =
            crate::http::get(port, "/", Duration::from_secs(5)).expect("the program answers");
        assert_eq!(answer.status, 200);
        answer.text()
    };
    let socket_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/fd/3")).expect("fd 3");
    let first = home.pid_of("third").expect("it runs");
    assert_eq!(get(), format!("third {first}\n"));
    let socket = socket_of(first);
    home.run(&["restart", "third"]).expect_code(0);
    let second = home.pid_of("third").expect("it runs again");
    assert_ne!(second, first);
    assert_eq!(get(), format!("third {second}\n"));
    assert_eq!(
        socket_of(second),
        socket,
        "the same socket after the restart"
    );
    held_socket_fd(home.supervisor_pid(), &socket);
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}

/// The descriptor of process `pid` that is the socket `link` (`socket:[inode]`); fails the test
/// when it has none.
fn held_socket_fd(pid: u32, link: &std::path::Path) -> u32 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("its descriptors")
        .filter_map(Result::ok)
        .find(|entry| std::fs::read_link(entry.path()).is_ok_and(|l| l == link))
        .and_then(|entry| entry.file_name().to_str()?.parse().ok())
        .expect("the supervisor holds the component's socket")
}

/// `ready = { notify = true }`: a component is RUNNING once its main process says `READY=1` on
/// `NOTIFY_SOCKET` (systemd's `Type=notify`), which the built-in servers do once they serve; a
/// process that never says it fails its start at `start_timeout`, however long it runs.
#[test]
fn a_component_is_ready_when_its_process_says_so() {
    let port = free_port();
    let config = format!(
        "{SUPERVISOR}{}{}",
        component(
            "svg",
            &["@self", "component", "svg"],
            &format!("port = {port}\nready = {{ notify = true }}\n"),
        ),
        component(
            "mute",
            &["sleep", "1000"],
            "ready = { notify = true }\nstart_timeout = \"1s\"\nmax_restarts = 0\n",
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(1);
    let status = home.status_json();
    assert_eq!(
        component_of(&status, "svg")["state"],
        "RUNNING",
        "{status:#}"
    );
    let mute = component_of(&status, "mute");
    assert_eq!(mute["state"], "FATAL", "{mute:#}");
    let out = home.run(&["check-config"]);
    assert!(
        out.stdout.contains("says READY=1 on NOTIFY_SOCKET"),
        "{out}"
    );
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}

/// Issue #14 §3 end to end, with the real `ps` and supervisor in front of a stand-in `is` (a few
/// lines of Python serving on the held socket) that aborts on any request naming `poison`: `ps`
/// holds the request across the first crash, quarantines it at the second (500), refuses it at
/// once afterwards, and reports it, so that four crashes by two poison requests leave `is`
/// RUNNING with `max_restarts = 2` (without the reports, the fourth would make it FATAL).
#[test]
fn poison_requests_are_quarantined_and_do_not_make_the_image_server_fatal() {
    const FAKE_IS: &str = r#"
import os, socket, http.server
previous = os.environ.get("IMAGESERVING_PREVIOUS_EXIT", "").split(":")[0]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, content_type, body, extra=()):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        extra = [("x-imageserving-previous-exit", previous)] if previous else []
        self.answer("text/plain", b"ok is\n", extra)
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if b"poison" in body:
            os.abort()
        self.answer("image/png", b"\x89PNG fake")
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def server_bind(self):
        pass
    def server_activate(self):
        pass
server = Server(("", 0), Handler, bind_and_activate=False)
server.socket = socket.socket(fileno=3)
server.serve_forever()
"#;
    let (ps, is) = (free_port(), free_port());
    let config = format!(
        "{SUPERVISOR}{}{}",
        component(
            "is",
            &["python3", "-c", FAKE_IS],
            &format!(
                "port = {is}\nhold_socket = true\nready = {{ http = \"/healthz\" }}\n\
                 max_restarts = 2\nbackoff_initial = \"50ms\"\n"
            ),
        ),
        component(
            "ps",
            &["@self", "component", "ps"],
            &format!("port = {ps}\ndepends_on = [\"is\"]\n"),
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    let get = |path: &str| crate::http::get(ps, path, Duration::from_secs(20)).expect("ps answers");
    assert_eq!(get("/is/image/photo?wid=10").status, 200);
    for poison in ["poison-a", "poison-b"] {
        let path = format!("/is/image/{poison}?wid=10");
        let answer = get(&path);
        assert_eq!(answer.status, 500, "{}", answer.text());
        assert!(answer.text().contains("quarantined"), "{}", answer.text());
        // Quarantined: answered at once, without crashing is again.
        let restarts = component_of(&home.status_json(), "is")["restarts"].clone();
        assert_eq!(get(&path).status, 500);
        assert_eq!(
            component_of(&home.status_json(), "is")["restarts"],
            restarts
        );
    }
    wait_for(SETTLE, "is RUNNING after four crashes", || {
        component_of(&home.status_json(), "is")["state"] == "RUNNING"
    });
    let status = home.status_json();
    assert_eq!(component_of(&status, "is")["restarts"], 4, "{status:#}");
    assert_eq!(get("/is/image/photo?wid=10").status, 200);
    let log = std::fs::read_to_string(home.path().join("logs/is.log")).unwrap_or_default();
    assert!(log.contains("poison request that ps quarantined"), "{log}");
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}

/// Issue #15 §5: an image server frozen with SIGSTOP (alive, answering nothing) is restarted by
/// its liveness check, the default configuration's `health` of `is`; it gets SIGCONT after its
/// stop signal (as systemd sends), so it exits by itself instead of waiting for SIGKILL.
#[test]
fn a_frozen_image_server_is_replaced_by_its_liveness_check() {
    let health =
        "health = { http = \"/healthz\", interval = \"2s\", timeout = \"2s\", max_failed = 3 }\n";
    let config = format!(
        "{SUPERVISOR}{}",
        stack_config().replace("[components.is]\n", &format!("[components.is]\n{health}"))
    );
    assert!(config.contains(health));
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    let old = home.pid_of("is").expect("is runs");
    let ps: u16 = config
        .split("[components.ps]")
        .nth(1)
        .and_then(|table| table.lines().find_map(|l| l.strip_prefix("port = ")))
        .and_then(|port| port.trim().parse().ok())
        .expect("ps's port in the configuration");
    let frozen = ProcId::of(old).expect("alive");
    assert!(procs::signal(frozen, libc::SIGSTOP), "could not freeze is");
    // A request meanwhile is answered (503 once ps sees is hung, or 200 from its replacement),
    // never left waiting for the 35 s deadline of a render.
    let request = std::thread::spawn(move || {
        crate::http::get(
            ps,
            "/is/image/sample/photo?wid=64&fmt=png&cache=off",
            Duration::from_secs(20),
        )
    });
    wait_for(
        Duration::from_secs(30),
        "a new is, RUNNING, after its liveness check failed",
        || {
            let status = home.status_json();
            let is = component_of(&status, "is");
            is["state"] == "RUNNING" && pid(&is["pid"]).is_some_and(|p| p != old)
        },
    );
    let status = home.status_json();
    let is = component_of(&status, "is");
    let last = is["last_exit"].as_str().unwrap_or_default();
    assert!(
        last.starts_with("liveness check failed 3 times in a row"),
        "{is:#}"
    );
    assert!(!frozen.is_alive(), "the frozen process is gone");
    let answer = request
        .join()
        .expect("the client")
        .expect("answered within 20 s");
    assert!(matches!(answer.status, 200 | 503), "{}", answer.status);
    let log = std::fs::read_to_string(home.path().join("logs/is.log")).expect("the log");
    assert!(
        log.contains(&format!("process (pid {old}) exited with status 0")),
        "woken by SIGCONT, it stopped cleanly on SIGTERM rather than by SIGKILL:\n{log}"
    );
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}
