//! Property-based fuzzing, on the stable toolchain, of every parser that reads input from outside
//! the process: the control socket's framing and codec ([`imageserving::protocol`]), the
//! configuration file ([`imageserving::config::parse`]), the image URL
//! ([`imageserving::imaging::query::parse`]), source image headers
//! ([`imageserving::imaging::pipeline::probe`]) and catalog files
//! ([`imageserving::imaging::catalog::load`]).
//!
//! Each parser gets two kinds of input: arbitrary bytes or strings, and *structured* input, i.e.
//! valid input built from the grammar's pieces and then mutated by inserting, deleting,
//! replacing and duplicating characters taken from a pool of the grammar's delimiters. The
//! second kind reaches far deeper than random bytes, which a parser rejects on the first
//! character. Every property asserts more than "no panic": what an answer must satisfy when the
//! parser accepts, and what its error must say when it refuses.
//!
//! Each property runs a bounded number of cases so that `cargo test` stays fast; the environment
//! variable `PROPTEST_CASES` overrides them all for a longer run (see `fuzz/README.md`). Failures
//! are not persisted to files: a failing input found once is added below as a named regression
//! test instead, where it documents itself.

use std::future::Future;
use std::io::Cursor;
use std::path::{Component, Path};
use std::sync::OnceLock;

use imageserving::config::{self, ConfigError, EMBEDDED_ORIGIN};
use imageserving::home::Home;
use imageserving::imaging::catalog;
use imageserving::imaging::pipeline::{self, SourceFormat};
use imageserving::imaging::query;
use imageserving::imaging::request::{Crop, ImageRequest};
use imageserving::protocol::{
    decode_request, decode_response, encode, read_frame, ComponentStatus, ErrorKind, ProtocolError,
    Request, Response, State, StatusReport, SupervisorStatus, MAX_FRAME,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::TestCaseError;
use tokio::io::BufReader;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// `cases` per property, unless `PROPTEST_CASES` asks for another number. No failure file is
/// written: regressions live in this file as named tests.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs a future that never waits for I/O (a reader over a byte slice) to completion.
fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds without I/O or timers")
        .block_on(future)
}

/// One edit of a mutation. Positions are [`Index`]es so that one edit fits an input of any length.
#[derive(Clone, Debug)]
enum Edit<T> {
    Insert(Index, T),
    Delete(Index),
    Replace(Index, T),
    /// Repeats a short run of the input in place: duplicated keys, `..`, `%%`, `&&`.
    Duplicate(Index, usize),
}

fn edits<T: Clone + std::fmt::Debug + 'static>(
    unit: impl Strategy<Value = T> + Clone + 'static,
    max: usize,
) -> impl Strategy<Value = Vec<Edit<T>>> {
    let edit = prop_oneof![
        3 => (any::<Index>(), unit.clone()).prop_map(|(at, u)| Edit::Insert(at, u)),
        2 => any::<Index>().prop_map(Edit::Delete),
        3 => (any::<Index>(), unit).prop_map(|(at, u)| Edit::Replace(at, u)),
        1 => (any::<Index>(), 1..8usize).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ];
    vec(edit, 0..=max)
}

fn apply_edits<T: Clone>(input: &mut Vec<T>, edits: &[Edit<T>]) {
    for edit in edits {
        match edit {
            Edit::Insert(at, u) => {
                let at = at.index(input.len() + 1);
                input.insert(at, u.clone());
            }
            Edit::Delete(at) if !input.is_empty() => {
                let at = at.index(input.len());
                input.remove(at);
            }
            Edit::Replace(at, u) if !input.is_empty() => {
                let at = at.index(input.len());
                input[at] = u.clone();
            }
            Edit::Duplicate(at, n) if !input.is_empty() => {
                let at = at.index(input.len());
                let end = (at + n).min(input.len());
                let run = input[at..end].to_vec();
                input.splice(end..end, run);
            }
            _ => {}
        }
    }
}

/// `text` after `edits`, character by character.
fn mutate_str(text: &str, edits: &[Edit<char>]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    apply_edits(&mut chars, edits);
    chars.into_iter().collect()
}

/// A character for a mutation: mostly from `pool` (the grammar's delimiters), sometimes any.
fn char_from(pool: &'static [char]) -> impl Strategy<Value = char> + Clone {
    prop_oneof![4 => select(pool), 1 => any::<char>()]
}

/// A byte for a mutation: mostly from `pool`, sometimes any.
fn byte_from(pool: &'static [u8]) -> impl Strategy<Value = u8> + Clone {
    prop_oneof![4 => select(pool), 1 => any::<u8>()]
}

// ---------------------------------------------------------------------------------------------
// IPC: framing and codec
// ---------------------------------------------------------------------------------------------

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
            ErrorKind::Internal,
        ][..],
    )
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
    (identity, process, outcome, policy).prop_map(
        |(
            (name, state, since, since_unix_ms),
            (pid, uptime_ms, memory_bytes, restarts, info),
            (last_exit, next_retry_unix_ms, fatal_reason, depends_on),
            (restart, critical, memory_limit_bytes, log_dropped_bytes),
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
        arb_report().prop_map(|report| Response::Restarted { report }),
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

// ---------------------------------------------------------------------------------------------
// Image URLs
// ---------------------------------------------------------------------------------------------

/// Elements of an object path, raw (percent-encoded), that the parser accepts.
const GOOD_ELEMENTS: &[&str] = &[
    "a",
    "img",
    "photo.jpg",
    "default",
    "my catalog",
    "x+y",
    "caf%C3%A9",
    "%e2%82%ac",
    "~user",
    "...",
    ".hidden",
    "%2e%2e%2e",
    "%25",
    "%20",
];

/// Elements it refuses: every spelling of `.`, `..`, a separator, a control character and a bad
/// escape.
const BAD_ELEMENTS: &[&str] = &[
    ".",
    "..",
    "%2e",
    "%2E%2e",
    ".%2e",
    "%2e.",
    "%2e%2e%2f",
    "a%2Fb",
    "a%2fb",
    "%5c",
    "a\\b",
    "%00",
    "%0a",
    "%7f",
    "%zz",
    "%4",
    "%",
    "%%",
    "%c0%ae",
    "%c0%af",
    "%ff",
    "",
];

/// Characters a mutation of a URL inserts.
const URL_CHARS: &[char] = &[
    '&', '=', ',', '%', '.', '/', '\\', '$', '+', ' ', '0', '1', '9', '-', 'e', 'a', 'F', 'x', '2',
    'C', '\0', '\u{7f}', 'é', '\n',
];

/// Commands of the URL protocol, in several spellings, and names that are not.
const MODIFIER_NAMES: &[&str] = &[
    "req",
    "wid",
    "WID",
    "hei",
    "scl",
    "fit",
    "align",
    "bgc",
    "crop",
    "cropN",
    "cropn",
    "flip",
    "rotate",
    "extend",
    "extendN",
    "rgn",
    "rgnN",
    "rect",
    "op_sharpen",
    "op_usm",
    "resMode",
    "defaultImage",
    "defaultimage",
    "fmt",
    "Fmt",
    "qlt",
    "cache",
    "w%69d",
    "%77id",
    "layer",
    "icc",
    "size",
    "$var",
    "$",
    ".comment",
    "",
    "bogus",
    "%zz",
    "wid%3D",
];

/// Value items: numbers at and beyond every range, keywords of every command, paths.
const VALUE_ITEMS: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "0.5",
    "-0",
    "1.5",
    "100",
    "101",
    "255",
    "256",
    "360",
    "-90",
    "65535",
    "65536",
    "4294967296",
    "00001",
    "1e3",
    "1e309",
    "-1e309",
    "NaN",
    "inf",
    "-inf",
    "0x",
    "0xf80",
    "0xGG",
    "0x80",
    "f80",
    "ff8800",
    "FF880080",
    "img",
    "props",
    "imageprops",
    "exists",
    "json",
    "xml",
    "html",
    "fit",
    "crop",
    "constrain",
    "lr",
    "ud",
    "none",
    "bilin",
    "trilin",
    "jpeg",
    "png-alpha",
    "webp",
    "lossy",
    "tif",
    "lzw",
    "gray",
    "rgb",
    "avif",
    "on",
    "off",
    "validate",
    "a/b",
    "../x",
    "a/./b",
    "/abs",
    "a//b",
    "a\\b",
    "%2C",
    "%2c",
    "%00",
    "%2e%2e",
    "%zz",
    "%",
    "+",
    "",
];

/// Percent-decodes one element the way the module documentation says: `%` and two hex digits,
/// `+` stays `+`, and the result must be UTF-8.
fn model_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The object the documentation promises for a raw path, or `None` where it promises a 403.
fn model_object(raw: &str) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    let mut elements = Vec::new();
    for raw_element in raw.split('/') {
        let element = model_decode(raw_element)?;
        let bad = element
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
        if element.is_empty() || element == "." || element == ".." || bad {
            return None;
        }
        elements.push(element);
    }
    Some(elements.join("/"))
}

/// An object `is` may join to its image root: relative, plain elements only.
fn check_object(object: &str, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(!object.is_empty(), "{what}: empty object");
    for element in object.split('/') {
        prop_assert!(
            !element.is_empty() && element != "." && element != "..",
            "{what}: element {element:?} in {object:?}"
        );
        prop_assert!(
            !element.contains('\\') && !element.chars().any(char::is_control),
            "{what}: element {element:?} in {object:?}"
        );
    }
    prop_assert!(
        Path::new(object)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{what}: {object:?} is not a plain relative path"
    );
    Ok(())
}

/// Everything a parsed request promises `is` (see the table of the query module).
fn check_request(r: &ImageRequest) -> Result<(), TestCaseError> {
    check_object(&r.object, "object")?;
    if let Some(default) = &r.default_image {
        check_object(default, "defaultImage")?;
    }
    for size in [r.wid, r.hei].into_iter().flatten() {
        prop_assert!((1..=query::MAX_DIMENSION).contains(&size), "{size}");
    }
    if let Some(scl) = r.scl {
        prop_assert!(scl.is_finite() && scl > 0.0, "scl {scl}");
    }
    if let Some(rotate) = r.rotate {
        prop_assert!((0.0..360.0).contains(&rotate), "rotate {rotate}");
    }
    if let Some(align) = r.align {
        prop_assert!((-1.0..=1.0).contains(&align.h) && (-1.0..=1.0).contains(&align.v));
    }
    for crop in [r.crop, r.rgn].into_iter().flatten() {
        let (Crop::Pixels { x, y, w, h } | Crop::Normalized { x, y, w, h }) = crop;
        prop_assert!([x, y, w, h].iter().all(|v| v.is_finite()), "{crop:?}");
        prop_assert!(w > 0.0 && h > 0.0, "{crop:?}");
    }
    if let Some(e) = r.extend {
        prop_assert!([e.l, e.t, e.r, e.b].iter().all(|v| v.is_finite()), "{e:?}");
        if e.normalized {
            prop_assert!(
                [e.l, e.t, e.r, e.b].iter().all(|v| v.abs() <= 100.0),
                "{e:?}"
            );
        }
    }
    if let Some(rect) = r.rect {
        prop_assert!(rect.x <= query::MAX_DIMENSION && rect.y <= query::MAX_DIMENSION);
        prop_assert!((1..=query::MAX_DIMENSION).contains(&rect.w));
        prop_assert!((1..=query::MAX_DIMENSION).contains(&rect.h));
    }
    if let Some(usm) = r.op_usm {
        prop_assert!((0.0..=5.0).contains(&usm.amount) && (0.0..=250.0).contains(&usm.radius));
    }
    if let Some(q) = r.qlt {
        prop_assert!((1..=100).contains(&q), "qlt {q}");
    }
    // `ps` sends the request to `is` as JSON (and keys its cache by that JSON): `is` must accept
    // it and see exactly the same request.
    let back = through_json(r);
    prop_assert_eq!(&back, r, "the JSON hop to `is` changed the request");
    Ok(())
}

/// Parses and checks: an error is a 403 (or 404) with a message, a success keeps every promise.
fn check_url(
    path: &str,
    query_string: Option<&str>,
) -> Result<Option<ImageRequest>, TestCaseError> {
    match query::parse(path, query_string) {
        Ok(request) => {
            check_request(&request)?;
            Ok(Some(request))
        }
        Err(e) => {
            prop_assert!(matches!(e.status, 403 | 404), "{e}");
            prop_assert!(!e.message.is_empty());
            prop_assert!(
                !e.message.contains('\n'),
                "a message is one line: {:?}",
                e.message
            );
            Ok(None)
        }
    }
}

fn raw_path() -> impl Strategy<Value = String> {
    let element = prop_oneof![6 => select(GOOD_ELEMENTS), 1 => select(BAD_ELEMENTS)];
    (vec(element, 1..5), prop::bool::weighted(0.1)).prop_map(|(elements, leading)| {
        let path = elements.join("/");
        if leading {
            format!("/{path}")
        } else {
            path
        }
    })
}

/// A numeric item outside the fixed pool: any float or integer, as a URL would spell it.
fn number_item() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|x| x.to_string()),
        (-1000.0..1000.0f64).prop_map(|x| x.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn modifier() -> impl Strategy<Value = String> {
    let item = prop_oneof![4 => select(VALUE_ITEMS).prop_map(str::to_owned), 1 => number_item()];
    let separator = select(&[",", ",", ",", "%2C", "/"][..]);
    let value = vec((item, separator), 0..5).prop_map(|items| {
        let mut value = String::new();
        for (i, (item, separator)) in items.iter().enumerate() {
            if i > 0 {
                value.push_str(separator);
            }
            value.push_str(item);
        }
        value
    });
    (select(MODIFIER_NAMES), option::of(value)).prop_map(|(name, value)| match value {
        Some(value) => format!("{name}={value}"),
        None => name.to_owned(),
    })
}

/// A finite float as a URL spells it.
fn float_in(range: std::ops::Range<f64>) -> impl Strategy<Value = String> + Clone {
    range.prop_map(|x| x.to_string())
}

/// Four comma-separated items.
fn four(items: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = String> {
    (items.clone(), items.clone(), items.clone(), items)
        .prop_map(|(a, b, c, d)| format!("{a},{b},{c},{d}"))
}

/// A modifier with a value its command accepts (mostly: the ranges reach just past the limits).
fn valid_modifier() -> impl Strategy<Value = String> {
    let keyword = |name: &'static str, words: &'static [&'static str]| {
        select(words).prop_map(move |w| format!("{name}={w}"))
    };
    let good_path = vec(select(GOOD_ELEMENTS), 1..3).prop_map(|e| e.join("/"));
    prop_oneof![
        keyword(
            "req",
            &[
                "img",
                "props",
                "imageprops,json",
                "exists,xml",
                "PROPS,text"
            ]
        ),
        (select(&["wid", "hei"][..]), 0..=65536u32).prop_map(|(n, v)| format!("{n}={v}")),
        float_in(-0.1..100.0).prop_map(|v| format!("scl={v}")),
        keyword(
            "fit",
            &[
                "fit",
                "constrain,1",
                "crop,0",
                "wrap",
                "stretch",
                "hfit,1",
                "Vfit"
            ]
        ),
        (float_in(-1.1..1.1), float_in(-1.1..1.1)).prop_map(|(h, v)| format!("align={h},{v}")),
        prop_oneof![
            "[0-9a-fA-F]{6}|[0-9a-fA-F]{8}|0x[0-9a-f]{3}|0x[0-9a-f]{2}|[a-f]{3}",
            (0..300u32).prop_map(|g| g.to_string()),
            (0..300u32, 0..300u32, 0..300u32).prop_map(|(r, g, b)| format!("{r},{g},{b}")),
        ]
        .prop_map(|v| format!("bgc={v}")),
        (
            select(&["crop", "cropN", "rgn", "rgnN"][..]),
            four(float_in(-10.0..1000.0))
        )
            .prop_map(|(n, v)| format!("{n}={v}")),
        keyword("flip", &["lr", "ud", "lrud", "none", "LR"]),
        prop_oneof![
            any::<f64>().prop_map(|x| x.to_string()),
            float_in(-1e6..1e6)
        ]
        .prop_map(|v| format!("rotate={v}")),
        (
            select(&["extend", "extendN"][..]),
            four(float_in(-120.0..120.0))
        )
            .prop_map(|(n, v)| format!("{n}={v}")),
        four((0..=65536u32).prop_map(|v| v.to_string())).prop_map(|v| format!("rect={v}")),
        keyword("op_sharpen", &["0", "1"]),
        (float_in(0.0..5.5), float_in(0.0..260.0), 0..300u32, 0..2u32)
            .prop_map(|(a, r, t, m)| format!("op_usm={a},{r},{t},{m}")),
        keyword("resMode", &["bilin", "bicub", "sharp2", "bisharp"]),
        good_path.prop_map(|p| format!("defaultImage={p}")),
        keyword(
            "fmt",
            &[
                "jpg",
                "png",
                "png-alpha,rgb",
                "webp,rgb,lossy",
                "gif",
                "tif",
                "tiff-alpha"
            ]
        ),
        (0..=101u32).prop_map(|q| format!("qlt={q}")),
        keyword("cache", &["on", "off", "validate,update", "off,on"]),
        Just("$var=anything".to_owned()),
        Just(".a comment, with = and ,".to_owned()),
    ]
}

fn raw_query() -> impl Strategy<Value = String> {
    vec(prop_oneof![4 => valid_modifier(), 1 => modifier()], 0..6)
        .prop_map(|modifiers| modifiers.join("&"))
}

/// URLs that parse, to be mutated.
const VALID_URLS: &[(&str, &str)] = &[
    (
        "sample/photo.jpg",
        "wid=200&hei=100&fit=crop,1&fmt=png-alpha",
    ),
    ("catalog/id", "req=props,json&cache=off,on"),
    (
        "a/b/c.png",
        "crop=10,10,100,50&rotate=-30.5&flip=lr&bgc=0xf80",
    ),
    (
        "x",
        "cropN=0.1,0.1,0.5,0.5&extendN=0.1,0,0.1,0&rgn=0,0,10,10&rect=0,0,256,256",
    ),
    (
        "img%20one",
        "op_usm=1,2,3,1&resMode=bisharp&qlt=85,1&align=-1,1",
    ),
    (
        "caf%C3%A9/x.tif",
        "defaultImage=missing/other.jpg&$v=1&.note&&scl=2.5",
    ),
];

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn url_parser_survives_arbitrary_strings(path in any::<String>(), query_string in option::of(any::<String>())) {
        check_url(&path, query_string.as_deref())?;
    }

    /// Every spelling of `.`, `..`, separators and bad escapes: the parser agrees with a model of
    /// the documented rules, and what it accepts is a plain relative path.
    #[test]
    fn objects_follow_the_documented_rules(path in raw_path()) {
        let got = check_url(&path, None)?.map(|r| r.object);
        prop_assert_eq!(got, model_object(&path), "path {:?}", path);
    }

    #[test]
    fn modifiers_are_applied_or_refused_with_a_403(path in raw_path(), query_string in raw_query()) {
        check_url(&path, Some(&query_string))?;
    }

    /// Valid URLs, damaged with the characters the grammar cares about.
    #[test]
    fn mutated_urls_are_parsed_or_refused_with_a_403(
        url in select(VALID_URLS),
        path_edits in edits(char_from(URL_CHARS), 3),
        query_edits in edits(char_from(URL_CHARS), 6),
    ) {
        let path = mutate_str(url.0, &path_edits);
        let query_string = mutate_str(url.1, &query_edits);
        check_url(&path, Some(&query_string))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Component names, valid and not, bare and quoted.
const COMPONENT_NAMES: &[&str] = &[
    "ps",
    "is",
    "svg",
    "a",
    "b",
    "x-y",
    "x_y",
    "A",
    "1x",
    "-x",
    "\"q q\"",
    "\"\"",
    "\"a.b\"",
    "abcdefghijklmnopqrstuvwxyzabcdefg",
];

/// Values of every type the schema has, valid and not, at and beyond every range.
const CONFIG_VALUES: &[&str] = &[
    "\"10s\"",
    "\"0s\"",
    "\"500ms\"",
    "\"2m\"",
    "\"-1s\"",
    "\"1000000000000000000000000s\"",
    "\"584942417355y\"",
    "\"ten\"",
    "\"\"",
    "0",
    "1",
    "-1",
    "3",
    "8080",
    "65535",
    "65536",
    "99999999999999999999",
    "1.5",
    "true",
    "false",
    "[]",
    "[\"@self\", \"component\", \"ps\"]",
    "[\"sleep\", \"100\"]",
    "[\"\"]",
    "[\"is\", \"svg\"]",
    "[\"ps\"]",
    "[\"a\", \"a\"]",
    "[\"web\"]",
    "[0, 256]",
    "[-1]",
    "{ http = \"/healthz\" }",
    "{ http = \"no slash\" }",
    "{ tcp = true }",
    "{ tcp = false }",
    "{ file = \"\" }",
    "{ file = \"run/ready\" }",
    "{ http = \"/\", tcp = true }",
    "{ tcp = true, interval = \"0s\", max_failed = 0 }",
    "\"::\"",
    "\"0.0.0.0\"",
    "\"localhost\"",
    "\"not an ip\"",
    "\"SIGTERM\"",
    "\"int\"",
    "\"SIGSTOP\"",
    "\"SIGKILL\"",
    "\"NOPE\"",
    "9",
    "19",
    "2147483648",
    "\"512MiB\"",
    "\"18446744073709551615GiB\"",
    "\"1 kb\"",
    "\"x\"",
    "{ A = \"b\" }",
    "{ IMAGESERVING_HOME = \"x\" }",
    "{ IMAGESERVING_PS_ADDR = \"x\" }",
    "{ \"\" = \"x\" }",
    "{ \"A=B\" = \"x\" }",
    "{ A = \"\\u0000\" }",
    "\"one_for_all\"",
    "\"rest_for_one\"",
    "\"on-failure\"",
    "\"never\"",
    "\"/tmp\"",
    "\"../..\"",
];

const DURATIONS: &[&str] = &[
    "\"10s\"",
    "\"500ms\"",
    "\"2m\"",
    "\"1h\"",
    "\"0s\"",
    "\"-1s\"",
    "\"ten\"",
    "\"1000000000000000000000000s\"",
    "\"584942417355y\"",
];
const COUNTS: &[&str] = &["0", "1", "3", "4294967296"];
const BOOLS: &[&str] = &["true", "false"];
const SIZES: &[&str] = &[
    "\"512MiB\"",
    "\"1 kb\"",
    "1048576",
    "0",
    "-1",
    "\"18446744073709551615GiB\"",
    "\"x\"",
];
const CHECKS: &[&str] = &[
    "{ http = \"/healthz\" }",
    "{ http = \"no slash\" }",
    "{ tcp = true }",
    "{ tcp = false }",
    "{ file = \"run/ready\" }",
    "{ file = \"\" }",
    "{ http = \"/\", tcp = true }",
    "{ tcp = true, interval = \"5s\", timeout = \"1s\", max_failed = 2 }",
    "{ tcp = true, interval = \"0s\" }",
    "{ file = \"/tmp/alive\", max_failed = 0 }",
];

/// `[supervisor]` keys and the values they are mostly given.
const SUPERVISOR_KEYS: &[(&str, &[&str])] = &[
    ("start_wait", DURATIONS),
    (
        "strategy",
        &[
            "\"one_for_one\"",
            "\"ONE_FOR_ALL\"",
            "\"rest_for_one\"",
            "\"all\"",
        ],
    ),
    ("max_restarts", COUNTS),
    ("max_window", DURATIONS),
];

/// `[components.<name>]` keys and the values they are mostly given.
const COMPONENT_KEYS: &[(&str, &[&str])] = &[
    (
        "aliases",
        &[
            "[\"web\"]",
            "[\"platform-server\"]",
            "[\"ps\"]",
            "[\"A\"]",
            "[]",
            "[\"w\", \"w\"]",
        ],
    ),
    (
        "host",
        &[
            "\"::\"",
            "\"0.0.0.0\"",
            "\"localhost\"",
            "\"127.0.0.1\"",
            "\"not an ip\"",
        ],
    ),
    ("port", &["8080", "8081", "9000", "0", "65535", "65536"]),
    (
        "depends_on",
        &[
            "[\"a\"]",
            "[\"b\"]",
            "[\"ps\"]",
            "[\"is\", \"svg\"]",
            "[]",
            "[\"web\"]",
        ],
    ),
    (
        "env",
        &[
            "{ A = \"b\" }",
            "{ IMAGESERVING_HOME = \"x\" }",
            "{ IMAGESERVING_A_ADDR = \"x\" }",
            "{ \"\" = \"x\" }",
            "{ \"A=B\" = \"x\" }",
            "{ A = \"\\u0000\" }",
        ],
    ),
    ("cwd", &["\"images\"", "\"/tmp\"", "\"../..\"", "\"\""]),
    ("start_secs", DURATIONS),
    ("start_timeout", DURATIONS),
    ("stable_after", DURATIONS),
    ("backoff_initial", DURATIONS),
    ("backoff_max", DURATIONS),
    ("max_restarts", COUNTS),
    ("max_window", DURATIONS),
    (
        "stop_signal",
        &[
            "\"SIGTERM\"",
            "\"int\"",
            "\"SIGSTOP\"",
            "\"SIGKILL\"",
            "\"NOPE\"",
            "1",
            "9",
            "19",
            "31",
            "32",
            "2147483648",
            "1.5",
        ],
    ),
    ("stop_timeout", DURATIONS),
    (
        "restart",
        &[
            "\"permanent\"",
            "\"on-failure\"",
            "\"Temporary\"",
            "\"never\"",
            "\"sometimes\"",
        ],
    ),
    ("success_exit_codes", &["[0, 2]", "[]", "[256]", "[-1]"]),
    ("retry_fatal_after", DURATIONS),
    ("critical", BOOLS),
    ("memory_limit", SIZES),
    ("memory_check_interval", DURATIONS),
    ("ready", CHECKS),
    ("health", CHECKS),
    ("log_max_bytes", SIZES),
    ("log_backups", COUNTS),
    ("log_stderr", BOOLS),
    ("log_to_supervisor", BOOLS),
    ("bogus", &["1"]),
];

const COMMANDS: &[&str] = &[
    "[\"@self\", \"component\", \"ps\"]",
    "[\"sleep\", \"100\"]",
    "[\"/bin/true\"]",
    "[]",
    "[\"\"]",
    "\"sleep\"",
];

/// `key = value` lines for one table: distinct keys, each mostly with a value of its type and
/// sometimes with any value of the pool.
fn table_body(
    keys: &'static [(&'static str, &'static [&'static str])],
) -> impl Strategy<Value = String> {
    let line = (
        any::<Index>(),
        any::<Index>(),
        prop::bool::weighted(0.15),
        select(CONFIG_VALUES),
    );
    vec(line, 0..6).prop_map(move |lines| {
        let mut seen = Vec::new();
        let mut body = String::new();
        for (key, value, wild, any_value) in lines {
            let (key, values) = keys[key.index(keys.len())];
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let value = if wild {
                any_value
            } else {
                values[value.index(values.len())]
            };
            body.push_str(&format!("{key} = {value}\n"));
        }
        body
    })
}

fn component_table() -> impl Strategy<Value = String> {
    (
        prop_oneof![4 => select(&["ps", "is", "svg", "a", "b"][..]), 1 => select(COMPONENT_NAMES)],
        prop_oneof![6 => select(&COMMANDS[..3]), 1 => select(COMMANDS), 1 => Just("")],
        table_body(COMPONENT_KEYS),
    )
        .prop_map(|(name, command, body)| {
            let command = if command.is_empty() {
                String::new()
            } else {
                format!("command = {command}\n")
            };
            format!("[components.{name}]\n{command}{body}")
        })
}

/// A configuration file shaped like the schema: an optional `[supervisor]` table and a few
/// components, with keys of the schema given values mostly of their type. Many of them are
/// valid, so validation, not only TOML, gets fuzzed; the rest are refused by a specific check.
fn config_text() -> impl Strategy<Value = String> {
    (
        option::of(table_body(SUPERVISOR_KEYS)),
        vec(component_table(), 0..4),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(supervisor, components, empty_components)| {
            let mut text = String::new();
            if let Some(body) = supervisor {
                text.push_str(&format!("[supervisor]\n{body}\n"));
            }
            if empty_components {
                text.push_str("[components]\n");
            }
            text.push_str(&components.join("\n"));
            text
        })
}

/// Configurations that parse, to be mutated.
const VALID_CONFIGS: &[&str] = &[
    config::DEFAULT_CONFIG,
    "[supervisor]\nstrategy = \"one_for_all\"\n\n[components.solo]\ncommand = [\"sleep\", \"100\"]\n",
    "[components.front]\ncommand = [\"@self\", \"component\", \"ps\"]\naliases = [\"web\"]\nhost = \"0.0.0.0\"\nport = 9080\ndepends_on = [\"back\"]\nenv = { RUST_LOG = \"debug\" }\nready = { http = \"/healthz\" }\nhealth = { tcp = true, interval = \"5s\" }\nmemory_limit = \"512MiB\"\nstop_signal = \"int\"\n\n[components.back]\ncommand = [\"/bin/true\"]\nport = 9081\nrestart = \"never\"\ncritical = true\n",
];

const TOML_CHARS: &[char] = &[
    '[', ']', '{', '}', '"', '\'', '=', ',', '.', '\n', ' ', '#', '\\', '0', '9', '-', 's', 'a',
    '_', '\0', 'é',
];

fn origin() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(EMBEDDED_ORIGIN.to_owned()),
        "[a-zA-Z0-9_./ -]{1,24}\\.toml",
    ]
}

/// One home for every case: `parse` only reads its path.
fn home() -> &'static Home {
    static HOME: OnceLock<(tempfile::TempDir, Home)> = OnceLock::new();
    &HOME
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let home = Home::new(dir.path()).expect("a temporary home");
            (dir, home)
        })
        .1
}

const SELF_EXE: &str = "/opt/imageserving/bin/imageserving";

/// Parses `text`: an error names `origin` first; a configuration keeps every promise the daemon
/// relies on without checking again.
fn check_config(text: &str, origin: &str) -> Result<(), TestCaseError> {
    let config = match config::parse(text, origin, home(), &config::SelfProgram::new(SELF_EXE)) {
        Ok(config) => config,
        Err(e) => {
            prop_assert!(
                matches!(e, ConfigError::Syntax { .. } | ConfigError::Invalid { .. }),
                "{e}"
            );
            let message = e.to_string();
            prop_assert!(
                message.starts_with(&format!("{origin}: ")),
                "the error does not name {:?} first: {}",
                origin,
                message
            );
            return Ok(());
        }
    };
    prop_assert!(config.source.is_none());
    prop_assert!(!config.start_wait.is_zero());
    let components = &config.tree.components;
    prop_assert!(!components.is_empty());
    let names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
    for c in components {
        prop_assert!(
            imageserving_actors::spec::valid_component_name(&c.name),
            "{}",
            c.name
        );
        prop_assert_eq!(names.iter().filter(|n| **n == c.name).count(), 1);
        prop_assert!(c.command.first().is_some_and(|p| !p.is_empty()));
        prop_assert!(
            c.command[0] != config::SELF_COMMAND,
            "`@self` was not replaced"
        );
        prop_assert!(c.cwd.as_deref().is_some_and(Path::is_absolute));
        prop_assert!(c.policy.start_timeout >= c.policy.start_secs);
        prop_assert!(c.policy.backoff_max >= c.policy.backoff_initial);
        prop_assert!(!c.policy.max_window.is_zero());
        prop_assert!(
            (1..32).contains(&c.policy.stop_signal)
                && ![libc::SIGKILL, libc::SIGSTOP].contains(&c.policy.stop_signal),
            "stop_signal {}",
            c.policy.stop_signal
        );
        prop_assert!(c.env.iter().any(|(k, _)| k == config::HOME_ENV));
        prop_assert_eq!(config.resolve(&c.name), Some(c.name.as_str()));
        for d in &c.depends_on {
            prop_assert!(names.contains(&d.as_str()), "unknown dependency {}", d);
        }
    }
    let ports: Vec<u16> = components
        .iter()
        .filter_map(|c| c.probe)
        .map(|a| a.port())
        .collect();
    for p in &ports {
        prop_assert!(*p != 0);
        prop_assert_eq!(ports.iter().filter(|q| *q == p).count(), 1, "port {}", p);
    }
    for (alias, component) in &config.aliases {
        prop_assert_eq!(config.resolve(alias), Some(component.as_str()));
    }
    // The start order is every component once, each after its dependencies.
    let order = config.component_names();
    prop_assert_eq!(order.len(), names.len());
    for (i, name) in order.iter().enumerate() {
        let spec = config
            .component(name)
            .ok_or_else(|| TestCaseError::fail("unknown name"))?;
        for d in &spec.depends_on {
            prop_assert!(
                order[..i].contains(&d.as_str()),
                "{} starts before {}",
                name,
                d
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn config_parser_survives_arbitrary_text(text in any::<String>(), origin in origin()) {
        check_config(&text, &origin)?;
    }

    #[test]
    fn config_from_schema_pieces_parses_or_names_the_origin(text in config_text(), origin in origin()) {
        check_config(&text, &origin)?;
    }

    #[test]
    fn mutated_configs_parse_or_name_the_origin(
        base in select(VALID_CONFIGS),
        edits in edits(char_from(TOML_CHARS), 6),
        origin in origin(),
    ) {
        check_config(&mutate_str(base, &edits), &origin)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Source image headers
// ---------------------------------------------------------------------------------------------

/// One small image in every raster format the server reads, encoded once.
fn sample_images() -> &'static [Vec<u8>] {
    static IMAGES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let rgba = image::RgbaImage::from_pixel(9, 7, image::Rgba([1, 2, 3, 128]));
        let rgb = image::DynamicImage::ImageRgba8(rgba.clone()).to_rgb8();
        let mut images = Vec::new();
        for format in [
            image::ImageFormat::Png,
            image::ImageFormat::Gif,
            image::ImageFormat::Tiff,
            image::ImageFormat::WebP,
        ] {
            let mut out = Cursor::new(Vec::new());
            rgba.write_to(&mut out, format).expect("encodes");
            images.push(out.into_inner());
        }
        let mut out = Cursor::new(Vec::new());
        rgb.write_to(&mut out, image::ImageFormat::Jpeg)
            .expect("encodes");
        images.push(out.into_inner());
        images.push(b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec());
        images
    })
}

/// Magic numbers, so that random tails reach every header parser.
const MAGICS: &[&[u8]] = &[
    b"\xFF\xD8\xFF",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"RIFF\0\0\0\0WEBPVP8 ",
    b"RIFF\0\0\0\0WEBPVP8L",
    b"RIFF\0\0\0\0WEBPVP8X",
    b"II*\0",
    b"MM\0*",
    b"<svg",
    b"\xEF\xBB\xBF <svg>",
];

fn check_probe(bytes: &[u8]) -> Result<(), TestCaseError> {
    match pipeline::probe(bytes, "fuzz/object") {
        Ok(info) if info.format == SourceFormat::Svg => {
            prop_assert_eq!((info.width, info.height), (0, 0));
        }
        Ok(info) => prop_assert!(info.width > 0 && info.height > 0, "{info:?}"),
        Err(e) => prop_assert_eq!(e.status, 403, "{}", e),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn probe_survives_magic_and_arbitrary_tail(magic in select(MAGICS), tail in vec(any::<u8>(), 0..96)) {
        check_probe(&[magic, &tail[..]].concat())?;
    }

    #[test]
    fn probe_survives_mutated_images(
        image in any::<Index>(),
        edits in edits(any::<u8>(), 8),
        cut in option::of(any::<Index>()),
    ) {
        let images = sample_images();
        let mut bytes = images[image.index(images.len())].clone();
        apply_edits(&mut bytes, &edits);
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        check_probe(&bytes)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Catalogs
// ---------------------------------------------------------------------------------------------

/// Catalog lines that are valid on their own (an attribute given twice is still refused).
const GOOD_CATALOG_LINES: &[&str] = &[
    "# comment",
    "; comment",
    "",
    "[attributes]",
    "[ids]",
    "[ IDS ]",
    "DefaultPix=0,0",
    "MaxPix=8000,8000",
    "MaxSourcePix=1000",
    "JpegQuality=85",
    "BkgColor=#FFFFFF",
    "BkgColor=0x11223344",
    "Expiration=-1",
    "Expiration=8760",
    "Expiration=1e-300",
    "ErrorDetail=1",
    "DefaultImage=",
    "DefaultImage=a/b.jpg",
    "ResMode=bisharp",
    "MaxReplyBytes=1",
    "MaxSvgPix=5",
    "photo=sample/photo.jpg",
    "a/b = c/d",
];

/// Catalog lines that are refused, at least where they stand.
const BAD_CATALOG_LINES: &[&str] = &[
    "[other]",
    "DefaultPix=100,x",
    "MaxPix=0,10",
    "MaxSourcePix=0",
    "MaxSourcePix=18446744073709551616",
    "JpegQuality=101",
    "BkgColor=ééé",
    "Expiration=8760.1",
    "Expiration=NaN",
    "DefaultImage=../x",
    "MaxSvgBytes=-1",
    "Bogus=1",
    "x=/etc/passwd",
    "x=a/../b",
    "x=a//b",
    "../x=y",
    "=nothing",
    "no equals sign",
];

/// What the catalog module promises of ids and paths: relative, `/`-separated, no `..`, `.` or
/// empty element, no NUL. (Unlike URL objects, other control characters and `\` are allowed:
/// a URL cannot name such an id, and the file system takes such a path as it is.)
fn check_catalog_path(path: &str) -> Result<(), TestCaseError> {
    prop_assert!(!path.is_empty() && !path.contains('\0'), "{:?}", path);
    prop_assert!(
        path.split('/')
            .all(|e| !e.is_empty() && e != "." && e != ".."),
        "{:?}",
        path
    );
    prop_assert!(
        Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{:?}",
        path
    );
    Ok(())
}

fn catalog_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![8 => select(GOOD_CATALOG_LINES), 1 => select(BAD_CATALOG_LINES)];
    let edit_chars = &[
        '=', '[', ']', '/', '.', ',', '\n', '#', '\u{feff}', '\r', '\0',
    ];
    (vec(line, 0..10), edits(char_from(edit_chars), 2))
        .prop_map(|(lines, edits)| mutate_str(&lines.join("\n"), &edits))
}

proptest! {
    #![proptest_config(config(512))]

    /// Catalog files on disk: every error names its file and a line that exists; every loaded
    /// catalog keeps its limits in range and its paths relative.
    #[test]
    fn catalogs_load_or_name_file_and_line(default in catalog_text(), named in catalog_text()) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        std::fs::write(dir.path().join("default.ini"), &default).map_err(|e| TestCaseError::fail(e.to_string()))?;
        std::fs::write(dir.path().join("shop.ini"), &named).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match catalog::load(dir.path()) {
            Ok(catalogs) => {
                prop_assert_eq!(catalogs.len(), 2);
                for c in [&catalogs.default, &catalogs.named["shop"]] {
                    let a = &c.attributes;
                    prop_assert!((1..=100).contains(&a.jpeg_quality));
                    prop_assert!(a.max_pix.0 > 0 && a.max_pix.1 > 0);
                    prop_assert!(a.expiration <= catalog::NEVER_EXPIRES);
                    if let Some(d) = &a.default_image {
                        check_catalog_path(d)?;
                    }
                    for (id, path) in &c.ids {
                        check_catalog_path(id)?;
                        check_catalog_path(path)?;
                    }
                }
            }
            Err(catalog::CatalogError::Parse { path, line, message }) => {
                let text = if path.ends_with("default.ini") { &default } else { &named };
                prop_assert!(path.ends_with("default.ini") || path.ends_with("shop.ini"));
                prop_assert!(line >= 1 && line <= text.lines().count(), "line {} of {:?}: {}", line, text, message);
            }
            Err(other) => prop_assert!(false, "{}", other),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Known bugs, kept as failing tests until fixed
// ---------------------------------------------------------------------------------------------

/// The request `ps` parsed, after the JSON hop to `is` (`POST /render`).
fn through_json(r: &ImageRequest) -> ImageRequest {
    let json = serde_json::to_vec(r).expect("a request serializes");
    serde_json::from_slice(&json).expect("is accepts what ps sends")
}

/// Found by `modifiers_are_applied_or_refused_with_a_403`: serde_json, built without its
/// `float_roundtrip` feature, parsed some floats one ULP away from what it printed, so `is`
/// rendered a request that differed from the one `ps` parsed (and keyed its cache by). Fixed by
/// enabling that feature.
#[test]
fn regression_extend_float_survives_the_json_hop() {
    let request = query::parse("a", Some("extend=0,0,0,106.15793854682701")).unwrap();
    assert_eq!(through_json(&request), request);
    let request = query::parse("a", Some("rotate=113943.55032409201")).unwrap();
    assert_eq!(through_json(&request), request);
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn image_requests_cross_the_json_hop_exactly(path in raw_path(), query_string in raw_query()) {
        if let Ok(request) = query::parse(&path, Some(&query_string)) {
            prop_assert_eq!(through_json(&request), request);
        }
    }
}
