//! `restart` as a handover (issue #14 §2): the new process starts on the held socket while the
//! old one serves, the old one drains once the new one is ready, `status` shows both; a failed
//! handover leaves the old one serving; a supervisor killed during a handover leaves nothing.
//!
//! The component is a program nobody here wrote the server of: a few lines of Python's standard
//! library that take the socket the systemd way (descriptor 3), say `READY=1` on
//! `NOTIFY_SOCKET` once they serve, answer every request with their pid, and on SIGTERM stop
//! accepting and linger as long as the file `linger` in the home says (in seconds; `deaf` makes
//! them ignore SIGTERM altogether). A file `fail` in the home makes a new process exit 1 before
//! it is ready.

use std::time::Duration;

use crate::harness::{
    component, component_of, free_port, pid, wait_for, TestHome, SETTLE, SUPERVISOR,
};
use crate::procs::{self, ProcId};

const SERVER: &str = r#"
import os, socket, signal, sys, threading, time, http.server
if os.path.exists("fail"):
    sys.exit(1)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.getpid()}\n".encode()
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
threading.Thread(target=server.serve_forever, daemon=True).start()
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
stopping = threading.Event()
def term(*_):
    if not os.path.exists("deaf"):
        stopping.set()
signal.signal(signal.SIGTERM, term)
while not stopping.wait(0.05):
    pass
server.shutdown()
linger = float(open("linger").read()) if os.path.exists("linger") else 0
time.sleep(linger)
"#;

/// A home running the Python server as `web` on an ephemeral port, with `extra` settings.
fn web_home(extra: &str) -> (TestHome, u16) {
    let port = free_port();
    let config = format!(
        "{SUPERVISOR}{}",
        component(
            "web",
            &["python3", "-c", SERVER],
            &format!("port = {port}\nhold_socket = true\nready = {{ notify = true }}\n{extra}"),
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    (home, port)
}

/// Whether process `pid` is alive (not a zombie).
fn alive(pid: u32) -> bool {
    ProcId::of(pid).is_some_and(|id| id.is_alive())
}

/// The pid that answers `GET /` on `port`.
fn answering(port: u16) -> u32 {
    let answer = crate::http::get(port, "/", Duration::from_secs(5)).expect("web answers");
    assert_eq!(answer.status, 200);
    answer.text().trim().parse().expect("a pid")
}

#[test]
fn a_restart_hands_over_status_shows_both_and_the_old_process_drains_then_exits() {
    let (home, port) = web_home("handover_grace = \"30s\"\n");
    let old = home.pid_of("web").expect("web runs");
    assert_eq!(answering(port), old);
    std::fs::write(home.path().join("linger"), "2").expect("linger");

    let out = home.run(&["restart", "web"]);
    out.expect_code(0);
    let status = home.status_json();
    let web = component_of(&status, "web");
    let new = pid(&web["pid"]).expect("a new process");
    assert_ne!(new, old);
    assert_eq!(web["state"], "RUNNING", "{web:#}");
    // The old process drains beside the new one, and `status` says so.
    let outgoing = web["outgoing"].as_array().expect("outgoing");
    assert_eq!(outgoing.len(), 1, "{web:#}");
    assert_eq!(pid(&outgoing[0]["pid"]), Some(old));
    assert_eq!(outgoing[0]["state"], "DRAINING");
    assert!(alive(old), "the old process lingers");
    let table = home.run(&["status", "web"]);
    let row = table
        .stdout
        .lines()
        .find(|l| l.contains("DRAINING"))
        .unwrap_or_else(|| panic!("no DRAINING row: {table}"));
    assert!(row.contains(&old.to_string()), "{table}");
    assert!(row.contains("handover: finishing its requests"), "{table}");
    // New connections reach the new process only: the old one stopped accepting.
    for _ in 0..5 {
        assert_eq!(answering(port), new);
    }
    // It exits on its own after its linger, well within its grace.
    wait_for(SETTLE, "the old process to exit", || {
        home.status_json()["components"][0]["outgoing"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    assert!(!alive(old), "pid {old} still runs");
    let log = std::fs::read_to_string(home.path().join("logs/web.log")).expect("the log");
    assert!(
        log.contains(&format!(
            "handover: starting a new process; pid {old} keeps serving"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("process (pid {old}) exited with status 0")),
        "{log}"
    );
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}

#[test]
fn an_old_process_that_does_not_exit_is_killed_after_handover_grace() {
    let (home, port) = web_home("handover_grace = \"1s\"\n");
    let old = home.pid_of("web").expect("web runs");
    std::fs::write(home.path().join("deaf"), "").expect("deaf");
    home.run(&["restart", "web"]).expect_code(0);
    let new = home.pid_of("web").expect("web runs");
    assert_ne!(new, old);
    wait_for(SETTLE, "the old process to be killed", || !alive(old));
    let log = std::fs::read_to_string(home.path().join("logs/web.log")).expect("the log");
    assert!(
        log.contains(&format!(
            "pid {old} told to finish its requests and exit (SIGKILL in 1.0s)"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("process (pid {old}) killed by signal 9")),
        "{log}"
    );
    assert_eq!(answering(port), new);
    std::fs::remove_file(home.path().join("deaf")).expect("hearing again");
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}

#[test]
fn a_failed_handover_leaves_the_old_process_serving_and_says_so() {
    let (home, port) = web_home("");
    let old = home.pid_of("web").expect("web runs");
    std::fs::write(home.path().join("fail"), "").expect("fail");
    let out = home.run(&["restart", "web"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("restart of web failed: handover failed: the new process exited with status 1 before it was ready")
            && out.stderr.contains(&format!("pid {old} kept serving")),
        "{out}"
    );
    let status = home.status_json();
    let web = component_of(&status, "web");
    assert_eq!(web["state"], "RUNNING", "{web:#}");
    assert_eq!(pid(&web["pid"]), Some(old));
    assert_eq!(web["restarts"], 0, "not a failure: {web:#}");
    assert_eq!(answering(port), old);

    // Fixed, the next restart hands over.
    std::fs::remove_file(home.path().join("fail")).expect("unfail");
    home.run(&["restart", "web"]).expect_code(0);
    assert_ne!(home.pid_of("web"), Some(old));
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}

/// Both processes of a handover are the supervisor's children: a SIGKILLed supervisor takes
/// them along (PDEATHSIG), and the next `start` works on the same port.
#[test]
fn a_supervisor_killed_during_a_handover_leaves_no_process_and_the_next_start_works() {
    let (home, port) = web_home("handover_grace = \"60s\"\n");
    let old = ProcId::of(home.pid_of("web").expect("web runs")).expect("alive");
    std::fs::write(home.path().join("deaf"), "").expect("deaf");
    home.run(&["restart", "web"]).expect_code(0);
    let status = home.status_json();
    let web = component_of(&status, "web");
    assert_eq!(web["outgoing"][0]["state"], "DRAINING", "{web:#}");
    let new = ProcId::of(pid(&web["pid"]).expect("new")).expect("alive");
    let sup = ProcId::of(home.supervisor_pid()).expect("the supervisor");
    assert!(procs::kill(sup), "could not kill the supervisor");
    wait_for(SETTLE, "the supervisor to die", || !sup.is_alive());
    wait_for(SETTLE, "both processes of the handover to die", || {
        !old.is_alive() && !new.is_alive()
    });
    assert!(home.marked().is_empty(), "{:?}", home.marked());

    std::fs::remove_file(home.path().join("deaf")).expect("hearing again");
    home.run(&["start"]).expect_code(0);
    let back = home.pid_of("web").expect("web runs again");
    assert_eq!(answering(port), back);
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}

#[test]
fn a_stop_during_a_handover_stops_both_processes() {
    let (home, _port) = web_home("stop_timeout = \"1s\"\nhandover_grace = \"60s\"\n");
    let old = home.pid_of("web").expect("web runs");
    std::fs::write(home.path().join("deaf"), "").expect("deaf");
    home.run(&["restart", "web"]).expect_code(0);
    let new = home.pid_of("web").expect("web runs");
    // Both ignore SIGTERM: `stop` kills each after its stop_timeout, the old one included
    // (not after its 60 s grace).
    let out = home.run_timeout(&["stop"], Duration::from_secs(20));
    out.expect_code(0);
    assert!(!alive(old) && !alive(new));
    home.assert_nothing_runs();
}

/// A `reload` that changes a running component that hands over: the old process serves until
/// the new one, with the new settings, is ready; when the new one cannot start, the old one
/// serves on and `reload` says so.
#[test]
fn a_reload_hands_over_and_a_failed_one_leaves_the_old_settings_serving() {
    let (home, port) = web_home("");
    let config_file = home.path().join("conf/imageserving.toml");
    let config = std::fs::read_to_string(&config_file).expect("the config");
    let with_env = |value: &str| {
        config.replace(
            "[components.web]\n",
            &format!("[components.web]\nenv = {{ FLAVOUR = \"{value}\" }}\n"),
        )
    };
    let environ = |pid: u32| std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let has = |pid: u32, var: &[u8]| environ(pid).split(|b| *b == 0).any(|v| v == var);

    let old = home.pid_of("web").expect("web runs");
    std::fs::write(&config_file, with_env("one")).expect("writing the config");
    let out = home.run(&["reload"]);
    out.expect_code(0);
    assert!(out.stdout.contains("changed (restarted): web"), "{out}");
    let new = home.pid_of("web").expect("web runs");
    assert_ne!(new, old);
    assert!(has(new, b"FLAVOUR=one"), "the new settings");
    assert_eq!(answering(port), new);
    let log = std::fs::read_to_string(home.path().join("logs/web.log")).expect("the log");
    assert!(log.contains("restarting (requested): handover"), "{log}");

    std::fs::write(home.path().join("fail"), "").expect("fail");
    std::fs::write(&config_file, with_env("two")).expect("writing the config");
    let out = home.run(&["reload"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("the new settings did not take over")
            && out.stderr.contains(&format!("pid {new} kept serving")),
        "{out}"
    );
    assert_eq!(home.pid_of("web"), Some(new));
    assert!(has(new, b"FLAVOUR=one"), "the old settings serve on");
    assert_eq!(answering(port), new);
    std::fs::remove_file(home.path().join("fail")).expect("unfail");
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}
