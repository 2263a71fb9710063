//! The everyday commands that need no supervisor: `logs` (the last lines, and `-f` following
//! a log through its rotations), `check-config`, `completions` and `man`.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

use crate::harness::{
    component, run_command, stack_config, wait_for, TestHome, BIN, COMMAND_TIMEOUT, SETTLE,
    SUPERVISOR,
};

/// The last `n` lines of `path`, each with its newline: what `logs -n` must print.
fn file_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The numbers of the `line-<n>` lines in `text` (`<time> line-<n>`), in order.
fn numbers(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.split_once(' ')?.1.strip_prefix("line-")?.parse().ok())
        .collect()
}

#[test]
fn logs_n_prints_exactly_the_last_lines_with_or_without_a_supervisor() {
    let config = format!(
        "{SUPERVISOR}{}",
        component(
            "web",
            &[
                "sh",
                "-c",
                "until grep -qF '[imageserving] running' logs/web.log; do sleep 0.05; done; \
                 for i in $(seq 1 12); do echo line-$i; done; exec sleep 1000"
            ],
            "aliases = [\"webby\"]"
        )
    );
    let home = TestHome::new(&config);
    let log = home.path().join("logs/web.log");

    // Nothing started yet: no log, said clearly.
    let out = home.run(&["logs", "web"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("logs/web.log does not exist yet"),
        "{out}"
    );

    home.run(&["start"]).expect_code(0);
    // It prints once the supervisor has marked it running, so its lines end its log.
    wait_for(SETTLE, "line-12 in logs/web.log", || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains(" line-12\n"))
    });

    let out = home.run(&["logs", "web", "-n", "3"]);
    out.expect_code(0);
    assert_eq!(numbers(&out.stdout), [10, 11, 12], "{out}");
    assert_eq!(out.stdout, file_tail(&log, 3), "{out}");
    // An alias, in any case, names the same log.
    let alias = home.run(&["logs", "WEBBY", "--lines", "3"]);
    alias.expect_code(0);
    assert_eq!(alias.stdout, out.stdout, "{alias}");
    // Ten lines by default, like tail.
    let ten = home.run(&["logs", "web"]);
    ten.expect_code(0);
    assert_eq!(numbers(&ten.stdout), (3..=12).collect::<Vec<_>>(), "{ten}");
    assert_eq!(ten.stdout.lines().count(), 10, "{ten}");

    // The same without a supervisor: logs reads files (the supervisor's markers about the
    // stop are the last lines now).
    home.run(&["stop"]).expect_code(0);
    home.assert_nothing_runs();
    let after = home.run(&["logs", "web", "-n", "3"]);
    after.expect_code(0);
    assert_eq!(after.stdout, file_tail(&log, 3), "{after}");
    let all = home.run(&["logs", "web", "-n", "100"]);
    all.expect_code(0);
    assert_eq!(numbers(&all.stdout), (1..=12).collect::<Vec<_>>(), "{all}");
}

#[test]
fn logs_supervisor_prints_the_daemons_own_log() {
    let home = TestHome::new(&format!(
        "{SUPERVISOR}{}",
        component("web", &["sleep", "1000"], "")
    ));
    let out = home.run(&["logs", "supervisor"]);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("logs/supervisor.log does not exist yet"),
        "{out}"
    );

    home.run(&["start"]).expect_code(0);
    home.run(&["stop"]).expect_code(0);
    // Stopped: the log no longer changes, so the tail is exact.
    let log = home.path().join("logs/supervisor.log");
    let out = home.run(&["logs", "supervisor", "-n", "5"]);
    out.expect_code(0);
    assert_eq!(out.stdout.lines().count(), 5, "{out}");
    assert_eq!(out.stdout, file_tail(&log, 5), "{out}");
}

#[test]
fn logs_of_an_unknown_component_is_a_usage_error() {
    let home = TestHome::stack();
    for args in [&["logs", "nosuch"][..], &["logs", "nosuch", "-f"][..]] {
        let out = home.run(args);
        out.expect_code(2);
        assert!(out.stderr.contains("unknown component `nosuch`"), "{out}");
        assert!(out.stderr.contains("is, svg, ps"), "{out}");
        assert!(out.stderr.contains("supervisor"), "{out}");
    }
    home.assert_nothing_runs();
}

/// `logs -f` in the background, its output collected; killed and reaped when dropped, so a
/// failing test leaves it behind no more than a passing one.
struct Following {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Following {
    fn spawn(home: &TestHome, args: &[&str]) -> Following {
        let mut cmd = home.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning logs -f");
        let stdout = collect(child.stdout.take());
        let stderr = collect(child.stderr.take());
        Following {
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        text(&self.stdout)
    }

    /// Both outputs, for a failing assertion's message.
    fn describe(&self) -> String {
        format!(
            "--- logs -f stdout\n{}\n--- logs -f stderr\n{}",
            self.stdout(),
            text(&self.stderr)
        )
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(bytes: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&bytes.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

/// What `pipe` yields, read by a thread until it closes.
fn collect(pipe: Option<impl Read + Send + 'static>) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    std::thread::spawn(move || {
        let Some(mut pipe) = pipe else { return };
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(&buf[..n]);
        }
    });
    out
}

#[test]
fn logs_follow_prints_every_line_once_across_rotations() {
    const LINES: u32 = 150;
    // About 34 bytes a line: a file holds 11 of them, so the component's output is rotated
    // more than ten times while it is followed, sometimes several times between two polls.
    let config = format!(
        "{SUPERVISOR}{}",
        component(
            "chatty",
            &[
                "sh",
                "-c",
                &format!(
                    "i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); echo line-$i; sleep 0.01; done; exec sleep 1000"
                ),
            ],
            "log_max_bytes = 400\nlog_backups = 30"
        )
    );
    let home = TestHome::new(&config);
    // Started before the log exists: it waits for it, then reads it from its first line.
    let follow = Following::spawn(&home, &["logs", "chatty", "-f"]);
    home.run(&["start"]).expect_code(0);
    wait_for(SETTLE, format_args!("line-{LINES} from logs -f"), || {
        follow.stdout().contains(&format!(" line-{LINES}\n"))
    });
    let out = follow.stdout();
    assert_eq!(
        numbers(&out),
        (1..=LINES).collect::<Vec<_>>(),
        "every line exactly once, in order\n{}",
        follow.describe()
    );
    assert!(
        out.contains("[imageserving] started pid"),
        "the supervisor's markers are in the log too\n{}",
        follow.describe()
    );
    let logs = home.path().join("logs");
    for rotated in ["chatty.log.1", "chatty.log.2"] {
        assert!(
            logs.join(rotated).exists(),
            "{rotated} missing: the log was not rotated twice\n{}",
            home.logs()
        );
    }
    drop(follow);

    // The last lines go back into the rotated files when the live one holds fewer.
    let out = home.run(&["logs", "chatty", "-n", "30"]);
    out.expect_code(0);
    assert_eq!(out.stdout.lines().count(), 30, "{out}");
    assert_eq!(
        numbers(&out.stdout),
        (LINES - 29..=LINES).collect::<Vec<_>>(),
        "{out}"
    );
}

#[test]
fn check_config_explains_a_valid_configuration_in_start_order() {
    let home = TestHome::stack();
    let out = home.run(&["check-config"]);
    out.expect_code(0);
    let conf = home.path().join("conf/imageserving.toml");
    assert!(
        out.stdout
            .starts_with(&format!("{}: valid\n", conf.display())),
        "{out}"
    );
    let at = |what: &str| {
        out.stdout
            .find(what)
            .unwrap_or_else(|| panic!("{what:?} missing\n{out}"))
    };
    let (is, svg, ps) = (
        at("1. is (alias image-server)\n"),
        at("2. svg (alias svg-server)\n"),
        at("3. ps (alias platform-server)\n"),
    );
    assert!(is < svg && svg < ps, "{out}");
    // Each component's command, port, dependencies, policy, checks and log.
    let server = std::path::Path::new(BIN).with_file_name("imageserving-server");
    at(&format!("command     {} ps\n", server.display()));
    at("depends on  is, svg\n");
    at("restart     permanent");
    // The built-in servers' sockets are held by the supervisor, so readiness is the server's
    // own word, and a restart is a handover.
    at("(socket held by the supervisor, backlog 1024)\n");
    at("ready       its main process says READY=1 on NOTIFY_SOCKET");
    at("handover    `restart` starts the new process beside the old one; the old one drains once the new one is ready (SIGKILL after 35s)\n");
    at("stop        SIGTERM, then SIGKILL after 5s\n");
    at("log         logs/ps.log; rotated at 50.0 MiB, 10 rotated files kept\n");

    // Another file, given by name: its own components, dependencies first.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let other = dir.path().join("other.toml");
    let text = format!(
        "{SUPERVISOR}{}{}",
        component(
            "front",
            &["sleep", "1000"],
            "depends_on = [\"back\"]\nrestart = \"on-failure\""
        ),
        component(
            "back",
            &["sleep", "1000"],
            "health = { file = \"run/ok\", interval = \"2s\" }"
        ),
    );
    fs::write(&other, text).expect("writing a configuration");
    let out = home.run(&["check-config", other.to_str().expect("utf-8")]);
    out.expect_code(0);
    let back = out.stdout.find("1. back\n");
    let front = out.stdout.find("2. front\n");
    assert!(back.is_some() && front.is_some(), "{out}");
    assert!(
        out.stdout.contains("restart     transient"),
        "the restart type is shown\n{out}"
    );
    assert!(out.stdout.contains("run/ok exists, every 2s"), "{out}");

    // No configuration: the embedded default, said so.
    fs::remove_file(&conf).expect("removing the configuration");
    let out = home.run(&["check-config"]);
    out.expect_code(0);
    assert!(out.stdout.contains("embedded default"), "{out}");
    assert!(
        out.stdout.contains("3. ps (alias platform-server)"),
        "{out}"
    );

    // Nothing ran, and nothing was created in the home.
    home.assert_nothing_runs();
    let entries: Vec<String> = fs::read_dir(home.path())
        .expect("the home")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(entries, ["conf"], "check-config created files in the home");
    assert_eq!(
        fs::read_dir(home.path().join("conf"))
            .expect("conf/")
            .count(),
        0
    );
}

#[test]
fn check_config_rejects_invalid_files_with_exit_6() {
    let cases = [
        (
            "unknown key",
            format!(
                "{SUPERVISOR}{}",
                component("web", &["sleep", "1000"], "colour = \"red\"")
            ),
            vec!["colour", "unknown field"],
        ),
        (
            "dependency cycle",
            format!(
                "{SUPERVISOR}{}{}",
                component("a", &["sleep", "1000"], "depends_on = [\"b\"]"),
                component("b", &["sleep", "1000"], "depends_on = [\"a\"]"),
            ),
            vec![".depends_on", "cycle"],
        ),
        (
            "bad duration",
            format!(
                "{SUPERVISOR}{}",
                component("web", &["sleep", "1000"], "stop_timeout = \"ten\"")
            ),
            vec!["components.web.stop_timeout", "\"ten\""],
        ),
    ];
    let home = TestHome::new(&stack_config());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let conf = home.path().join("conf/imageserving.toml");
    for (case, config, wanted) in cases {
        // The home's file, and the same text given by name.
        fs::write(&conf, &config).expect("writing the configuration");
        let file = dir.path().join("bad.toml");
        fs::write(&file, &config).expect("writing a configuration");
        for (args, named) in [
            (vec!["check-config"], conf.clone()),
            (
                vec!["check-config", file.to_str().expect("utf-8")],
                file.clone(),
            ),
        ] {
            let out = home.run(&args);
            assert_eq!(out.code(), Some(6), "{case}: unexpected exit code\n{out}");
            assert!(out.stdout.is_empty(), "{case}: no explanation\n{out}");
            let named = named.display().to_string();
            for w in wanted.iter().copied().chain([named.as_str()]) {
                assert!(
                    out.stderr.contains(w),
                    "{case}: the error lacks {w:?}\n{out}"
                );
            }
        }
    }
    let out = home.run(&["check-config", "/nonexistent/imageserving.toml"]);
    out.expect_code(6);
    assert!(
        out.stderr
            .contains("cannot read configuration `/nonexistent/imageserving.toml`"),
        "{out}"
    );
    home.assert_nothing_runs();
}

/// Runs the binary without any home: `completions` and `man` must not need one.
fn run_homeless(args: &[&str]) -> crate::harness::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("IMAGESERVING_HOME")
        .env_remove("HOME")
        .env_remove("XDG_DATA_HOME");
    run_command(cmd, args.join(" "), COMMAND_TIMEOUT)
        .unwrap_or_else(|out| panic!("command timed out\n{out}"))
}

/// The commands `--help` lists (the hidden ones are not).
fn visible_commands() -> Vec<String> {
    let help = run_homeless(&["--help"]);
    help.expect_code(0);
    let commands: Vec<String> = help
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    for expected in ["start", "logs", "check-config", "completions", "man"] {
        assert!(
            commands.iter().any(|c| c == expected),
            "{expected} missing from --help\n{help}"
        );
    }
    assert!(!commands.iter().any(|c| c == "component"), "{help}");
    commands
}

#[test]
fn completions_offer_every_visible_command_and_no_hidden_one() {
    let out = run_homeless(&["completions", "bash"]);
    out.expect_code(0);
    for command in visible_commands() {
        assert!(
            out.stdout.contains(&format!("imageserving,{command})")),
            "bash does not complete {command}\n{out}"
        );
    }
    assert!(!out.stdout.contains("imageserving,component)"), "{out}");
    assert!(!out.stdout.contains("--detached"), "{out}");
    // Options and their values too.
    assert!(out.stdout.contains("--follow"), "{out}");

    for (shell, mark) in [
        ("zsh", "#compdef imageserving"),
        ("fish", "complete -c imageserving"),
        ("elvish", "imageserving"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = run_homeless(&["completions", shell]);
        out.expect_code(0);
        assert!(out.stdout.contains(mark), "{shell}\n{out}");
        assert!(out.stdout.contains("check-config"), "{shell}\n{out}");
    }
    run_homeless(&["completions", "tcsh"]).expect_code(2);
}

/// The first request of a roff page, past the preamble that defines the apostrophe.
fn first_request(page: &str) -> &str {
    page.lines()
        .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
        .unwrap_or_default()
}

#[test]
fn man_prints_the_page_and_writes_one_per_command() {
    let out = run_homeless(&["man"]);
    out.expect_code(0);
    assert!(
        first_request(&out.stdout).starts_with(".TH imageserving 1"),
        "{out}"
    );
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(out.stdout.contains(section), "{section} missing\n{out}");
    }
    assert!(out.stdout.contains("imageserving\\-logs(1)"), "{out}");
    assert!(
        !out.stdout.contains("imageserving\\-component"),
        "hidden, so absent\n{out}"
    );

    let dir = tempfile::tempdir().expect("a temporary directory");
    let pages = dir.path().join("man1");
    let out = run_homeless(&["man", "--dir", pages.to_str().expect("utf-8")]);
    out.expect_code(0);
    let mut expected: Vec<String> = visible_commands()
        .into_iter()
        .filter(|c| c != "help")
        .map(|c| format!("imageserving-{c}.1"))
        .collect();
    expected.push("imageserving.1".into());
    expected.sort();
    let mut written: Vec<String> = fs::read_dir(&pages)
        .expect("the pages' directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    written.sort();
    assert_eq!(written, expected, "{out}");
    assert_eq!(out.stdout.lines().count(), expected.len(), "{out}");
    for name in &written {
        let page = fs::read_to_string(pages.join(name)).expect("a page");
        let title = name.trim_end_matches(".1");
        assert!(
            first_request(&page).starts_with(&format!(".TH {title} 1  \"imageserving ")),
            "{name}:\n{page}"
        );
    }
    let logs = fs::read_to_string(pages.join("imageserving-logs.1")).expect("the logs page");
    assert!(logs.contains("\\-\\-follow"), "{logs}");
}

#[test]
fn logs_follow_waits_for_a_log_that_does_not_exist_yet() {
    let home = TestHome::new(&format!(
        "{SUPERVISOR}{}",
        component(
            "late",
            &["sh", "-c", "echo hello-late; exec sleep 1000"],
            ""
        )
    ));
    let follow = Following::spawn(&home, &["logs", "late", "-f", "-n", "0"]);
    // It keeps running while there is nothing to read.
    wait_for(SETTLE, "logs -f saying it waits", || {
        text(&follow.stderr).contains("does not exist yet; waiting for it")
    });
    home.run(&["start"]).expect_code(0);
    wait_for(SETTLE, "hello-late from logs -f", || {
        follow.stdout().contains(" hello-late\n")
    });
}
