//! The restart policy, end to end: restart types, group strategies, escalation of a critical
//! component, `retry_fatal_after`, memory limits, HTTP readiness and liveness, log rotation.

use serde_json::Value;
use std::collections::HashMap;
use std::fs;

use crate::harness::{
    component, component_of, free_port, pids, require_root, run_command, wait_for, TestHome,
    COMMAND_TIMEOUT, SETTLE, SUPERVISOR,
};

/// A component that runs until it is stopped.
const SLEEPER: &[&str] = &["sleep", "1000"];

fn state(home: &TestHome, name: &str) -> Value {
    component_of(&home.status_json(), name).clone()
}

#[track_caller]
fn wait_state(home: &TestHome, name: &str, want: &str) -> Value {
    let mut last = Value::Null;
    wait_for(SETTLE, format_args!("{name} {want}"), || {
        last = home
            .try_status_json()
            .map_or(Value::Null, |s| component_of(&s, name).clone());
        last["state"] == want
    });
    last
}

fn kill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
}

#[test]
fn transient_restarts_only_failures_and_temporary_never() {
    let config = format!(
        "{SUPERVISOR}{}{}{}",
        component(
            "ok",
            &["sh", "-c", "sleep 0.5; exit 0"],
            "restart = \"on-failure\""
        ),
        component(
            "bad",
            &["sh", "-c", "sleep 0.5; exit 4"],
            "restart = \"transient\"\nmax_restarts = 100"
        ),
        component(
            "once",
            &["sh", "-c", "sleep 0.5; exit 4"],
            "restart = \"temporary\""
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    let ok = wait_state(&home, "ok", "EXITED");
    assert_eq!(ok["restarts"], 0, "{ok}");
    assert_eq!(ok["last_exit"], "exited with status 0");
    let once = wait_state(&home, "once", "EXITED");
    assert_eq!(once["restarts"], 0, "{once}");
    wait_for(SETTLE, "bad restarted", || {
        state(&home, "bad")["restarts"].as_u64() >= Some(2)
    });
    // EXITED stays EXITED; `start` runs it again.
    assert_eq!(state(&home, "ok")["state"], "EXITED");
    home.run(&["start"]);
    wait_for(SETTLE, "ok started again", || {
        matches!(
            state(&home, "ok")["state"].as_str(),
            Some("STARTING" | "RUNNING")
        )
    });
}

/// Three sleepers: `b` depends on `a`, `c` stands alone.
fn group(strategy: &str) -> TestHome {
    let config = format!(
        "[supervisor]\nstart_wait = \"20s\"\nstrategy = \"{strategy}\"\n{}{}{}",
        component("a", SLEEPER, ""),
        component("b", SLEEPER, "depends_on = [\"a\"]"),
        component("c", SLEEPER, ""),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    home.wait_running(&["a", "b", "c"]);
    home
}

#[track_caller]
fn after_killing(home: &TestHome, victim: &str) -> (HashMap<String, u32>, HashMap<String, u32>) {
    let before = pids(&home.status_json());
    kill(before[victim]);
    wait_for(
        SETTLE,
        format_args!("{victim} replaced and all running"),
        || {
            let s = home.status_json();
            let now = pids(&s);
            now.get(victim).is_some_and(|p| *p != before[victim])
                && s["components"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["state"] == "RUNNING")
        },
    );
    (before, pids(&home.status_json()))
}

#[test]
fn one_for_all_restarts_everyone() {
    let home = group("one_for_all");
    let (before, after) = after_killing(&home, "c");
    for name in ["a", "b", "c"] {
        assert_ne!(before[name], after[name], "{name} was restarted too");
    }
    assert_eq!(home.status_json()["supervisor"]["group_restarts"], 1);
}

#[test]
fn rest_for_one_restarts_the_failed_one_and_its_dependents_only() {
    let home = group("rest_for_one");
    let (before, after) = after_killing(&home, "a");
    assert_ne!(before["a"], after["a"]);
    assert_ne!(before["b"], after["b"], "b depends on a");
    assert_eq!(before["c"], after["c"], "c does not depend on a");
    // The failure of a dependent restarts only itself.
    let (before, after) = after_killing(&home, "b");
    assert_eq!(before["a"], after["a"]);
    assert_eq!(before["c"], after["c"]);
}

#[test]
fn a_critical_component_going_fatal_stops_everything_and_the_supervisor_exits_1() {
    let config = format!(
        "{SUPERVISOR}{}{}",
        component("steady", SLEEPER, ""),
        component(
            "vital",
            &["sh", "-c", "sleep 0.3; exit 1"],
            "critical = true\nmax_restarts = 1\nbackoff_initial = \"20ms\""
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]);
    wait_for(SETTLE, "the supervisor gone", || !home.is_locked());
    home.assert_nothing_runs();
    let log = fs::read_to_string(home.path().join("logs/supervisor.log")).unwrap_or_default()
        + &fs::read_to_string(home.path().join("logs/supervisor.stderr")).unwrap_or_default();
    assert!(
        log.contains("critical component `vital` is FATAL"),
        "the reason is logged:\n{}",
        home.logs()
    );
    home.run(&["status"]).expect_code(3);
}

#[test]
fn retry_fatal_after_tries_a_fatal_component_again() {
    let config = format!(
        "{SUPERVISOR}{}",
        component(
            "flaky",
            &["sh", "-c", "sleep 0.3; exit 1"],
            "max_restarts = 1\nbackoff_initial = \"20ms\"\nretry_fatal_after = \"1s\""
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]);
    let fatal = wait_state(&home, "flaky", "FATAL");
    assert!(
        fatal["info"].as_str().unwrap().contains("retry in"),
        "{fatal}"
    );
    let restarts = fatal["restarts"].as_u64().unwrap();
    wait_for(SETTLE, "a retry after FATAL", || {
        state(&home, "flaky")["restarts"].as_u64() > Some(restarts)
    });
}

#[test]
fn a_component_over_its_memory_limit_is_restarted_with_the_reason() {
    // 100 MiB, written to so it is resident, then held.
    let hog = "import time\nx = b'x' * (100 * 1024 * 1024)\ntime.sleep(1000)\n";
    let config = format!(
        "{SUPERVISOR}{}",
        component(
            "hog",
            &["python3", "-c", hog],
            "memory_limit = \"40MiB\"\nmemory_check_interval = \"200ms\"\nmax_restarts = 100"
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]);
    let mut last = Value::Null;
    wait_for(SETTLE, "hog restarted for its memory", || {
        last = state(&home, "hog");
        last["last_exit"].as_str().is_some_and(|l| {
            l.starts_with("restarted: memory ") && l.contains("over limit 40.0 MiB")
        })
    });
    assert!(last["restarts"].as_u64() >= Some(1), "{last}");
    assert_eq!(last["memory_limit_bytes"], 40 * 1024 * 1024);
    // The table says so too (while the hog runs again; it is soon stopped again, so wait for
    // a moment where it shows its last exit).
    wait_for(SETTLE, "the table showing the reason", || {
        home.run(&["status"])
            .stdout
            .contains("last: restarted: memory")
    });
    // The supervisor said so in the component's own log, with the reason.
    let log = fs::read_to_string(home.path().join("logs/hog.log")).unwrap_or_default();
    assert!(
        log.contains("[imageserving] stopping to restart: restarted: memory")
            && log.contains("[imageserving] started pid ")
            && !log.contains("restarting (requested)")
            && (log.contains("[imageserving] restarting after a failure: restarted: memory")
                || log.contains("[imageserving] restarting in ")),
        "{log}"
    );
}

/// A tiny HTTP server in Python: `/ok` answers 200, anything else 404.
/// `v` as the `&str` slices `component` takes.
fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn http_server(port: u16) -> Vec<String> {
    let script = format!(
        "import http.server\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       self.send_response(200 if self.path == '/ok' else 404)\n\
         \x20       self.end_headers()\n\
         \x20   def log_message(self, *a):\n\
         \x20       pass\n\
         http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    );
    vec!["python3".into(), "-c".into(), script]
}

#[test]
fn http_readiness_and_a_failing_liveness_check() {
    let (ready_port, sick_port) = (free_port(), free_port());
    let ready = http_server(ready_port);
    let sick = http_server(sick_port);
    let config = format!(
        "{SUPERVISOR}{}{}",
        component(
            "web",
            &argv(&ready),
            &format!("port = {ready_port}\nready = {{ http = \"/ok\" }}\nhealth = {{ http = \"/ok\", interval = \"200ms\" }}")
        ),
        component(
            "sick",
            &argv(&sick),
            &format!("port = {sick_port}\nhealth = {{ http = \"/missing\", interval = \"200ms\", max_failed = 2 }}\nmax_restarts = 100")
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    let mut last = Value::Null;
    wait_for(SETTLE, "sick restarted by its liveness check", || {
        last = state(&home, "sick");
        last["last_exit"].as_str().is_some_and(|l| {
            l.contains("liveness check failed 2 times in a row") && l.contains("404")
        })
    });
    let web = state(&home, "web");
    assert_eq!(web["state"], "RUNNING", "{web}");
    assert_eq!(
        web["restarts"], 0,
        "a passing liveness check changes nothing: {web}"
    );
}

#[test]
fn an_http_readiness_check_that_never_passes_times_out() {
    let port = free_port();
    let argv_owned = http_server(port);
    let argv: Vec<&str> = argv_owned.iter().map(String::as_str).collect();
    let config = format!(
        "{SUPERVISOR}{}",
        component(
            "never",
            &argv,
            &format!("port = {port}\nready = {{ http = \"/missing\" }}\nstart_timeout = \"1s\"\nmax_restarts = 0")
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(1);
    let never = wait_state(&home, "never", "FATAL");
    assert!(
        never["fatal_reason"]
            .as_str()
            .unwrap()
            .contains("not ready within 1s"),
        "{never}"
    );
}

#[test]
fn a_chatty_component_is_rotated_without_losing_a_line() {
    let lines = 60_000;
    let config = format!(
        "{SUPERVISOR}{}",
        component(
            "chatty",
            &["sh", "-c", &format!("seq 1 {lines}; exec sleep 1000")],
            "log_max_bytes = \"100KiB\"\nlog_backups = 100"
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    let logs = home.path().join("logs");
    let numbers = || -> Vec<u64> {
        let mut files: Vec<(u32, std::path::PathBuf)> = fs::read_dir(&logs)
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let rest = name.strip_prefix("chatty.log")?;
                let n = if rest.is_empty() {
                    0
                } else {
                    rest.strip_prefix('.')?.parse().ok()?
                };
                Some((n, e.path()))
            })
            .collect();
        // Oldest first: the highest backup number, then down to the live file.
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        files
            .iter()
            .flat_map(|(_, p)| {
                fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.split_once(' ')?.1.trim().parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    wait_for(SETTLE, "every line written", || {
        numbers().len() as u64 >= lines
    });
    let got = numbers();
    let want: Vec<u64> = (1..=lines).collect();
    assert_eq!(
        got, want,
        "every line once, in order, across the rotated files"
    );
    let files = fs::read_dir(&logs)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("chatty.log"))
        .count();
    assert!(files > 3, "the log was rotated ({files} files)");
}

#[test]
fn exceeding_the_group_restart_budget_escalates() {
    let config = format!(
        "[supervisor]\nstart_wait = \"20s\"\nstrategy = \"one_for_all\"\nmax_restarts = 1\nmax_window = \"60s\"\n{}{}",
        component("a", SLEEPER, ""),
        component("b", SLEEPER, ""),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    home.wait_running(&["a", "b"]);
    // The first group restart is within the budget.
    let (_, after) = after_killing(&home, "a");
    // The second is not: everything stops and the supervisor exits.
    kill(after["b"]);
    wait_for(SETTLE, "the supervisor gone", || !home.is_locked());
    home.assert_nothing_runs();
    let stderr = fs::read_to_string(home.path().join("logs/supervisor.stderr")).unwrap_or_default();
    assert!(
        stderr.contains("escalation") && stderr.contains("2 group restarts in 1m"),
        "the reason on standard error:\n{stderr}\n{}",
        home.logs()
    );
}

#[test]
fn a_memory_spike_of_two_seconds_is_caught_with_the_default_interval() {
    // Over the limit for 2 s, then back under it for good.
    let spike =
        "import time\nx = b'x' * (100 * 1024 * 1024)\ntime.sleep(2)\ndel x\ntime.sleep(1000)\n";
    let config = format!(
        "{SUPERVISOR}{}",
        component(
            "spiky",
            &["python3", "-c", spike],
            "memory_limit = \"40MiB\"\nmax_restarts = 100"
        ),
    );
    let home = TestHome::new(&config);
    home.run(&["start"]).expect_code(0);
    wait_for(SETTLE, "the spike caught", || {
        state(&home, "spiky")["last_exit"]
            .as_str()
            .is_some_and(|l| l.starts_with("restarted: memory "))
    });
}

#[test]
fn a_full_disk_drops_and_counts_log_output_and_the_component_keeps_running() {
    let config = format!(
        "{SUPERVISOR}{}",
        component(
            "chatty",
            &[
                "sh",
                "-c",
                "while :; do echo a line of output; sleep 0.005; done"
            ],
            ""
        ),
    );
    let home = TestHome::new(&config);
    // The component's log is a full disk: every write fails with ENOSPC.
    let logs = home.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    std::os::unix::fs::symlink("/dev/full", logs.join("chatty.log")).unwrap();
    home.run(&["start"]).expect_code(0);
    let mut last = Value::Null;
    wait_for(SETTLE, "output dropped and counted", || {
        last = state(&home, "chatty");
        last["log_dropped_bytes"].as_u64() > Some(1000)
    });
    assert_eq!(
        last["state"], "RUNNING",
        "never blocked on its output: {last}"
    );
    assert_eq!(last["restarts"], 0, "{last}");
    let table = home.run(&["status"]);
    assert!(table.stdout.contains("dropped"), "{table}");

    // Space returns: the count goes into the supervisor's log, and lines into the file.
    fs::remove_file(logs.join("chatty.log")).unwrap();
    wait_for(SETTLE, "the log written again", || {
        fs::read_to_string(logs.join("chatty.log")).is_ok_and(|t| t.contains("a line of output"))
    });
    wait_for(
        SETTLE,
        "the dropped bytes reported in the supervisor's log",
        || {
            fs::read_to_string(logs.join("supervisor.log"))
                .is_ok_and(|t| t.contains("bytes of output were dropped while it was not"))
        },
    );
    assert_eq!(state(&home, "chatty")["state"], "RUNNING");
}

/// The same as above on a real filesystem that fills up: the home's `logs/` is a 512 KiB tmpfs
/// mounted in a private mount namespace (`unshare -m`), so nobody else sees it. The daemon and
/// its components live in that namespace; the test reaches their view of `logs/` through
/// `/proc/<daemon>/root`. The supervisor's own log is on the same full filesystem.
#[test]
fn a_full_tmpfs_drops_and_counts_log_output_and_the_supervisor_keeps_supervising() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    if !require_root(
        "a_full_tmpfs_drops_and_counts_log_output_and_the_supervisor_keeps_supervising",
    ) {
        return;
    }
    let config = format!(
        "{SUPERVISOR}{}{}",
        component(
            "chatty",
            &[
                "sh",
                "-c",
                "while :; do echo a line of output; sleep 0.005; done"
            ],
            ""
        ),
        component("quiet", SLEEPER, ""),
    );
    let home = TestHome::new(&config);
    let logs = home.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o755)).unwrap();

    // `start` runs inside a new mount namespace whose `logs/` is a small tmpfs; the daemon it
    // forks, and every component, inherit the namespace.
    let mut start = std::process::Command::new("unshare");
    start
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"logs=$1; shift; mount -t tmpfs -o size=512k,mode=0755 is-e2e-logs "$logs" && exec "$@""#)
        .arg("sh")
        .arg(&logs)
        .arg(crate::harness::BIN)
        .arg("--home")
        .arg(home.path())
        .arg("start")
        .env_remove("IMAGESERVING_HOME")
        .env_remove("IMAGESERVING_LOG")
        .env_remove(crate::harness::TREE_ENV);
    run_command(start, "unshare -m ... start".into(), COMMAND_TIMEOUT)
        .unwrap_or_else(|out| panic!("start timed out\n{out}"))
        .expect_code(0);
    let daemon = home.supervisor_pid();
    let inside = std::path::PathBuf::from(format!("/proc/{daemon}/root")).join(
        logs.strip_prefix("/")
            .expect("the home is an absolute path"),
    );
    wait_for(SETTLE, "chatty's log written on the tmpfs", || {
        fs::read_to_string(inside.join("chatty.log")).is_ok_and(|t| t.contains("a line of output"))
    });
    assert!(
        !logs.join("chatty.log").exists(),
        "the tmpfs is visible outside the daemon's mount namespace"
    );

    // Fill the filesystem to the last byte.
    let filler = inside.join("filler");
    let mut file = fs::File::create(&filler).expect("creating the filler");
    let block = vec![b'x'; 4096];
    let mut tail = false;
    loop {
        match file.write(if tail { &block[..1] } else { &block }) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && !tail => tail = true,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    drop(file);

    let mut last = Value::Null;
    wait_for(SETTLE, "output dropped and counted", || {
        last = state(&home, "chatty");
        last["log_dropped_bytes"].as_u64() > Some(1000)
    });
    assert_eq!(
        last["state"], "RUNNING",
        "never blocked on its output: {last}"
    );
    assert_eq!(last["restarts"], 0, "{last}");

    // The supervisor keeps supervising with its own log on the full disk: a crash is noticed
    // and repaired, and the operator's commands work.
    let quiet = home.pid_of("quiet").expect("quiet's pid");
    kill(quiet);
    wait_for(SETTLE, "quiet restarted", || {
        let s = state(&home, "quiet");
        s["state"] == "RUNNING"
            && s["restarts"] == 1
            && crate::harness::pid(&s["pid"]) != Some(quiet)
    });
    home.run(&["restart", "quiet"]).expect_code(0);
    assert!(home.run(&["status"]).stdout.contains("dropped"));

    // Space returns: lines reach the file again, and the count goes into the supervisor's log.
    let before = fs::metadata(inside.join("chatty.log")).unwrap().len();
    fs::remove_file(&filler).unwrap();
    wait_for(SETTLE, "the log written again", || {
        fs::metadata(inside.join("chatty.log")).is_ok_and(|m| m.len() > before + 100)
    });
    wait_for(
        SETTLE,
        "the dropped bytes reported in the supervisor's log",
        || {
            fs::read_to_string(inside.join("supervisor.log"))
                .is_ok_and(|t| t.contains("bytes of output were dropped while it was not"))
        },
    );
    assert_eq!(state(&home, "chatty")["state"], "RUNNING");
    home.run(&["stop"]).expect_code(0);
}
