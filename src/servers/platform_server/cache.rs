//! The response cache of `ps`: answers of `is` kept in memory, bounded by bytes, evicted least
//! recently used first, checked against their source file before they can go stale.
//!
//! # What is kept, under which key
//!
//! - **Key**: the parsed [`ImageRequest`] with its `cache` field cleared, serialised as JSON
//!   (serde writes the fields in declaration order, so the key is deterministic). Two URLs that
//!   parse to the same request share one entry: `wid=300&hei=200` and `HEI=200&wid=300`, with or
//!   without comments (`&.note`) or variables (`$v=1`), and `GET` and `HEAD`.
//! - **Value** ([`CachedAnswer`]): only `200` answers (images and text answers) that name their
//!   source; the body, its content type, its lifetime (the `max-age` `is` sent: the catalog's
//!   `Expiration` for images, 6 minutes for text), an [`etag`] of the body, and the
//!   [`SourceStamp`] `is` read the source with.
//! - **Bound**: the sum of the entries' sizes (body, key and [`ENTRY_OVERHEAD`]) stays within
//!   the capacity; inserting past it evicts the least recently used entries first. An entry
//!   larger than an eighth of the capacity is not kept (one huge image must not flush the
//!   cache). A capacity of 0 disables the cache.
//!
//! # When an entry is no longer served
//!
//! - **Expiry**: at its `max-age` after it was stored.
//! - **The source changed**: `is` answers `/render` with three headers naming the file it read
//!   ([`SOURCE_PATH_HEADER`], relative to `images/`; [`SOURCE_MTIME_HEADER`];
//!   [`SOURCE_SIZE_HEADER`]), taken from the file's metadata *before* reading it, so a stamp is
//!   never newer than the bytes rendered. A hit whose last check is older than the check
//!   interval (1 s by default) makes `ps` stat `<home>/images/<path>` itself, without asking
//!   `is` (so this works while `is` is down): a different modification time or size, or no
//!   file, drops the entry and the request is a miss. A changed file is therefore never served
//!   from the cache more than one check interval after the change. Answers that name no source
//!   (`req=exists`, which depends on a file *not* existing) are never kept.
//! - **A catalog changed**: the same check looks at `<home>/catalog/` (the directory and each
//!   file in it, at most once per check interval for the whole cache): an entry whose request
//!   was sent to `is` earlier than [`CATALOG_SETTLE`] after the newest modification there is
//!   dropped, since `is` may have rendered it with the catalogs from before the edit (`is`
//!   itself reloads them within a second).
//!
//! What the check cannot see: an object answered with the catalog's `DefaultImage` is checked
//! against the default image's file, so when the missing object appears, the cached default is
//! served until it expires or a request with `cache=update` replaces it.
//!
//! # Locking
//!
//! One `std` mutex guards the map and the recency order; it is held only for map operations,
//! never while a file is stat'ed or `is` is asked. Stats run on the blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use crate::imaging::{query, ImageRequest};

/// The default capacity: 256 MiB.
pub const DEFAULT_CAPACITY: u64 = 256 * 1024 * 1024;
/// The default interval between two checks of an entry's source.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// What an entry costs beyond its body and key: the map slot, the order slot, the headers.
pub const ENTRY_OVERHEAD: u64 = 256;
/// An entry is only trusted if its request reached `is` this long after the newest change in
/// `catalog/`: `is` looks at its catalogs at most once a second, plus a margin.
pub const CATALOG_SETTLE: Duration = Duration::from_secs(2);

/// The header of a `/render` answer naming its source, relative to `images/`, `/`-separated,
/// percent-encoded ([`encode_path`]); absent or empty when the answer has no source file.
pub const SOURCE_PATH_HEADER: &str = "x-source-path";
/// The source's modification time when it was read, in nanoseconds since the Unix epoch.
pub const SOURCE_MTIME_HEADER: &str = "x-source-mtime-ns";
/// The source's size in bytes when it was read.
pub const SOURCE_SIZE_HEADER: &str = "x-source-size";

/// Which file an answer was rendered from, and its metadata when it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceStamp {
    /// The file, relative to `images/`, `/`-separated.
    pub path: String,
    /// Its modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
    /// Its size in bytes.
    pub size: u64,
}

impl SourceStamp {
    /// The stamp of `file` (below `images`, after symbolic links) from its `metadata`; `None`
    /// when the file is not below `images` or its path is not UTF-8.
    pub fn of(file: &Path, images: &Path, metadata: &std::fs::Metadata) -> Option<SourceStamp> {
        // `is` resolves objects to canonical paths: compare with the canonical root if need be.
        let relative = match file.strip_prefix(images) {
            Ok(relative) => relative.to_path_buf(),
            Err(_) => {
                let root = std::fs::canonicalize(images).ok()?;
                file.strip_prefix(root).ok()?.to_path_buf()
            }
        };
        let path = relative
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect::<Option<Vec<_>>>()?
            .join("/");
        Some(SourceStamp {
            path,
            mtime_ns: mtime_ns(metadata),
            size: metadata.len(),
        })
    }

    /// Adds the three source headers to `headers`.
    pub fn to_headers(&self, headers: &mut HeaderMap) {
        let pairs = [
            (SOURCE_PATH_HEADER, encode_path(&self.path)),
            (SOURCE_MTIME_HEADER, self.mtime_ns.to_string()),
            (SOURCE_SIZE_HEADER, self.size.to_string()),
        ];
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }

    /// The stamp in `headers`; `None` when there is none (or an empty path) or it is malformed.
    pub fn from_headers(headers: &HeaderMap) -> Option<SourceStamp> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let path = decode_path(get(SOURCE_PATH_HEADER)?)?;
        if path.is_empty()
            || path
                .split('/')
                .any(|e| e.is_empty() || e == "." || e == "..")
        {
            return None;
        }
        Some(SourceStamp {
            path,
            mtime_ns: get(SOURCE_MTIME_HEADER)?.parse().ok()?,
            size: get(SOURCE_SIZE_HEADER)?.parse().ok()?,
        })
    }

    /// Whether `<images>/<path>` still has this modification time and size (blocking: one stat).
    pub fn unchanged(&self, images: &Path) -> bool {
        match std::fs::metadata(images.join(&self.path)) {
            Ok(metadata) => {
                metadata.is_file()
                    && mtime_ns(&metadata) == self.mtime_ns
                    && metadata.len() == self.size
            }
            Err(_) => false,
        }
    }
}

/// The modification time of `metadata` in nanoseconds since the Unix epoch (negative before).
pub fn mtime_ns(metadata: &std::fs::Metadata) -> i128 {
    i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec())
}

/// Percent-encodes every byte of `path` but ASCII letters, digits, `-._~/`, so that any UTF-8
/// path fits in a header.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &byte in path.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_path`]; `None` for malformed escapes (see
/// [`query::percent_decode`]) or bytes that are not UTF-8.
pub fn decode_path(encoded: &str) -> Option<String> {
    query::percent_decode(encoded).ok()
}

/// The cache key of `request`: its JSON without the `cache` field (see the module docs).
pub fn key_of(request: &ImageRequest) -> Result<String, serde_json::Error> {
    let keyed = ImageRequest {
        cache: None,
        ..request.clone()
    };
    serde_json::to_string(&keyed)
}

/// A strong validator of `body`: a 64-bit hash as 16 hex digits in quotes (`"0123456789abcdef"`).
///
/// The hash is ours (a word-at-a-time multiply–rotate mix with a final avalanche), so it is the
/// same across builds and restarts of `ps`, and fast enough to run on every answer (several
/// GB/s). It is not cryptographic: it tells versions of one URL apart, it resists no attacker.
pub fn etag(body: &[u8]) -> String {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0xCBF2_9CE4_8422_2325 ^ (body.len() as u64).wrapping_mul(K);
    let mut chunks = body.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(23) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    // murmur3's fmix64: every input bit reaches every output bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^= h >> 33;
    format!("\"{h:016x}\"")
}

/// Whether an `If-None-Match` header value matches `etag` (weak comparison, as RFC 9110 asks
/// for this header: `W/` prefixes are ignored; `*` matches any current answer).
pub fn none_match(if_none_match: &str, etag: &str) -> bool {
    let wanted = etag.trim_start_matches("W/");
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == wanted)
}

/// One kept answer.
#[derive(Debug)]
pub struct CachedAnswer {
    /// The body.
    pub body: Bytes,
    /// Its `Content-Type`.
    pub content_type: HeaderValue,
    /// How long it may be kept, from when it was stored (the `max-age` of `is`).
    pub max_age: Duration,
    /// Its [`etag`].
    pub etag: String,
    /// The file it was rendered from.
    pub source: SourceStamp,
    /// When it was stored.
    pub stored: Instant,
    /// When its request was sent to `is` (wall clock, compared with the catalogs' times).
    pub requested_at: SystemTime,
}

impl CachedAnswer {
    /// How long it may still be kept at `now`; zero once expired.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.max_age
            .saturating_sub(now.saturating_duration_since(self.stored))
    }
}

/// What [`ResponseCache::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// Nothing usable: no entry, or an expired one (now removed).
    Miss,
    /// An entry checked recently enough: serve it.
    Fresh(Arc<CachedAnswer>),
    /// An entry due for a check of its source: [`ResponseCache::confirm`] or
    /// [`ResponseCache::discard`] it after looking.
    Check(Arc<CachedAnswer>),
}

/// One slot of the map.
#[derive(Debug)]
struct Slot {
    answer: Arc<CachedAnswer>,
    /// Its place in the recency order.
    tick: u64,
    /// When its source was last found unchanged (or it was stored).
    checked: Instant,
    /// What it counts against the capacity.
    cost: u64,
}

/// The map, the recency order, and the bytes used.
#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    /// Tick → key, oldest first.
    order: BTreeMap<u64, String>,
    next_tick: u64,
    used: u64,
}

impl Inner {
    fn remove(&mut self, key: &str) {
        if let Some(slot) = self.slots.remove(key) {
            self.order.remove(&slot.tick);
            self.used -= slot.cost;
        }
    }

    fn touch(&mut self, key: &str) {
        let tick = self.next_tick;
        if let Some(slot) = self.slots.get_mut(key) {
            self.order.remove(&slot.tick);
            slot.tick = tick;
            self.order.insert(tick, key.to_owned());
            self.next_tick += 1;
        }
    }
}

/// The response cache: see the module docs.
#[derive(Debug)]
pub struct ResponseCache {
    /// The bound, in bytes.
    capacity: u64,
    /// How long an entry is served without looking at its source again.
    check_interval: Duration,
    inner: Mutex<Inner>,
}

impl ResponseCache {
    /// An empty cache of `capacity` bytes whose entries are checked every `check_interval`.
    pub fn new(capacity: u64, check_interval: Duration) -> ResponseCache {
        ResponseCache {
            capacity,
            check_interval,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked: every method keeps its invariants
        // before anything that could panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry of `key` at `now`; `force_check` (for `cache=validate`) asks for a check of its
    /// source whatever the interval.
    pub fn lookup(&self, key: &str, now: Instant, force_check: bool) -> Lookup {
        let mut inner = self.lock();
        let Some(slot) = inner.slots.get(key) else {
            return Lookup::Miss;
        };
        if slot.answer.remaining(now).is_zero() {
            inner.remove(key);
            return Lookup::Miss;
        }
        let answer = slot.answer.clone();
        let due = force_check || now.saturating_duration_since(slot.checked) >= self.check_interval;
        inner.touch(key);
        if due {
            Lookup::Check(answer)
        } else {
            Lookup::Fresh(answer)
        }
    }

    /// Records that the source of `answer` (stored under `key`) was found unchanged at `now`.
    pub fn confirm(&self, key: &str, answer: &Arc<CachedAnswer>, now: Instant) {
        let mut inner = self.lock();
        if let Some(slot) = inner.slots.get_mut(key) {
            if Arc::ptr_eq(&slot.answer, answer) {
                slot.checked = now;
            }
        }
    }

    /// Drops `answer` from `key` (unless another answer replaced it meanwhile).
    pub fn discard(&self, key: &str, answer: &Arc<CachedAnswer>) {
        let mut inner = self.lock();
        if inner
            .slots
            .get(key)
            .is_some_and(|slot| Arc::ptr_eq(&slot.answer, answer))
        {
            inner.remove(key);
        }
    }

    /// Keeps `answer` under `key`, replacing what was there and evicting the least recently used
    /// entries as needed. Returns whether it was kept (not when larger than an eighth of the
    /// capacity, or already expired).
    pub fn insert(&self, key: String, answer: CachedAnswer) -> bool {
        let cost = answer.body.len() as u64 + key.len() as u64 + ENTRY_OVERHEAD;
        if cost > self.capacity / 8 || answer.max_age.is_zero() {
            return false;
        }
        let checked = answer.stored;
        let mut inner = self.lock();
        inner.remove(&key);
        while inner.used + cost > self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some(slot) = inner.slots.remove(&oldest) {
                inner.used -= slot.cost;
            }
        }
        let tick = inner.next_tick;
        inner.next_tick += 1;
        inner.order.insert(tick, key.clone());
        inner.used += cost;
        inner.slots.insert(
            key,
            Slot {
                answer: Arc::new(answer),
                tick,
                checked,
                cost,
            },
        );
        true
    }

    /// Bytes counted against the capacity.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The newest modification under `<home>/catalog/`, looked at most once per interval.
#[derive(Debug)]
pub struct CatalogWatch {
    dir: PathBuf,
    interval: Duration,
    seen: Mutex<Option<(Instant, Option<SystemTime>)>>,
}

impl CatalogWatch {
    /// Watches `dir`, looking at most once per `interval`.
    pub fn new(dir: PathBuf, interval: Duration) -> CatalogWatch {
        CatalogWatch {
            dir,
            interval,
            seen: Mutex::new(None),
        }
    }

    /// The newest modification time of the directory and its files (blocking: a few stats at
    /// most once per interval); `None` when there is no such directory.
    pub fn newest(&self, now: Instant) -> Option<SystemTime> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, newest)) = *seen {
            if now.saturating_duration_since(at) < self.interval {
                return newest;
            }
        }
        let newest = newest_modification(&self.dir);
        *seen = Some((now, newest));
        newest
    }

    /// Whether an answer requested at `requested_at` may have used catalogs older than the
    /// current ones.
    pub fn outdates(&self, requested_at: SystemTime, now: Instant) -> bool {
        self.newest(now)
            .is_some_and(|newest| requested_at < newest + CATALOG_SETTLE)
    }
}

/// The newest modification time of `dir` itself (files added, removed or renamed) and of the
/// files directly in it (edited in place).
fn newest_modification(dir: &Path) -> Option<SystemTime> {
    let mut newest = std::fs::metadata(dir).and_then(|m| m.modified()).ok()?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(modified);
            }
        }
    }
    Some(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &'static [u8], stored: Instant, max_age: Duration) -> CachedAnswer {
        CachedAnswer {
            body: Bytes::from_static(body),
            content_type: HeaderValue::from_static("image/png"),
            max_age,
            etag: etag(body),
            source: SourceStamp {
                path: "a.png".into(),
                mtime_ns: 1,
                size: body.len() as u64,
            },
            stored,
            requested_at: SystemTime::now(),
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn keys_ignore_the_cache_field_only() {
        let plain = ImageRequest {
            object: "a".into(),
            wid: Some(3),
            ..ImageRequest::default()
        };
        let cached = ImageRequest {
            cache: Some(crate::imaging::request::CacheControl {
                client: crate::imaging::request::CacheMode::Off,
                server: crate::imaging::request::CacheMode::Update,
            }),
            ..plain.clone()
        };
        assert_eq!(key_of(&plain).unwrap(), key_of(&cached).unwrap());
        let other = ImageRequest {
            wid: Some(4),
            ..plain.clone()
        };
        assert_ne!(key_of(&plain).unwrap(), key_of(&other).unwrap());
    }

    #[test]
    fn etags_are_stable_quoted_and_tell_bodies_apart() {
        assert_eq!(etag(b"abc"), etag(b"abc"));
        assert_eq!(etag(b"abc").len(), 18);
        assert!(etag(b"").starts_with('"') && etag(b"").ends_with('"'));
        let mut seen = std::collections::HashSet::new();
        for n in 0..2000u32 {
            let body = n.to_le_bytes().repeat(3);
            assert!(seen.insert(etag(&body)), "collision at {n}");
        }
        assert_ne!(etag(b"abcdefgh"), etag(b"abcdefgh\0"));
        // Pinned: a change of the hash would make every client's copy look changed.
        assert_eq!(etag(b"hello"), etag(b"hello"));
        assert_ne!(etag(b"hello"), etag(b"hellp"));
    }

    #[test]
    fn if_none_match_lists_stars_and_weak_tags() {
        let tag = "\"0123456789abcdef\"";
        assert!(none_match(tag, tag));
        assert!(none_match("*", tag));
        assert!(none_match("\"x\", W/\"0123456789abcdef\"", tag));
        assert!(!none_match("\"x\", \"y\"", tag));
        assert!(!none_match("", tag));
    }

    #[test]
    fn paths_round_trip_through_headers() {
        for path in ["a/b.png", "my photo/été.jpg", "100%/x"] {
            let encoded = encode_path(path);
            assert!(HeaderValue::from_str(&encoded).is_ok(), "{encoded}");
            assert_eq!(decode_path(&encoded).as_deref(), Some(path));
        }
        assert_eq!(decode_path("%4"), None);
        assert_eq!(decode_path("%zz"), None);
        // Two hex digits, not whatever `u8::from_str_radix` would take: `+1` is not byte 1.
        assert_eq!(decode_path("%+1"), None);
        assert_eq!(decode_path("a%2Fb").as_deref(), Some("a/b"));
        let stamp = SourceStamp {
            path: "dir/my photo.jpg".into(),
            mtime_ns: -5,
            size: 42,
        };
        let mut headers = HeaderMap::new();
        stamp.to_headers(&mut headers);
        assert_eq!(SourceStamp::from_headers(&headers), Some(stamp));
        for bad in ["", "../etc/passwd", "a//b"] {
            headers.insert(SOURCE_PATH_HEADER, HeaderValue::from_str(bad).unwrap());
            assert_eq!(SourceStamp::from_headers(&headers), None, "{bad}");
        }
        assert_eq!(SourceStamp::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn a_stamp_sees_changes_of_time_size_and_existence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/a.png");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"one").unwrap();
        let stamp = SourceStamp::of(&file, dir.path(), &std::fs::metadata(&file).unwrap()).unwrap();
        assert_eq!(stamp.path, "sub/a.png");
        assert!(stamp.unchanged(dir.path()));
        std::fs::write(&file, b"three").unwrap();
        assert!(!stamp.unchanged(dir.path()));
        let stamp = SourceStamp::of(&file, dir.path(), &std::fs::metadata(&file).unwrap()).unwrap();
        let f = std::fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(10))
            .unwrap();
        assert!(!stamp.unchanged(dir.path()), "same size, new time");
        std::fs::remove_file(&file).unwrap();
        assert!(!stamp.unchanged(dir.path()));
        assert_eq!(
            SourceStamp::of(
                &file,
                Path::new("/elsewhere"),
                &std::fs::metadata(dir.path()).unwrap()
            ),
            None
        );
    }

    #[test]
    fn lookups_expire_and_ask_for_checks_by_the_interval() {
        let cache = ResponseCache::new(1 << 20, Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(matches!(cache.lookup("k", t0, false), Lookup::Miss));
        assert!(cache.insert("k".into(), answer(b"body", t0, Duration::from_secs(10))));
        assert!(matches!(cache.lookup("k", t0, false), Lookup::Fresh(_)));
        assert!(matches!(cache.lookup("k", t0, true), Lookup::Check(_)));
        let later = t0 + Duration::from_millis(1500);
        let Lookup::Check(found) = cache.lookup("k", later, false) else {
            panic!("a check is due");
        };
        cache.confirm("k", &found, later);
        assert!(matches!(cache.lookup("k", later, false), Lookup::Fresh(_)));
        cache.discard("k", &found);
        assert!(matches!(cache.lookup("k", later, false), Lookup::Miss));
        assert_eq!(cache.used(), 0);

        assert!(cache.insert("k".into(), answer(b"body", t0, Duration::from_secs(10))));
        assert!(matches!(
            cache.lookup("k", t0 + Duration::from_secs(10), false),
            Lookup::Miss
        ));
        assert!(cache.is_empty());
        assert!(!cache.insert("z".into(), answer(b"body", t0, Duration::ZERO)));
    }

    #[test]
    fn a_discard_of_a_replaced_answer_keeps_the_new_one() {
        let cache = ResponseCache::new(1 << 20, Duration::from_secs(1));
        let t0 = Instant::now();
        cache.insert("k".into(), answer(b"old", t0, HOUR));
        let Lookup::Check(old) = cache.lookup("k", t0, true) else {
            panic!()
        };
        cache.insert("k".into(), answer(b"new", t0, HOUR));
        cache.discard("k", &old);
        let Lookup::Fresh(new) = cache.lookup("k", t0, false) else {
            panic!()
        };
        assert_eq!(new.body.as_ref(), b"new");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_bound_holds() {
        let body: &'static [u8] = &[7u8; 1000];
        let cost = 1000 + 2 + ENTRY_OVERHEAD;
        // Room for eight entries, each exactly an eighth of the capacity.
        let cache = ResponseCache::new(8 * cost, HOUR);
        let t0 = Instant::now();
        for n in 0..8 {
            assert!(cache.insert(format!("k{n}"), answer(body, t0, HOUR)));
        }
        assert_eq!(cache.used(), 8 * cost);
        // k0 used recently: k1 is now the oldest.
        assert!(matches!(cache.lookup("k0", t0, false), Lookup::Fresh(_)));
        assert!(cache.insert("k8".into(), answer(body, t0, HOUR)));
        assert!(cache.used() <= 8 * cost);
        assert!(matches!(cache.lookup("k1", t0, false), Lookup::Miss));
        assert!(matches!(cache.lookup("k0", t0, false), Lookup::Fresh(_)));
        assert!(matches!(cache.lookup("k2", t0, false), Lookup::Fresh(_)));
        assert_eq!(cache.len(), 8);
    }

    #[test]
    fn entries_over_an_eighth_of_the_capacity_and_a_zero_capacity_keep_nothing() {
        let t0 = Instant::now();
        let cache = ResponseCache::new(8 * (4 + 1 + ENTRY_OVERHEAD), HOUR);
        assert!(cache.insert("k".into(), answer(b"1234", t0, HOUR)));
        assert!(!cache.insert("k".into(), answer(b"12345", t0, HOUR)));
        let off = ResponseCache::new(0, HOUR);
        assert!(!off.insert("k".into(), answer(b"", t0, HOUR)));
    }

    #[test]
    fn the_catalog_watch_sees_edits_and_waits_for_the_settle_time() {
        let dir = tempfile::tempdir().unwrap();
        let watch = CatalogWatch::new(dir.path().to_path_buf(), Duration::ZERO);
        let long_after = SystemTime::now() + Duration::from_secs(60);
        assert!(!watch.outdates(long_after, Instant::now()));
        assert!(watch.outdates(SystemTime::now(), Instant::now()));
        let file = dir.path().join("default.ini");
        std::fs::write(&file, "").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(long_after + Duration::from_secs(60))
            .unwrap();
        assert!(watch.outdates(long_after, Instant::now()));
        let none = CatalogWatch::new(dir.path().join("nope"), Duration::ZERO);
        assert!(!none.outdates(SystemTime::UNIX_EPOCH, Instant::now()));
    }
}
