//! Commands that cannot do their job: no supervisor, an unknown component, an invalid
//! configuration, a home too deep for a Unix socket. Each must say why, with the documented
//! exit code, and leave nothing running.

use crate::harness::{component, stack_config, TestHome, SUPERVISOR};

#[test]
fn commands_without_a_supervisor_say_so_with_their_exit_codes() {
    let home = TestHome::stack();

    let out = home.run(&["status"]);
    out.expect_code(3);
    assert!(
        out.stdout.contains("Server Supervisor is not running"),
        "{out}"
    );
    assert!(
        out.stdout.contains(home.path().to_str().expect("utf-8")),
        "the message names the home\n{out}"
    );

    // With --json, standard output stays clean for a parser.
    let out = home.run(&["status", "--json"]);
    out.expect_code(3);
    assert!(out.stdout.trim().is_empty(), "{out}");

    let out = home.run(&["status", "is"]);
    out.expect_code(3);

    let out = home.run(&["restart", "is"]);
    out.expect_code(7);
    assert!(out.stderr.contains("not running"), "{out}");

    for args in [["restart", "nosuch"], ["status", "nosuch"]] {
        let out = home.run(&args);
        out.expect_code(2);
        assert!(out.stderr.contains("nosuch"), "{out}");
        assert!(
            out.stderr.contains("is, svg, ps"),
            "the error lists the configured names\n{out}"
        );
    }

    // None of this started anything.
    home.assert_nothing_runs();
}

#[test]
fn unknown_component_is_a_usage_error_while_running_too() {
    let home = TestHome::stack();
    home.run(&["start"]).expect_code(0);
    for args in [
        &["restart", "nosuch"][..],
        &["status", "nosuch"][..],
        &["restart", "platform"][..],
    ] {
        let out = home.run(args);
        out.expect_code(2);
        assert!(out.stderr.contains("is, svg, ps"), "{out}");
    }
    // Names and aliases are accepted, ignoring ASCII case.
    home.run(&["status", "PS"]).expect_code(0);
    home.run(&["status", "svg-server"]).expect_code(0);
}

#[test]
fn bad_configuration_names_the_key_exits_6_and_starts_nothing() {
    let cases = [
        (
            "unknown key",
            format!(
                "{SUPERVISOR}{}",
                component("web", &["sleep", "1000"], "colour = \"red\"")
            ),
            vec!["colour", "imageserving.toml"],
        ),
        (
            "dependency cycle",
            format!(
                "{SUPERVISOR}{}{}",
                component("a", &["sleep", "1000"], "depends_on = [\"b\"]"),
                component("b", &["sleep", "1000"], "depends_on = [\"a\"]"),
            ),
            vec!["components.", ".depends_on", "cycle"],
        ),
        (
            "bad duration",
            format!(
                "{SUPERVISOR}{}",
                component("web", &["sleep", "1000"], "stop_timeout = \"ten\"")
            ),
            vec!["components.web.stop_timeout", "\"ten\""],
        ),
        (
            "bad start_wait",
            format!(
                "[supervisor]\nstart_wait = \"0s\"\n{}",
                component("web", &["sleep", "1000"], "")
            ),
            vec!["supervisor.start_wait"],
        ),
        (
            "duplicate port",
            format!(
                "{SUPERVISOR}{}{}",
                component("a", &["sleep", "1000"], "port = 1"),
                component("b", &["sleep", "1000"], "port = 1"),
            ),
            vec!["components.b.port", "port 1"],
        ),
    ];
    for (case, config, wanted) in cases {
        let home = TestHome::new(&config);
        for args in [&["start"][..], &["restart"][..], &["supervisor"][..]] {
            let out = home.run(args);
            assert_eq!(out.code(), Some(6), "{case}: unexpected exit code\n{out}");
            for w in &wanted {
                assert!(
                    out.stderr.contains(w),
                    "{case}: the error lacks {w:?}\n{out}"
                );
            }
            home.assert_nothing_runs();
        }
        // `status` of an unknown installation still works: nothing runs.
        home.run(&["status"]).expect_code(3);
    }
}

#[test]
fn full_restart_with_a_broken_config_keeps_the_installation_up() {
    let home = TestHome::stack();
    home.run(&["start"]).expect_code(0);
    let before = home.status_json();

    std::fs::write(
        home.path().join("conf/imageserving.toml"),
        format!(
            "{SUPERVISOR}{}\n[components.is]\nbogus = 1\n",
            stack_config()
        ),
    )
    .expect("rewriting the config");
    let out = home.run(&["restart"]);
    out.expect_code(6);
    assert!(out.stderr.contains("imageserving.toml"), "{out}");

    // Nothing was stopped: same supervisor, same components.
    let after = home.status_json();
    assert_eq!(after["supervisor"]["pid"], before["supervisor"]["pid"]);
    assert_eq!(crate::harness::pids(&after), crate::harness::pids(&before));
}

/// A home whose socket path is exactly `len` bytes long:
/// `<tmp>/is-e2e-XXXXXX/<padding>/run/control.sock`.
fn home_with_socket_path_of(len: usize, config: &str) -> TestHome {
    let tmp = std::fs::canonicalize(std::env::temp_dir()).expect("the temporary directory");
    let fixed = tmp.as_os_str().len() + "/is-e2e-XXXXXX/".len() + "/run/control.sock".len();
    let pad = len
        .checked_sub(fixed)
        .expect("a temporary directory short enough");
    let home = TestHome::at(&"p".repeat(pad), config);
    let actual = home.socket().as_os_str().len();
    assert_eq!(actual, len, "socket path {}", home.socket().display());
    home
}

#[test]
fn socket_path_too_long_is_a_clear_error() {
    let config = format!("{SUPERVISOR}{}", component("web", &["sleep", "1000"], ""));

    // 107 bytes fit (the Linux limit)...
    let fits = home_with_socket_path_of(107, &config);
    fits.run(&["start"]).expect_code(0);
    fits.run(&["status"]).expect_code(0);
    fits.run(&["stop"]).expect_code(0);
    fits.assert_nothing_runs();
    // One home per thread at a time (see `harness::MACHINE`).
    drop(fits);

    // ...108 do not.
    let home = home_with_socket_path_of(108, &config);
    let socket = home.socket().display().to_string();
    for args in [&["start"][..], &["supervisor"][..]] {
        let out = home.run(args);
        assert_eq!(out.code(), Some(1), "{out}");
        assert!(
            out.stderr.contains(&socket),
            "the error names the path\n{out}"
        );
        assert!(
            out.stderr.contains("107"),
            "the error names the limit\n{out}"
        );
        assert!(
            out.stderr.contains("--home"),
            "the error says what to do\n{out}"
        );
    }
    // The commands that only connect fail cleanly too (no panic, exit code 101).
    for args in [&["status"][..], &["stop"][..], &["restart", "web"][..]] {
        let out = home.run(args);
        assert!(
            matches!(out.code(), Some(c) if c != 0 && c != 101),
            "unexpected exit\n{out}"
        );
        assert!(
            out.stderr.contains(&socket),
            "the error names the path\n{out}"
        );
        let first = out.stderr.lines().next().unwrap_or_default();
        let clauses: Vec<&str> = first.split(": ").collect();
        let mut unique = clauses.clone();
        unique.dedup();
        assert_eq!(
            clauses, unique,
            "the error repeats itself (the OS error is printed twice)\n{out}"
        );
    }
    home.assert_nothing_runs();
}
