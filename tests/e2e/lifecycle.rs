//! The life of an installation: `start`, `status`, `stop`, `restart`, a second `start`, many
//! clients at once, and the foreground `supervisor` mode.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    component, component_of, pid, pids, stack_config, wait_for, TestHome, SETTLE, SUPERVISOR,
};
use crate::procs::{self, ProcId};

const ALL: [&str; 3] = ["is", "svg", "ps"];

/// Starts the stack_config and returns the status once all run.
fn started() -> (TestHome, Value) {
    let home = TestHome::stack();
    home.run(&["start"]).expect_code(0);
    let status = home.wait_running(&ALL);
    (home, status)
}

#[test]
fn start_status_stop_leaves_nothing_behind() {
    let home = TestHome::stack();

    let out = home.run(&["start"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("Server Supervisor started (pid "),
        "{out}"
    );
    // One line per component, in start order (dependencies first).
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("Server Supervisor"))
        .collect();
    let names: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["is", "svg", "ps"], "{out}");
    for line in &lines {
        assert!(line.contains("RUNNING") && line.contains("pid "), "{out}");
    }

    // The table: the supervisor line, a header, one RUNNING row per component.
    let table = home.run(&["status"]);
    table.expect_code(0);
    let sup_pid = home.supervisor_pid();
    assert!(
        table
            .stdout
            .starts_with(&format!("Server Supervisor  pid {sup_pid} ")),
        "{table}"
    );
    for name in ALL {
        let row = table
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}\n{table}"));
        assert_eq!(row.split_whitespace().nth(1), Some("RUNNING"), "{table}");
    }

    // The JSON document has its documented shape.
    let status = home.status_json();
    assert_json_shape(&status, &home);
    let sup = procs::ProcId::of(sup_pid).expect("the supervisor runs");
    let components: Vec<ProcId> = pids(&status)
        .values()
        .map(|&p| ProcId::of(p).expect("a component runs"))
        .collect();
    assert_eq!(components.len(), 3);
    // Every component carries the marker, and so does the daemon.
    let marked = home.marked();
    for id in components.iter().chain([&sup]) {
        assert!(marked.contains(id), "pid {} is not marked", id.pid);
    }

    let out = home.run(&["stop"]);
    out.expect_code(0);
    assert!(out.stdout.contains("stopped: ps, svg, is"), "{out}");
    assert!(
        out.stdout
            .contains(&format!("Server Supervisor stopped (pid {sup_pid})")),
        "{out}"
    );
    for id in components.iter().chain([&sup]) {
        assert!(!id.is_alive(), "pid {} survived stop", id.pid);
    }
    home.assert_nothing_runs();
    assert!(home.lock_file().exists(), "the lock file must stay");

    let out = home.run(&["stop"]);
    out.expect_code(0);
    assert!(out.stdout.contains("not running"), "{out}");
}

/// Checks every key of `status --json` (docs: protocol.rs, "`status --json`").
fn assert_json_shape(status: &Value, home: &TestHome) {
    assert_eq!(
        status["home"].as_str(),
        home.path().to_str(),
        "home\n{status:#}"
    );
    let sup = &status["supervisor"];
    assert!(pid(&sup["pid"]).is_some(), "supervisor.pid\n{status:#}");
    assert!(sup["version"].is_string(), "{status:#}");
    assert!(
        sup["started_at"].as_str().is_some_and(is_rfc3339_ms),
        "{status:#}"
    );
    assert!(sup["uptime_ms"].is_u64(), "{status:#}");
    assert!(
        sup["memory_bytes"].as_u64().is_some_and(|m| m > 0),
        "supervisor.memory_bytes\n{status:#}"
    );
    let components = status["components"].as_array().expect("components");
    let names: Vec<&str> = components
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["is", "svg", "ps"], "start order\n{status:#}");
    for c in components {
        let keys: Vec<&str> = c
            .as_object()
            .expect("a component is an object")
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "name",
            "state",
            "since",
            "since_unix_ms",
            "pid",
            "uptime_ms",
            "memory_bytes",
            "restarts",
            "info",
            "last_exit",
            "next_retry_unix_ms",
            "fatal_reason",
            "depends_on",
        ] {
            assert!(keys.contains(&key), "component without `{key}`\n{c:#}");
        }
        assert_eq!(c["state"], "RUNNING", "{c:#}");
        assert!(c["since"].as_str().is_some_and(is_rfc3339_ms), "{c:#}");
        assert!(c["since_unix_ms"].as_u64().is_some_and(|t| t > 0), "{c:#}");
        assert!(pid(&c["pid"]).is_some(), "{c:#}");
        assert!(c["uptime_ms"].is_u64(), "{c:#}");
        assert!(
            c["memory_bytes"].as_u64().is_some_and(|m| m > 0),
            "memory_bytes\n{c:#}"
        );
        assert_eq!(c["restarts"], 0, "{c:#}");
        assert_eq!(c["info"], "", "{c:#}");
        assert!(c["last_exit"].is_null(), "{c:#}");
        assert!(c["next_retry_unix_ms"].is_null(), "{c:#}");
        assert!(c["fatal_reason"].is_null(), "{c:#}");
        assert!(c["depends_on"].is_array(), "{c:#}");
    }
    assert_eq!(
        component_of(status, "ps")["depends_on"],
        serde_json::json!(["is", "svg"])
    );
}

/// `2025-11-26T20:23:00.000Z`: RFC 3339, UTC, milliseconds.
fn is_rfc3339_ms(s: &str) -> bool {
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

#[test]
fn restart_one_component_by_name_or_alias_leaves_the_others() {
    let (home, before) = started();
    let before = pids(&before);
    let sup = home.supervisor_pid();

    let mut previous = ProcId::of(before["is"]).expect("is runs");
    for name in ["is", "image-server"] {
        let out = home.run(&["restart", name]);
        out.expect_code(0);
        let after = pids(&home.wait_running(&ALL));
        assert_ne!(
            after["is"], previous.pid,
            "`restart {name}` kept the pid of is\n{out}"
        );
        assert!(
            out.stdout.contains(&format!("pid {}", after["is"])),
            "the answer names the new pid\n{out}"
        );
        assert!(!previous.is_alive(), "the old is still runs");
        assert_eq!(
            home.pid_of("svg"),
            Some(before["svg"]),
            "svg was restarted too"
        );
        assert_eq!(after["ps"], before["ps"], "ps was restarted too");
        previous = ProcId::of(after["is"]).expect("is runs");
    }
    assert_eq!(home.supervisor_pid(), sup, "the supervisor was restarted");
}

#[test]
fn restart_everything_replaces_the_supervisor() {
    let (home, before) = started();
    let old_sup = home.supervisor_pid();
    let old = ProcId::of(old_sup).expect("the supervisor runs");
    let before: HashMap<String, ProcId> = pids(&before)
        .into_iter()
        .map(|(n, p)| (n, ProcId::of(p).expect("a component runs")))
        .collect();

    let out = home.run(&["restart"]);
    out.expect_code(0);
    assert!(out.stdout.contains("Server Supervisor stopped"), "{out}");
    assert!(out.stdout.contains("Server Supervisor started"), "{out}");

    let after = home.wait_running(&ALL);
    let new_sup = pid(&after["supervisor"]["pid"]).expect("a supervisor pid");
    assert_ne!(new_sup, old_sup, "the supervisor kept its pid");
    assert!(!old.is_alive(), "the old supervisor still runs");
    let after = pids(&after);
    for name in ALL {
        assert_ne!(after[name], before[name].pid, "{name} kept its pid");
        assert!(!before[name].is_alive(), "the old {name} still runs");
    }
}

#[test]
fn second_start_changes_nothing() {
    let (home, before) = started();
    let sup = pid(&before["supervisor"]["pid"]);

    let out = home.run(&["start"]);
    out.expect_code(0);
    assert!(out.stdout.contains("already running"), "{out}");
    for name in ALL {
        let line = out
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}\n{out}"));
        assert!(line.contains("already running"), "{out}");
    }

    let after = home.status_json();
    assert_eq!(pid(&after["supervisor"]["pid"]), sup);
    assert_eq!(pids(&after), pids(&before));
}

#[test]
fn fifty_concurrent_status_clients_are_all_answered() {
    // Alone: fifty clients at once load a small machine enough to slow the other tests down.
    let home = TestHome::alone(&format!("{SUPERVISOR}{}", stack_config()));
    home.run(&["start"]).expect_code(0);
    let status = home.wait_running(&ALL);
    let sup = pid(&status["supervisor"]["pid"]).expect("a supervisor pid");
    let outputs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50).map(|_| s.spawn(|| home.run(&["status"]))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect()
    });
    let valid = |out: &crate::harness::Output| {
        let running = out
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("RUNNING"))
            .count();
        out.code() == Some(0)
            && out
                .stdout
                .starts_with(&format!("Server Supervisor  pid {sup} "))
            && running == 3
    };
    let bad: Vec<_> = outputs.iter().filter(|o| !valid(o)).collect();
    let slowest = outputs.iter().map(|o| o.elapsed).max().unwrap_or_default();
    assert!(
        bad.is_empty(),
        "{} of 50 clients failed (slowest took {slowest:?}); the first:\n{}",
        bad.len(),
        bad[0]
    );
    // And the daemon is none the worse for it.
    assert_eq!(home.supervisor_pid(), sup);
}

#[test]
fn foreground_supervisor_starts_everything_and_stops_on_sigterm() {
    let home = TestHome::stack();
    let fg = home.spawn_foreground();

    let status = home.wait_running(&ALL);
    assert_eq!(pid(&status["supervisor"]["pid"]), Some(fg));
    let components: HashMap<String, ProcId> = pids(&status)
        .into_iter()
        .map(|(n, p)| (n, ProcId::of(p).expect("a component runs")))
        .collect();

    let me = ProcId::of(fg).expect("the foreground supervisor runs");
    assert!(procs::signal(me, libc::SIGTERM), "could not signal it");
    let exit = home.wait_foreground(Duration::from_secs(15));
    assert_eq!(exit.code(), Some(0), "{exit}\n{}", home.logs());
    for (name, id) in &components {
        assert!(!id.is_alive(), "{name} survived the supervisor");
    }
    wait_for(SETTLE, "no marked process", || home.marked().is_empty());
    home.assert_nothing_runs();
}

#[test]
fn home_may_be_given_by_environment_and_through_a_symlink() {
    let (home, status) = started();
    let sup = pid(&status["supervisor"]["pid"]);
    let link_dir = tempfile::tempdir().expect("a directory for the link");
    let link = link_dir.path().join("home-link");
    std::os::unix::fs::symlink(home.path(), &link).expect("linking to the home");

    // IMAGESERVING_HOME instead of --home, spelled through the link and a detour: the same
    // supervisor answers, and reports the canonical home.
    let via_env = |args: &[&str]| {
        let mut cmd = std::process::Command::new(crate::harness::BIN);
        cmd.args(args)
            .env("IMAGESERVING_HOME", link.join("conf/.."))
            .env_remove(crate::harness::TREE_ENV);
        crate::harness::run_command(cmd, args.join(" "), crate::harness::COMMAND_TIMEOUT)
            .unwrap_or_else(|out| panic!("timed out\n{out}"))
    };
    let out = via_env(&["status", "--json"]);
    out.expect_code(0);
    let seen: Value = serde_json::from_str(&out.stdout).expect("status --json is JSON");
    assert_eq!(pid(&seen["supervisor"]["pid"]), sup, "{out}");
    assert_eq!(seen["home"].as_str(), home.path().to_str(), "{out}");

    // A second start through the link finds the running supervisor rather than a new home.
    let out = via_env(&["start"]);
    out.expect_code(0);
    assert!(out.stdout.contains("already running"), "{out}");

    via_env(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}

/// The daemon runs as `imageserving-supervisor` when that program is installed beside
/// `imageserving` (as cargo builds them), and `@self` still names `imageserving`; without it
/// (`cargo run` builds only the program it runs), `imageserving` runs the daemon itself.
/// `@self component NAME` runs `imageserving-server NAME`, the servers' own program beside it;
/// without that one, `component` says what is missing.
#[test]
fn the_daemon_is_its_own_program_and_this_one_stands_in_without_it() {
    use std::path::PathBuf;

    let config = format!(
        "{SUPERVISOR}[components.me]\ncommand = [\"@self\", \"component\", \"svg\"]\nport = {}\n",
        crate::harness::free_port()
    );
    let exe_of = |pid: u32| fs_read_link(format!("/proc/{pid}/exe"));

    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    let status = home.wait_running(&["me"]);
    let daemon = pid(&status["supervisor"]["pid"]).expect("the daemon's pid");
    let bin_dir = PathBuf::from(crate::harness::BIN)
        .parent()
        .unwrap()
        .to_path_buf();
    assert_eq!(exe_of(daemon), bin_dir.join("imageserving-supervisor"));
    let me = pid(&component_of(&status, "me")["pid"]).expect("me's pid");
    assert_eq!(
        exe_of(me),
        bin_dir.join("imageserving-server"),
        "@self component"
    );
    home.run(&["stop"]).expect_code(0);

    // `imageserving` without `imageserving-supervisor` beside it: it is the daemon too.
    let alone = tempfile::tempdir().expect("a directory for the programs");
    let place = |name: &str| {
        let copy = alone.path().join(name);
        if std::fs::hard_link(bin_dir.join(name), &copy).is_err() {
            std::fs::copy(bin_dir.join(name), &copy).expect("copying the program");
        }
        copy
    };
    let copy = place("imageserving");
    // Without the servers' program, `component` cannot run and says why.
    let out = crate::harness::run_command(
        {
            let mut c = std::process::Command::new(&copy);
            c.args(["component", "svg"]);
            c
        },
        "component svg (alone)".into(),
        crate::harness::COMMAND_TIMEOUT,
    )
    .unwrap_or_else(|out| panic!("timed out\n{out}"));
    out.expect_code(1);
    assert!(
        out.stderr.contains("imageserving-server is not installed"),
        "{out}"
    );
    let server = place("imageserving-server");
    let home = TestHome::new(&config);
    let mut start = std::process::Command::new(&copy);
    start
        .arg("--home")
        .arg(home.path())
        .arg("start")
        .env_remove("IMAGESERVING_HOME")
        .env_remove("IMAGESERVING_LOG")
        .env_remove(crate::harness::TREE_ENV);
    crate::harness::run_command(
        start,
        "start (alone)".into(),
        crate::harness::COMMAND_TIMEOUT,
    )
    .unwrap_or_else(|out| panic!("start timed out\n{out}"))
    .expect_code(0);
    let status = home.wait_running(&["me"]);
    let daemon = pid(&status["supervisor"]["pid"]).expect("the daemon's pid");
    let copy = std::fs::canonicalize(&copy).unwrap();
    assert_eq!(exe_of(daemon), copy);
    let cmdline = std::fs::read(format!("/proc/{daemon}/cmdline")).unwrap();
    assert!(
        cmdline.split(|b| *b == 0).any(|arg| arg == b"supervisor"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    let me = pid(&component_of(&status, "me")["pid"]).expect("me's pid");
    assert_eq!(
        exe_of(me),
        std::fs::canonicalize(&server).unwrap(),
        "@self is the program that started the daemon; its servers' program is beside it"
    );
    home.run(&["stop"]).expect_code(0);
}

fn fs_read_link(path: String) -> std::path::PathBuf {
    std::fs::read_link(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A `restart` that could not start again must not stop: with `run/` owned by another user,
/// `start` refuses the home, so `restart` refuses before stopping anything.
#[test]
fn restart_refuses_before_stopping_when_it_could_not_start_again() {
    if !crate::harness::require_root(
        "restart_refuses_before_stopping_when_it_could_not_start_again",
    ) {
        return;
    }
    let home = TestHome::new(&format!(
        "{SUPERVISOR}{}",
        component("a", &["sleep", "1000"], "")
    ));
    home.run(&["start"]).expect_code(0);
    let before = home.pid_of("a").expect("a runs");
    let run = home.path().join("run");
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&run, Some(nobody), None).expect("chown run/");

    let out = home.run(&["restart"]);
    // Give it back before any assertion, so that the cleanup can stop the supervisor.
    nix::unistd::chown(&run, Some(nix::unistd::Uid::from_raw(0)), None).expect("chown back");
    out.expect_code(1);
    assert!(out.stderr.contains("belongs to uid 65534"), "{out}");
    assert_eq!(
        home.pid_of("a"),
        Some(before),
        "restart stopped what it could not start"
    );

    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}
