//! The layering of the code, checked: which part may use which, read from the sources, and which
//! code each program maps, read from the built binaries with `nm`.
//!
//! # The layers
//!
//! ```text
//!   imageserving (CLI)        imageserving-supervisor (daemon)     imageserving-server (ps, is, svg)
//!   cli.rs, commands/         daemon.rs, daemon/                   servers/
//!        │  client.rs               │  bridge.rs: tree types           │
//!        │                          │  become wire types               │
//!        ▼                          ▼                                  ▼
//!   protocol.rs (the wire)    config.rs (pure)   home.rs          imaging/ (the image code)
//!                                   │
//!                                   ▼
//!                        imageserving-actors (the supervision tree)
//! ```
//!
//! - `imageserving-actors` is the supervision tree as a library: it knows nothing of the root
//!   crate (a crate boundary guarantees it), nor of JSON, sockets or the command line.
//! - `protocol.rs` is the wire format and depends on nothing of the tree: the bridge
//!   (`daemon/bridge.rs`) converts the tree's status and events into its types.
//! - `config.rs` is pure: the text, the home and what `@self` stands for (`SelfProgram`, resolved
//!   by its caller) give a validated `TreeSpec`. It does not know the servers.
//! - The CLI (`cli.rs`, `commands/`) and the daemon map no image code: only
//!   `imageserving-server` does. The samples of a fresh home are written by `is`.
//! - The servers use the image code, not the tree.
//!
//! [`RULES`] checks the source side: each row forbids one dependency in a set of files and says
//! why. [`programs_map_only_their_own_code`] checks the binaries `cargo test` built.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One forbidden dependency.
struct Rule {
    /// The files it applies to: a path, or `dir/**` for every `.rs` file below `dir`.
    files: &'static [&'static str],
    /// The module path they must not use: `crate::imaging` (any spelling: `crate::`, `super::`,
    /// `self::`, `imageserving::`) or a crate, `imageserving_actors`.
    forbidden: &'static str,
    /// Why, for the failure message.
    reason: &'static str,
}

/// The forbidden dependencies. (`actors/src/**` → the root crate cannot happen: the root crate
/// depends on `imageserving-actors`, so the reverse would be a cycle Cargo refuses.)
const RULES: &[Rule] = &[
    Rule {
        files: &["src/protocol.rs"],
        forbidden: "imageserving_actors",
        reason: "the wire format does not know the tree: the bridge (src/daemon/bridge.rs) \
                 converts the tree's types into wire types",
    },
    Rule {
        files: &["src/config.rs"],
        forbidden: "crate::servers",
        reason: "configuration parsing is pure: the caller resolves which program runs the \
                 servers and passes it in (config::SelfProgram)",
    },
    Rule {
        files: &["src/cli.rs", "src/commands.rs", "src/commands/**"],
        forbidden: "crate::imaging",
        reason: "the CLI maps no image code (README, docs/performance.md); the Image Server \
                 creates the samples of a fresh home",
    },
    Rule {
        files: &["src/daemon.rs", "src/daemon/**"],
        forbidden: "crate::imaging",
        reason: "the daemon, the process that must stay up, maps no image code",
    },
    Rule {
        files: &["src/servers.rs", "src/servers/**"],
        forbidden: "imageserving_actors",
        reason: "the servers do not depend on the supervision tree; what both need (the rotated \
                 log files) is its own crate, imageserving-logfile",
    },
    Rule {
        files: &["src/servers.rs", "src/servers/**"],
        forbidden: "crate::daemon",
        reason: "a component server is a program the supervisor runs, not a part of it",
    },
    Rule {
        files: &["src/imaging.rs", "src/imaging/**"],
        forbidden: "crate::servers",
        reason: "the image code is a library below the servers: no I/O but what its callers \
                 hand it",
    },
    Rule {
        files: &["src/imaging.rs", "src/imaging/**"],
        forbidden: "crate::protocol",
        reason: "the image code does not know the control socket",
    },
];

/// The root of the package.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_forbidden_dependency_in_the_sources() {
    let mut failures = Vec::new();
    for rule in RULES {
        let files = files_of(rule.files);
        assert!(
            !files.is_empty(),
            "no file matches {:?}: update the rule's paths",
            rule.files
        );
        let forbidden: Vec<String> = rule.forbidden.split("::").map(String::from).collect();
        for file in files {
            let text = fs::read_to_string(root().join(&file))
                .unwrap_or_else(|e| panic!("reading {file}: {e}"));
            let module = module_of(&file);
            for (line, path) in paths(&text) {
                let resolved = resolve(&path, &module);
                if resolved.starts_with(&forbidden) {
                    let message = format!(
                        "{file}:{line}: uses `{}`: {} must not use {}: {}",
                        path.join("::"),
                        rule.files.join(", "),
                        rule.forbidden,
                        rule.reason
                    );
                    failures.push(message);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "forbidden dependencies:\n{}",
        failures.join("\n")
    );
}

/// The files a rule names, relative to the package root, sorted.
fn files_of(patterns: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    for pattern in patterns {
        match pattern.strip_suffix("/**") {
            Some(dir) => collect_rs(&root(), Path::new(dir), &mut files),
            None if root().join(pattern).is_file() => files.push((*pattern).to_string()),
            None => {}
        }
    }
    files.sort();
    files
}

/// Every `.rs` file below `dir` (relative to `root`).
fn collect_rs(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(root.join(dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let relative = dir.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_rs(root, &relative, out);
        } else if relative.extension().is_some_and(|e| e == "rs") {
            out.push(relative.to_string_lossy().into_owned());
        }
    }
}

/// The module a file of `src/` holds, as segments from `crate`: `src/commands/start.rs` is
/// `crate::commands::start`, `src/commands.rs` is `crate::commands`.
fn module_of(file: &str) -> Vec<String> {
    let mut module = vec!["crate".to_string()];
    let Some(rest) = file.strip_prefix("src/") else {
        return module;
    };
    let rest = rest.strip_suffix(".rs").unwrap_or(rest);
    let rest = rest.strip_suffix("/mod").unwrap_or(rest);
    if rest != "lib" && rest != "main" {
        module.extend(rest.split('/').map(String::from));
    }
    module
}

/// `path` made absolute where its spelling says so: `self::`, `super::` and `imageserving::`
/// become `crate::...`; a leading `::` is dropped; other paths (crates, names in scope) stay.
fn resolve(path: &[String], module: &[String]) -> Vec<String> {
    let mut segments = path.iter().map(String::as_str).peekable();
    let mut out: Vec<String> = match segments.peek() {
        Some(&"crate" | &"imageserving") => {
            segments.next();
            vec!["crate".to_string()]
        }
        Some(&"self" | &"super") => module.to_vec(),
        _ => Vec::new(),
    };
    for segment in segments {
        match segment {
            "self" if !out.is_empty() => {}
            "super" if out.len() > 1 => {
                out.pop();
            }
            other => out.push(other.to_string()),
        }
    }
    out
}

/// Every path the code names, with its line: each leaf of a `use` tree in full, and every
/// `a::b::c` elsewhere. Comments, strings and character literals are skipped.
fn paths(source: &str) -> Vec<(usize, Vec<String>)> {
    let tokens = tokens(source);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].text == "use" {
            let mut tree = UseTree {
                tokens: &tokens,
                at: i + 1,
            };
            tree.expand(&[], &mut out);
            i = tree.at;
            continue;
        }
        if is_ident(&tokens[i].text) && tokens.get(i + 1).is_some_and(|t| t.text == "::") {
            let line = tokens[i].line;
            let mut path = vec![tokens[i].text.clone()];
            let mut j = i + 1;
            while tokens.get(j).is_some_and(|t| t.text == "::")
                && tokens.get(j + 1).is_some_and(|t| is_ident(&t.text))
            {
                path.push(tokens[j + 1].text.clone());
                j += 2;
            }
            out.push((line, path));
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// A `use` tree being read: `a::b::{c, d::{e as f, *}};`.
struct UseTree<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl UseTree<'_> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(|t| t.text.as_str())
    }

    /// Reads one tree below `prefix`, pushing its leaves, up to `,`, `}` or `;`.
    fn expand(&mut self, prefix: &[String], out: &mut Vec<(usize, Vec<String>)>) {
        let mut path = prefix.to_vec();
        let mut line = self.tokens.get(self.at).map_or(0, |t| t.line);
        loop {
            match self.peek() {
                Some("{") => {
                    self.at += 1;
                    while !matches!(self.peek(), Some("}") | None) {
                        self.expand(&path, out);
                        if self.peek() == Some(",") {
                            self.at += 1;
                        }
                    }
                    self.at += 1;
                    self.skip_to_end();
                    return;
                }
                Some("::") => self.at += 1,
                Some("*") => {
                    self.at += 1;
                }
                Some(text) if is_ident(text) && text != "as" => {
                    line = self.tokens[self.at].line;
                    path.push(text.to_string());
                    self.at += 1;
                }
                Some("as") => {
                    self.at += 2;
                }
                _ => break,
            }
        }
        out.push((line, path));
        self.skip_to_end();
    }

    /// Consumes the `;` that ends the statement, if that is what follows.
    fn skip_to_end(&mut self) {
        if self.peek() == Some(";") {
            self.at += 1;
        }
    }
}

/// A token of the source and its line (1-based).
#[derive(Debug)]
struct Token {
    text: String,
    line: usize,
}

fn is_ident(text: &str) -> bool {
    text.starts_with(|c: char| c.is_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// The identifiers, `::` and punctuation of `source`, without comments, string and character
/// literals (whose text could look like a path).
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Advances over `chars[from..to]`, counting lines.
    let count_lines = |from: usize, to: usize, line: &mut usize| {
        *line += chars[from..to.min(chars.len())]
            .iter()
            .filter(|&&c| c == '\n')
            .count();
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let (start, mut depth) = (i, 0usize);
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            count_lines(start, i, &mut line);
        } else if let Some(end) = raw_string_end(&chars, i) {
            count_lines(i, end, &mut line);
            i = end;
        } else if c == '"' || (c == 'b' && next == Some('"')) {
            let start = i;
            i += if c == 'b' { 2 } else { 1 };
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            count_lines(start, i, &mut line);
        } else if c == '\'' || (c == 'b' && next == Some('\'')) {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime or label ('a).
            let open = if c == 'b' { i + 1 } else { i };
            if chars.get(open + 1) == Some(&'\\') {
                // The escaped character may itself be a quote: `'\''`.
                i = open + 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(open + 2) == Some(&'\'') {
                i = open + 3;
            } else {
                i = open + 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let mut text: String = chars[start..i].iter().collect();
            // A raw identifier, `r#type`.
            if text == "r" && chars.get(i) == Some(&'#') {
                let rest = i + 1;
                i = rest;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                text = chars[rest..i].iter().collect();
            }
            out.push(Token { text, line });
        } else if c == ':' && next == Some(':') {
            out.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                text: c.to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

/// Where the raw string starting at `i` (`r"…"`, `r#"…"#`, `br##"…"##`) ends, if one starts there.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"'
            && chars[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

#[test]
fn the_reader_finds_every_spelling_of_a_path_and_nothing_in_text() {
    let source = r####"
//! A doc naming crate::imaging::samples, which is no dependency.
use std::path::Path;
use crate::{
    config,
    imaging::{self, samples::provision as make},
};
use super::super::servers::args::*;
/* crate::hidden::in_a_block */
fn f() -> &'static str {
    let _ = 'x';
    let _ = '\'';
    let _ = imageserving_actors::events::TreeEvent::now("a", b);
    let _: Vec<::imageserving_actors::State> = vec![];
    let _ = r#"crate::in_a_raw_string"#;
    "crate::in_a_string"
}
"####;
    let found: Vec<(usize, String)> = paths(source)
        .into_iter()
        .map(|(line, path)| {
            (
                line,
                resolve(&path, &module_of("src/commands/start.rs")).join("::"),
            )
        })
        .collect();
    let expected = [
        (3, "std::path::Path"),
        (5, "crate::config"),
        (6, "crate::imaging"),
        (6, "crate::imaging::samples::provision"),
        (8, "crate::servers::args"),
        (13, "imageserving_actors::events::TreeEvent::now"),
        (14, "imageserving_actors::State"),
    ];
    let expected: Vec<(usize, String)> = expected
        .iter()
        .map(|(line, path)| (*line, path.to_string()))
        .collect();
    assert_eq!(found, expected);
    // In the programs' sources and the tests, the library is `imageserving`.
    assert_eq!(
        resolve(
            &["imageserving".into(), "imaging".into()],
            &module_of("src/bin/x.rs")
        ),
        ["crate", "imaging"]
    );
    assert_eq!(module_of("src/lib.rs"), ["crate"]);
    assert_eq!(module_of("src/commands.rs"), ["crate", "commands"]);
}

// ---------------------------------------------------------------------------------------------
// The programs

/// Code a program must not map, as the start of a demangled symbol's path (`image::`), or the
/// start of a C symbol (`WebP`, libwebp's).
const IMAGE_CODE: &[&str] = &[
    "imageserving::imaging::",
    "image::",
    "image_webp::",
    "fast_image_resize::",
    "resvg::",
    "usvg::",
    "tiny_skia::",
    "jpeg_decoder::",
    "zune_jpeg::",
    "png::",
    "gif::",
    "tiff::",
    "webp::",
    "libwebp_sys::",
];

/// The workspace's crates and their runtime, for a program that must link none of them.
const OUR_CODE: &[&str] = &[
    "imageserving::",
    "imageserving_actors::",
    "imageserving_logfile::",
    "ractor::",
    "tokio::",
];

/// The command-line parser, which the daemon does without.
const CLI_PARSER: &[&str] = &[
    "clap::",
    "clap_builder::",
    "clap_complete::",
    "clap_mangen::",
];

/// The C functions of libwebp, which `webp` links.
const LIBWEBP_PREFIX: &str = "WebP";

/// `nm -C` of `program`: one `(type, demangled name)` per symbol. Fails, saying why, when `nm`
/// is missing or the program has no symbols (stripped): an empty list would prove nothing.
fn symbols(program: &str) -> Vec<(char, String)> {
    let output = match Command::new("nm").arg("-C").arg(program).output() {
        Ok(output) => output,
        Err(e) => panic!(
            "running `nm` failed ({e}): this test reads the symbols of the built programs; \
             install binutils (Debian: apt-get install binutils)"
        ),
    };
    assert!(
        output.status.success(),
        "nm -C {program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let symbols: Vec<(char, String)> = text
        .lines()
        .filter_map(|line| {
            // `ADDRESS TYPE NAME`, or `TYPE NAME` (indented) for an undefined symbol.
            let line = line.trim_start();
            let (first, rest) = line.split_once(' ')?;
            let (kind, name) = if first.len() == 1 {
                (first, rest)
            } else {
                rest.split_once(' ')?
            };
            Some((kind.chars().next()?, name.to_string()))
        })
        .collect();
    assert!(
        symbols.len() > 1000,
        "{program} has {} symbols: is it stripped? This check needs its symbol table",
        symbols.len()
    );
    symbols
}

/// The symbols of `symbols` that belong to one of `crates` (a path starting there, also inside
/// generics: `<image::Rgb<u8> as …>`) or to libwebp.
fn mapped<'a>(symbols: &'a [(char, String)], crates: &[&str]) -> Vec<&'a str> {
    symbols
        .iter()
        .map(|(_, name)| name.as_str())
        .filter(|name| {
            name.starts_with(LIBWEBP_PREFIX)
                || crates.iter().any(|krate| {
                    name.match_indices(krate).any(|(at, _)| {
                        at == 0
                            || !name[..at]
                                .ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
                    })
                })
        })
        .collect()
}

/// `what` listed, at most 20.
fn sample(what: &[&str]) -> String {
    let mut shown: Vec<&str> = what.iter().take(20).copied().collect();
    if what.len() > shown.len() {
        shown.push("…");
    }
    shown.join("\n  ")
}

#[test]
fn programs_map_only_their_own_code() {
    // The matcher finds image code where it is: in the servers' program.
    let server = symbols(env!("CARGO_BIN_EXE_imageserving-server"));
    let found = mapped(&server, IMAGE_CODE);
    assert!(
        found.iter().any(|s| s.contains("imageserving::imaging::"))
            && found.iter().any(|s| s.contains("image::"))
            && found.iter().any(|s| s.starts_with(LIBWEBP_PREFIX)),
        "imageserving-server should map the image code; the check below would prove nothing"
    );

    for (program, path, forbidden, entry) in [
        (
            "imageserving",
            env!("CARGO_BIN_EXE_imageserving"),
            IMAGE_CODE,
            "imageserving::main_entry",
        ),
        (
            // It execs `imageserving`: none of our code, the standard library only.
            "ImageServing",
            env!("CARGO_BIN_EXE_ImageServing"),
            OUR_CODE,
            "ImageServing::main",
        ),
        (
            "imageserving-supervisor",
            env!("CARGO_BIN_EXE_imageserving-supervisor"),
            IMAGE_CODE,
            "imageserving::supervisor_entry",
        ),
        (
            "imageserving-supervisor",
            env!("CARGO_BIN_EXE_imageserving-supervisor"),
            CLI_PARSER,
            "imageserving::supervisor_entry",
        ),
    ] {
        let symbols = symbols(path);
        assert!(
            symbols.iter().any(|(_, name)| name == entry),
            "{program}: `{entry}` is not among its symbols; the names this check looks for \
             may have changed"
        );
        let found = mapped(&symbols, forbidden);
        assert!(
            found.is_empty(),
            "{program} maps {} symbols of {forbidden:?}, e.g.\n  {}\nFind the call that \
             reaches them (`nm -C {path}`), and move it to the program that owns that code",
            found.len(),
            sample(&found)
        );
    }
}
