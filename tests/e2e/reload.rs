//! `reload` (and SIGHUP) applying a changed configuration, and `events` following the
//! lifecycle live.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{component, component_of, pid, wait_for, TestHome, SETTLE, SUPERVISOR};

fn write_config(home: &TestHome, config: &str) {
    std::fs::write(home.path().join("conf/imageserving.toml"), config).expect("writing the config");
}

#[test]
fn reload_restarts_only_what_changed_and_an_invalid_config_changes_nothing() {
    let base = format!(
        "{SUPERVISOR}{}{}{}",
        component("same", &["sleep", "1000"], ""),
        component("changed", &["sleep", "1000"], ""),
        component("removed", &["sleep", "1000"], ""),
    );
    let home = TestHome::new(&base);
    home.run(&["start"]).expect_code(0);
    let before = home.wait_running(&["same", "changed", "removed"]);
    let pid_of = |status: &serde_json::Value, name: &str| pid(&component_of(status, name)["pid"]);

    // An invalid file: refused with exit 6 and the reason; nothing moves.
    write_config(&home, &format!("{base}\n[components.bad]\ncommand = []\n"));
    let out = home.run(&["reload"]);
    out.expect_code(6);
    assert!(out.stderr.contains("bad"), "{out}");
    let unchanged = home.status_json();
    for name in ["same", "changed", "removed"] {
        assert_eq!(
            pid_of(&unchanged, name),
            pid_of(&before, name),
            "{name} moved"
        );
    }

    let new = format!(
        "{SUPERVISOR}{}{}{}",
        component("same", &["sleep", "1000"], ""),
        component("changed", &["sleep", "2000"], ""),
        component("added", &["sleep", "1000"], ""),
    );
    write_config(&home, &new);
    let out = home.run(&["reload"]);
    out.expect_code(0);
    for expected in [
        "removed (stopped): removed",
        "changed (restarted): changed",
        "added: added",
    ] {
        assert!(out.stdout.contains(expected), "no {expected:?}:\n{out}");
    }
    let after = home.wait_running(&["same", "changed", "added"]);
    assert_eq!(
        pid_of(&after, "same"),
        pid_of(&before, "same"),
        "same restarted"
    );
    assert_ne!(pid_of(&after, "changed"), pid_of(&before, "changed"));
    assert!(after["components"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["name"] != "removed"));
    assert!(
        home.marked()
            .iter()
            .all(|id| id.pid != pid_of(&before, "removed").unwrap()),
        "the removed component still runs"
    );
    // The same file again: nothing to do.
    let out = home.run(&["reload"]);
    out.expect_code(0);
    assert!(out.stdout.contains("unchanged"), "{out}");
    assert_eq!(
        pid_of(&home.status_json(), "changed"),
        pid_of(&after, "changed")
    );

    // SIGHUP to the supervisor reloads too.
    write_config(
        &home,
        &format!("{new}{}", component("hup", &["sleep", "1000"], "")),
    );
    let daemon = home.supervisor_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    home.wait_running(&["same", "changed", "added", "hup"]);
    assert_eq!(
        home.supervisor_pid(),
        daemon,
        "SIGHUP must not restart the supervisor"
    );

    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
}

#[test]
fn reload_without_a_supervisor_says_so() {
    let home = TestHome::new(&format!(
        "{SUPERVISOR}{}",
        component("a", &["sleep", "1000"], "")
    ));
    let out = home.run(&["reload"]);
    out.expect_code(7);
    assert!(out.stderr.contains("not running"), "{out}");
}

/// `imageserving events` running in the background, its lines collected by a thread; killed
/// when dropped.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(home: &TestHome, args: &[&str]) -> Follower {
        let mut child = home
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("running events");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// Lines until one satisfies `want`, within [`SETTLE`].
    fn until(&self, what: &str, want: impl Fn(&str) -> bool) -> Vec<String> {
        let until = Instant::now() + SETTLE;
        let mut seen = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = want(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no {what} within {SETTLE:?}; lines: {seen:#?}"),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn events_follow_a_restart_live_and_end_with_the_supervisor() {
    let home = TestHome::new(&format!(
        "{SUPERVISOR}{}",
        component("a", &["sleep", "1000"], "")
    ));
    home.run(&["start"]).expect_code(0);
    home.wait_running(&["a"]);
    let mut json = Follower::start(&home, &["events", "--json"]);
    let mut text = Follower::start(&home, &["events"]);
    // Subscribed before the restart: wait until both connections are served.
    wait_for(Duration::from_secs(10), "two subscribers", || {
        std::fs::read_to_string(home.path().join("logs/supervisor.log"))
            .is_ok_and(|l| l.matches("events subscribed").count() >= 2)
    });
    let old = home.pid_of("a").expect("a runs");
    home.run(&["restart", "a"]).expect_code(0);
    let new = home.pid_of("a").expect("a runs again");

    let lines = json.until("a running again", |l| {
        l.contains("\"event\":\"running\"") && l.contains(&format!("\"pid\":{new}"))
    });
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["stopping", "exited", "spawned", "running"],
        "{lines:#?}"
    );
    assert_eq!(events[1]["pid"], old);
    assert_eq!(events[1]["signal"], 15);
    assert_eq!(events[2]["pid"], new);
    assert!(events
        .iter()
        .all(|e| e["component"] == "a" && e["at_unix_ms"].is_u64()));

    let human = text.until("a running line", |l| {
        l.contains(&format!("a running: pid {new}"))
    });
    assert!(
        human.iter().any(|l| l.contains("a exited: pid")),
        "{human:#?}"
    );

    // The stream ends when the supervisor exits: both followers exit 0 on their own.
    home.run(&["stop"]).expect_code(0);
    let until = Instant::now() + SETTLE;
    for f in [&mut json, &mut text] {
        loop {
            if let Some(status) = f.child.try_wait().expect("wait") {
                assert!(status.success(), "{status}");
                break;
            }
            assert!(
                Instant::now() < until,
                "events did not end with the supervisor"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    home.assert_nothing_runs();
}
