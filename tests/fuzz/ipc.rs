//! The control socket's framing and codec ([`imageserving::protocol`]): the frame reader against a
//! model of its line structure, the strict decoders on arbitrary and mutated frames, round trips
//! of every request and response, and the version judged before the shape.

use imageserving::protocol::{
    decode_request, decode_response, encode, read_frame, ComponentStatus, ErrorKind,
    OutgoingProcess, ProtocolError, Request, Response, State, StatusReport, SupervisorStatus,
    MAX_FRAME,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use tokio::io::BufReader;

use crate::harness::{apply_edits, block_on, byte_from, config, edits};

/// Line lengths that matter to the frame reader: short ones, and the ones around the limit.
fn line_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0..80usize,
        1 => Just(MAX_FRAME - 1),
        1 => Just(MAX_FRAME),
        1 => Just(MAX_FRAME + 1),
        1 => (MAX_FRAME - 4)..(MAX_FRAME + 4),
        1 => 1000..(2 * MAX_FRAME),
    ]
}

/// A byte stream for the frame reader: lines of chosen lengths (random bytes, newlines included
/// when short), each followed by a newline or not, so lines near the limit also run into EOF.
fn frame_stream() -> impl Strategy<Value = Vec<u8>> {
    let line = (
        line_len(),
        any::<u8>(),
        vec(any::<u8>(), 0..80),
        any::<bool>(),
    )
        .prop_map(|(len, fill, random, newline)| {
            let mut line = if len < 80 {
                random.into_iter().take(len).collect()
            } else {
                // A long line of one byte that is not a newline, so its length is the chosen one.
                vec![if fill == b'\n' { b'x' } else { fill }; len]
            };
            if newline {
                line.push(b'\n');
            }
            line
        });
    vec(line, 0..5).prop_map(|lines| lines.concat())
}

/// Buffer capacities from one byte (a read per byte) to more than a frame.
fn capacity() -> impl Strategy<Value = usize> {
    prop_oneof![1..16usize, 16..4096usize, Just(8192), Just(MAX_FRAME + 7)]
}

/// A name as a CLI user could type it, or any string at all (JSON must escape it).
fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z][a-z0-9_-]{0,8}", 1 => any::<String>()]
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        option::of(any_name()).prop_map(|component| Request::Status { component }),
        (vec(any_name(), 0..4), any::<u64>()).prop_map(|(components, wait_ms)| Request::Start {
            components,
            wait_ms
        }),
        (any_name(), any::<u64>())
            .prop_map(|(component, wait_ms)| Request::Restart { component, wait_ms }),
        Just(Request::Shutdown),
    ]
}

fn arb_state() -> impl Strategy<Value = State> {
    select(
        &[
            State::Stopped,
            State::Starting,
            State::Running,
            State::Backoff,
            State::Stopping,
            State::Exited,
            State::Fatal,
        ][..],
    )
}

fn arb_error_kind() -> impl Strategy<Value = ErrorKind> {
    select(
        &[
            ErrorKind::BadRequest,
            ErrorKind::UnsupportedVersion,
            ErrorKind::TooLarge,
            ErrorKind::Timeout,
            ErrorKind::UnknownComponent,
            ErrorKind::Forbidden,
            ErrorKind::ShuttingDown,
            ErrorKind::BadConfig,
            ErrorKind::Internal,
        ][..],
    )
}

/// Fails to compile when a kind is added, until it is added to [`arb_error_kind`] too.
#[allow(dead_code)]
fn every_error_kind_is_drawn(kind: ErrorKind) {
    match kind {
        ErrorKind::BadRequest
        | ErrorKind::UnsupportedVersion
        | ErrorKind::TooLarge
        | ErrorKind::Timeout
        | ErrorKind::UnknownComponent
        | ErrorKind::Forbidden
        | ErrorKind::ShuttingDown
        | ErrorKind::BadConfig
        | ErrorKind::Internal => {}
    }
}

fn arb_component() -> impl Strategy<Value = ComponentStatus> {
    let identity = (any_name(), arb_state(), any::<String>(), any::<u64>());
    let process = (
        option::of(any::<u32>()),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        any::<u32>(),
        any::<String>(),
    );
    let outcome = (
        option::of(any::<String>()),
        option::of(any::<u64>()),
        option::of(any::<String>()),
        vec(any_name(), 0..3),
    );
    let policy = (
        any_name(),
        any::<bool>(),
        option::of(any::<u64>()),
        any::<u64>(),
    );
    let outgoing = vec(
        (
            any::<u32>(),
            any::<u64>(),
            any_name(),
            option::of(any::<u64>()),
        )
            .prop_map(|(pid, uptime_ms, state, draining_ms)| OutgoingProcess {
                pid,
                uptime_ms,
                state,
                draining_ms,
            }),
        0..3,
    );
    (identity, process, outcome, policy, outgoing).prop_map(
        |(
            (name, state, since, since_unix_ms),
            (pid, uptime_ms, memory_bytes, restarts, info),
            (last_exit, next_retry_unix_ms, fatal_reason, depends_on),
            (restart, critical, memory_limit_bytes, log_dropped_bytes),
            outgoing,
        )| ComponentStatus {
            name,
            state,
            since,
            since_unix_ms,
            pid,
            uptime_ms,
            memory_bytes,
            restarts,
            info,
            last_exit,
            next_retry_unix_ms,
            fatal_reason,
            depends_on,
            restart,
            critical,
            memory_limit_bytes,
            log_dropped_bytes,
            outgoing,
        },
    )
}

fn arb_report() -> impl Strategy<Value = StatusReport> {
    let supervisor = (
        any::<u32>(),
        any_name(),
        any::<String>(),
        any::<u64>(),
        option::of(any::<u64>()),
        any_name(),
        any::<u32>(),
        option::of(any::<String>()),
    )
        .prop_map(
            |(
                pid,
                version,
                started_at,
                uptime_ms,
                memory_bytes,
                strategy,
                group_restarts,
                escalation,
            )| SupervisorStatus {
                pid,
                version,
                started_at,
                uptime_ms,
                memory_bytes,
                strategy,
                group_restarts,
                escalation,
            },
        );
    (any::<String>(), supervisor, vec(arb_component(), 0..3)).prop_map(
        |(home, supervisor, components)| StatusReport {
            home,
            supervisor,
            components,
        },
    )
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u32>(), any_name(), any::<u32>()).prop_map(|(pid, version, protocol)| {
            Response::Pong {
                pid,
                version,
                protocol,
            }
        }),
        arb_report().prop_map(Response::Status),
        (vec(any_name(), 0..3), arb_report()).prop_map(|(already_running, report)| {
            Response::Started {
                already_running,
                report,
            }
        }),
        arb_report().prop_map(|report| Response::Restarted {
            report,
            handover_failed: None
        }),
        arb_report().prop_map(|report| Response::ShuttingDown { report }),
        (arb_error_kind(), any::<String>())
            .prop_map(|(kind, message)| Response::Error { kind, message }),
    ]
}

/// What JSON is made of, for mutating frames.
const JSON_BYTES: &[u8] = b"{}[]\":,\\ 0123456789-+.eEtrufalsn\n\t\x00\x7f\xc3\xa9\xff";

/// The reader's model: what `read_frame` must do with `rest` (the unread input).
#[derive(Debug, PartialEq)]
enum Expected {
    Eof,
    Frame(usize),
    TooLarge,
    Truncated(usize),
}

fn expected(rest: &[u8]) -> Expected {
    let newline = rest.iter().position(|&b| b == b'\n');
    let line = newline.unwrap_or(rest.len());
    if line > MAX_FRAME {
        Expected::TooLarge
    } else if newline.is_some() {
        Expected::Frame(line)
    } else if rest.is_empty() {
        Expected::Eof
    } else {
        Expected::Truncated(line)
    }
}

/// Reads frames until EOF or an error, checking each step against [`expected`].
fn check_frame_reader(input: &[u8], cap: usize) -> Result<(), TestCaseError> {
    block_on(async {
        let mut reader = BufReader::with_capacity(cap, input);
        let mut rest = input;
        loop {
            let got = read_frame(&mut reader).await;
            match (expected(rest), got) {
                (Expected::Eof, Ok(None)) => return Ok(()),
                (Expected::Frame(len), Ok(Some(frame))) => {
                    prop_assert!(frame.len() <= MAX_FRAME);
                    prop_assert_eq!(&frame[..], &rest[..len]);
                    rest = &rest[len + 1..];
                }
                (Expected::TooLarge, Err(e @ ProtocolError::TooLarge { limit })) => {
                    prop_assert_eq!(limit, MAX_FRAME);
                    prop_assert!(e.is_fatal_to_connection());
                    prop_assert_eq!(e.kind(), ErrorKind::TooLarge);
                    return Ok(());
                }
                (Expected::Truncated(len), Err(e @ ProtocolError::Truncated { received })) => {
                    prop_assert_eq!(received, len);
                    prop_assert!(e.is_fatal_to_connection());
                    return Ok(());
                }
                (want, got) => {
                    let got = got.map(|f| f.map(|f| f.len()));
                    prop_assert!(false, "expected {:?}, got {:?}", want, got);
                }
            }
        }
    })
}

/// What a decoding error must be: about one line, so the connection stays usable, and of a kind
/// the client can tell apart.
fn check_decode_error(e: &ProtocolError) -> Result<(), TestCaseError> {
    prop_assert!(!e.is_fatal_to_connection(), "{e}");
    prop_assert!(
        matches!(
            e.kind(),
            ErrorKind::BadRequest | ErrorKind::UnsupportedVersion
        ),
        "{e}"
    );
    Ok(())
}

/// A frame without its newline, as `read_frame` hands it over.
fn frame_of<T: imageserving::protocol::Message>(msg: &T) -> Vec<u8> {
    let mut bytes = encode(msg);
    assert_eq!(bytes.pop(), Some(b'\n'));
    bytes
}

proptest! {
    #![proptest_config(config(1024))]

    /// The reader never returns more than `MAX_FRAME` bytes, and does exactly what the line
    /// structure of its input says, whatever the buffer size.
    #[test]
    fn frame_reader_follows_the_line_model(input in frame_stream(), cap in capacity()) {
        check_frame_reader(&input, cap)?;
    }

    /// Arbitrary bytes, one frame's worth.
    #[test]
    fn frame_reader_survives_arbitrary_bytes(input in vec(any::<u8>(), 0..512), cap in capacity()) {
        check_frame_reader(&input, cap)?;
    }

    #[test]
    fn decoders_survive_arbitrary_bytes(frame in vec(any::<u8>(), 0..256)) {
        if let Err(e) = decode_request(&frame) {
            check_decode_error(&e)?;
        }
        if let Err(e) = decode_response(&frame) {
            check_decode_error(&e)?;
        }
    }

    /// Several requests on one connection come back one by one, then EOF.
    #[test]
    fn requests_round_trip_through_the_reader(
        requests in vec(arb_request(), 1..5),
        cap in capacity(),
    ) {
        let stream: Vec<u8> = requests.iter().flat_map(encode).collect();
        let frames = block_on(async {
            let mut reader = BufReader::with_capacity(cap, &stream[..]);
            let mut frames = Vec::new();
            while let Some(frame) = read_frame(&mut reader).await.map_err(|e| e.to_string())? {
                frames.push(frame);
            }
            Ok::<_, String>(frames)
        });
        let frames = frames.map_err(TestCaseError::fail)?;
        prop_assert_eq!(frames.len(), requests.len());
        for (frame, request) in frames.iter().zip(&requests) {
            prop_assert_eq!(&decode_request(frame).map_err(|e| TestCaseError::fail(e.to_string()))?, request);
        }
    }

    #[test]
    fn responses_round_trip_through_the_reader(response in arb_response(), cap in capacity()) {
        let bytes = encode(&response);
        prop_assume!(bytes.len() <= MAX_FRAME);
        let frame = block_on(async {
            read_frame(&mut BufReader::with_capacity(cap, &bytes[..])).await
        });
        let frame = frame.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let frame = frame.ok_or_else(|| TestCaseError::fail("no frame"))?;
        prop_assert_eq!(decode_response(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?, response);
    }

    /// A damaged request is refused as one bad line, or decodes to something that encodes and
    /// decodes to itself (the strict decoder accepts nothing it could not have produced).
    #[test]
    fn mutated_requests_decode_or_are_refused_cleanly(
        request in arb_request(),
        edits in edits(byte_from(JSON_BYTES), 6),
    ) {
        let mut frame = frame_of(&request);
        apply_edits(&mut frame, &edits);
        match decode_request(&frame) {
            Ok(decoded) => {
                let again = decode_request(&frame_of(&decoded))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(again, decoded);
            }
            Err(e) => check_decode_error(&e)?,
        }
    }

    #[test]
    fn mutated_responses_decode_or_are_refused_cleanly(
        response in arb_response(),
        edits in edits(byte_from(JSON_BYTES), 6),
    ) {
        let mut frame = frame_of(&response);
        apply_edits(&mut frame, &edits);
        match decode_response(&frame) {
            Ok(decoded) => {
                let again = decode_response(&frame_of(&decoded))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(again, decoded);
            }
            Err(e) => check_decode_error(&e)?,
        }
    }

    /// The version is judged first: any other `v` is `unsupported_version` naming it, one that
    /// is not a `u32` is a bad request, and only 1 goes on to the request itself.
    #[test]
    fn the_version_is_judged_before_the_shape(v in prop_oneof![Just(1u64), any::<u64>()], request in arb_request()) {
        let frame = frame_of(&request);
        let body = &frame[b"{\"v\":1".len()..];
        let frame = [format!("{{\"v\":{v}").as_bytes(), body].concat();
        match (u32::try_from(v), decode_request(&frame)) {
            (Ok(1), Ok(decoded)) => prop_assert_eq!(decoded, request),
            (Ok(other), Err(e)) if other != 1 => {
                prop_assert_eq!(e.kind(), ErrorKind::UnsupportedVersion);
                prop_assert!(e.to_string().contains(&format!("version {other}")), "{}", e);
            }
            (Err(_), Err(e)) => prop_assert_eq!(e.kind(), ErrorKind::BadRequest),
            (_, got) => prop_assert!(false, "v = {}: {:?}", v, got.map_err(|e| e.to_string())),
        }
    }
}
