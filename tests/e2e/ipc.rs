//! The control socket spoken to directly: malformed, oversized, silent and unknown requests
//! get an error answer and never hurt the daemon; other users are kept out.

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{pids, require_root, run_command, TestHome, COMMAND_TIMEOUT};

/// A running installation of the stack_config.
fn running() -> TestHome {
    let home = TestHome::stack();
    home.run(&["start"]).expect_code(0);
    home
}

/// A raw connection to the control socket, reading with `timeout`.
fn connect(home: &TestHome, timeout: Duration) -> (UnixStream, BufReader<UnixStream>) {
    let stream = UnixStream::connect(home.socket()).expect("connecting to the control socket");
    stream
        .set_read_timeout(Some(timeout))
        .expect("setting a read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("setting a write timeout");
    let reader = BufReader::new(stream.try_clone().expect("cloning the stream"));
    (stream, reader)
}

/// Reads one response frame and returns its `response` object.
#[track_caller]
fn read_response(reader: &mut BufReader<UnixStream>) -> Value {
    let mut line = String::new();
    let n = reader.read_line(&mut line).expect("reading an answer");
    assert!(n > 0, "the daemon closed the connection without answering");
    assert!(line.ends_with('\n'), "an answer is one line: {line:?}");
    let frame: Value = serde_json::from_str(&line).expect("the answer is JSON");
    assert_eq!(frame["v"], 1, "{frame}");
    frame["response"].clone()
}

/// Sends one line and reads the answer.
#[track_caller]
fn exchange(stream: &mut UnixStream, reader: &mut BufReader<UnixStream>, line: &str) -> Value {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .expect("sending a request");
    read_response(reader)
}

#[track_caller]
fn assert_error(response: &Value, kind: &str) {
    assert_eq!(response["type"], "error", "{response}");
    assert_eq!(response["kind"], kind, "{response}");
    assert!(
        response["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{response}"
    );
}

/// The daemon still answers the CLI.
#[track_caller]
fn assert_alive(home: &TestHome, pid: &Value) {
    let status = home.status_json();
    assert_eq!(&status["supervisor"]["pid"], pid, "the daemon was replaced");
}

#[test]
fn malformed_requests_get_an_error_and_the_connection_survives() {
    let home = running();
    let pid = home.status_json()["supervisor"]["pid"].clone();
    let (mut stream, mut reader) = connect(&home, Duration::from_secs(10));

    for (garbage, kind) in [
        ("hello", "bad_request"),
        ("{}", "bad_request"),
        (r#"{"v":1,"request":{"type":"reboot"}}"#, "bad_request"),
        (
            r#"{"v":1,"request":{"type":"ping","force":true}}"#,
            "bad_request",
        ),
        (r#"{"v":1,"request":{"type":"ping"},"x":1}"#, "bad_request"),
        (
            r#"{"v":2,"request":{"type":"ping"}}"#,
            "unsupported_version",
        ),
    ] {
        let answer = exchange(&mut stream, &mut reader, garbage);
        assert_error(&answer, kind);
    }
    // A decoding error concerns one line: the same connection still works.
    let answer = exchange(
        &mut stream,
        &mut reader,
        r#"{"v":1,"request":{"type":"ping"}}"#,
    );
    assert_eq!(answer["type"], "pong", "{answer}");
    assert_eq!(answer["pid"], pid);
    let answer = exchange(
        &mut stream,
        &mut reader,
        r#"{"v":1,"request":{"type":"status","component":null}}"#,
    );
    assert_eq!(answer["type"], "status", "{answer}");
    assert_eq!(answer["components"].as_array().map(Vec::len), Some(3));

    // A partial line then EOF: answered, then closed.
    let (mut stream, mut reader) = connect(&home, Duration::from_secs(10));
    stream
        .write_all(br#"{"v":1,"#)
        .expect("sending half a frame");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("closing our side");
    assert_error(&read_response(&mut reader), "bad_request");

    assert_alive(&home, &pid);
}

#[test]
fn requests_naming_unknown_components_are_refused() {
    let home = running();
    let pid = home.status_json()["supervisor"]["pid"].clone();
    let (mut stream, mut reader) = connect(&home, Duration::from_secs(10));
    for request in [
        r#"{"v":1,"request":{"type":"status","component":"nosuch"}}"#,
        r#"{"v":1,"request":{"type":"restart","component":"nosuch","wait_ms":1000}}"#,
        r#"{"v":1,"request":{"type":"start","components":["is","nosuch"],"wait_ms":1000}}"#,
    ] {
        let answer = exchange(&mut stream, &mut reader, request);
        assert_error(&answer, "unknown_component");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains("nosuch"), "{answer}");
    }
    // An alias is a name the daemon knows.
    let answer = exchange(
        &mut stream,
        &mut reader,
        r#"{"v":1,"request":{"type":"status","component":"image-server"}}"#,
    );
    assert_eq!(answer["type"], "status", "{answer}");
    assert_eq!(answer["components"][0]["name"], "is", "{answer}");
    assert_alive(&home, &pid);
}

#[test]
fn oversized_frame_is_refused_and_the_daemon_lives_on() {
    let home = running();
    let pid = home.status_json()["supervisor"]["pid"].clone();
    let (stream, mut reader) = connect(&home, Duration::from_secs(10));

    // 1 MiB without a newline. The daemon stops reading at 64 KiB, so our writes may fail
    // once it closes: write from another thread and ignore that.
    let mut writer = stream.try_clone().expect("cloning the stream");
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..16 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => {}
        Ok(_) => {
            let frame: Value = serde_json::from_str(&line).expect("the answer is JSON");
            assert_error(&frame["response"], "too_large");
            // Then the connection is closed: the stream has no frame boundary any more.
            let mut rest = String::new();
            match reader.read_line(&mut rest) {
                Ok(0) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                other => panic!("expected the connection to close, got {other:?} {rest:?}"),
            }
        }
        // Closing a socket with unread input resets it; that is a close too.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading the answer to an oversized frame: {e}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the refusal was slow"
    );
    sender.join().expect("the sender thread");
    drop(stream);

    assert_alive(&home, &pid);
}

#[test]
fn silent_client_is_dropped_after_the_read_deadline() {
    let home = running();
    let pid = home.status_json()["supervisor"]["pid"].clone();
    let (_stream, mut reader) = connect(&home, Duration::from_secs(20));
    let started = Instant::now();

    // While that connection hangs, others are served.
    assert_alive(&home, &pid);

    let answer = read_response(&mut reader);
    let waited = started.elapsed();
    assert_error(&answer, "timeout");
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(15),
        "answered after {waited:?}, expected about 5 s"
    );
    let mut rest = String::new();
    match reader.read_line(&mut rest) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection to close, got {other:?} {rest:?}"),
    }
    assert_alive(&home, &pid);
}

/// The mode bits of a path.
fn mode(path: &std::path::Path) -> io::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
}

#[test]
fn other_users_cannot_control_the_supervisor() {
    if !require_root("other_users_cannot_control_the_supervisor") {
        return;
    }
    let home = running();
    let status = home.wait_running(&["is", "svg", "ps"]);
    let pid = status["supervisor"]["pid"].clone();
    assert_eq!(mode(&home.socket()).expect("the socket"), 0o600);
    assert_eq!(mode(&home.path().join("run")).expect("run/"), 0o700);

    let as_nobody = |args: &[&str]| {
        let mut cmd = home.command(args);
        cmd.uid(65534).gid(65534);
        run_command(
            cmd,
            format!("(as nobody) {}", args.join(" ")),
            COMMAND_TIMEOUT,
        )
        .unwrap_or_else(|out| panic!("timed out\n{out}"))
    };

    // The file system keeps nobody out.
    let out = as_nobody(&["status"]);
    assert_eq!(out.code(), Some(4), "{out}");
    assert!(!out.stdout.contains("RUNNING"), "{out}");
    assert!(out.stderr.contains("permission denied"), "{out}");
    let out = as_nobody(&["stop"]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert_alive(&home, &pid);

    // With the walls of the file system torn down by hand, the daemon itself refuses the peer
    // (SO_PEERCRED).
    tear_down_file_system_walls(&home);
    // The daemon answers a refused peer at once, whether or not it has sent its request yet:
    // try each command a few times so that both orders of that race are seen.
    // (`refused_client_reads_the_reason_even_when_the_daemon_answered_first` pins the order.)
    for args in [&["status"][..], &["stop"][..], &["restart", "is"][..]] {
        for _ in 0..3 {
            let out = as_nobody(args);
            assert!(
                matches!(out.code(), Some(c) if c != 0 && c != 3),
                "nobody got an answer\n{out}"
            );
            assert!(!out.stdout.contains("RUNNING"), "{out}");
            assert!(
                out.stderr.contains("uid 65534"),
                "the refusal's reason does not reach the user\n{out}"
            );
        }
    }
    assert_alive(&home, &pid);
    assert_eq!(
        pids(&home.status_json()),
        pids(&status),
        "nobody's restart went through"
    );
}

/// Makes the whole home reachable through the file system, so that only the daemon's own
/// check of the peer (`SO_PEERCRED`) stands between another user and the supervisor.
fn tear_down_file_system_walls(home: &TestHome) {
    for (path, mode) in [
        (home.path().to_path_buf(), 0o755),
        (home.path().join("conf"), 0o755),
        (home.path().join("conf/imageserving.toml"), 0o644),
        (home.path().join("run"), 0o755),
        (home.socket(), 0o666),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
}

/// Runs `f` on a new thread whose own credentials are those of `nobody` (65534). The raw
/// system calls change only the calling thread, unlike libc's wrappers, which change every
/// thread of the process; the kernel records the connecting thread's credentials for
/// `SO_PEERCRED`. The thread ends with `f`, and its credentials with it.
fn on_a_nobody_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain integer system calls (and a null list for setgroups); they affect
            // only this thread's credentials.
            unsafe {
                assert_eq!(
                    libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                    0
                );
                assert_eq!(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534), 0);
            }
            assert_eq!(
                std::fs::read_to_string("/proc/thread-self/status")
                    .ok()
                    .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(String::from))
                    .map(|l| l.split_whitespace().nth(2).map(String::from)),
                Some(Some("65534".to_string())),
                "the thread did not become nobody"
            );
            f()
        })
        .join()
        .expect("the nobody thread panicked")
    })
}

/// The descriptors of this process connected to `socket`.
fn fds_connected_to(socket: &std::path::Path) -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .expect("listing /proc/self/fd")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&fd| {
            nix::sys::socket::getpeername::<nix::sys::socket::UnixAddr>(fd)
                .is_ok_and(|addr| addr.path() == Some(socket))
        })
        .collect()
}

/// Waits until the peer of `fd` has closed its socket. Not merely shut down its writing side
/// (POLLRDHUP), which tokio does first when its write half is dropped: only a full close
/// (POLLHUP, always reported, so no event is asked for) makes our next write fail.
fn wait_for_peer_close(fd: i32, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd; the descriptor stays open (its Client lives) during the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n == 1 && pfd.revents & libc::POLLHUP != 0
}

#[test]
fn refused_client_reads_the_reason_even_when_the_daemon_answered_first() {
    use imageserving::client::Client;
    use imageserving::home::Home;
    use imageserving::protocol::{ErrorKind as Kind, Request, Response};

    if !require_root("refused_client_reads_the_reason_even_when_the_daemon_answered_first") {
        return;
    }
    let home = running();
    tear_down_file_system_walls(&home);
    let socket = home.socket();
    let lib_home = Home::new(home.path()).expect("the home");

    let answer = on_a_nobody_thread(|| {
        let before = fds_connected_to(&socket);
        let mut client = Client::connect(&lib_home).expect("connecting as nobody");
        let fd = fds_connected_to(&socket)
            .into_iter()
            .find(|fd| !before.contains(fd))
            .expect("the client's descriptor");
        // The daemon refuses a foreign peer as soon as it accepts it: let it answer and close
        // before the request goes out, the order a slow client meets.
        assert!(
            wait_for_peer_close(fd, Duration::from_secs(10)),
            "the daemon did not close the refused connection"
        );
        client
            .request(&Request::Ping, Duration::from_secs(10))
            .map_err(|e| format!("{e:#}"))
    });
    match answer {
        Ok(Response::Error {
            kind: Kind::Forbidden,
            message,
        }) => assert!(message.contains("uid 65534"), "{message}"),
        Err(e) if e.contains("uid 65534") => {}
        other => panic!(
            "the client lost the daemon's reason for refusing it (the answer was sent \
             before the request and is still unread): {other:?}"
        ),
    }
}
