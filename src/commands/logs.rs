//! `logs <component> [-f] [-n N]`: the last lines of a component's log, or of the Server
//! Supervisor's, and with `-f` every line written after them.
//!
//! It reads files only, so it works whether or not a supervisor runs. Where a component's lines
//! are is the configuration's business ([`LogSpec`]): `logs/<name>.log` for both streams, plus
//! `logs/<name>.stderr.log` with `log_stderr` (two files are shown one after the other, each
//! under a `==> file <==` header, as `tail` does), or, with `log_to_supervisor`, the lines
//! prefixed `<name> | ` on the supervisor's standard error, which is `logs/supervisor.stderr`
//! for a supervisor started by `start`. `supervisor` names the daemon's own log,
//! `logs/supervisor.log`.
//!
//! The last lines are read back across rotations ([`tail::last_lines`]), and `-f` polls a
//! [`Follower`] for each file every [`POLL`]: both are `imageserving-logfile`'s, which says how
//! a log is followed across rotations, files moved away or truncated by `logrotate`, and a log
//! that does not exist yet. Lines are printed whole, once each, in the order they were written;
//! where lines are missing (the log was rotated more often than its rotated files keep between
//! two polls), a warning says so.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use imageserving_actors::spec::LogSpec;
use imageserving_logfile::follow::{Event, Follower};
use imageserving_logfile::{tail, Log};

use super::load_config;
use crate::cli::LogsArgs;
use crate::exit::{self, Exit};
use crate::home::Home;

/// How often `-f` looks for new lines.
const POLL: Duration = Duration::from_millis(100);

/// The name that shows the Server Supervisor's own log.
const SUPERVISOR: &str = "supervisor";

/// What `logs` shows: a label for messages and the files.
struct Target {
    /// The component's name, or `supervisor`.
    name: String,
    /// For messages: component `is`, the Server Supervisor.
    what: String,
    /// The Server Supervisor's own log.
    daemon: bool,
    /// The files to show: a component's log (and its standard error's), the supervisor's
    /// standard error (the component's lines, by their prefix), or the daemon's log.
    sources: Vec<Log>,
}

pub(super) fn run(home: &Home, args: &LogsArgs, quiet: bool) -> anyhow::Result<u8> {
    let target = target(home, &args.component)?;
    let shown = |p: &Path| shown_path(home, p);
    let result = if args.follow {
        follow(&target, args.lines, quiet, &shown)
    } else {
        print_last(&target, args.lines, quiet, &shown)
    };
    match result {
        // `logs … | head`: the reader has had enough.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(exit::OK)
        }
        other => other,
    }
}

/// The files of `name` (a component, an alias, or `supervisor`), as the configuration places
/// them.
fn target(home: &Home, name: &str) -> anyhow::Result<Target> {
    if name.eq_ignore_ascii_case(SUPERVISOR) {
        // The daemon's log needs no configuration: it is where to look when that is broken.
        // (No component can be called `supervisor`: the configuration reserves the name.)
        return Ok(Target {
            name: SUPERVISOR.into(),
            what: "the Server Supervisor".into(),
            daemon: true,
            sources: vec![Log::new(home.supervisor_log(), crate::daemon::log::BACKUPS)],
        });
    }
    let config = load_config(home)?;
    let Some(component) = config.resolve(name).and_then(|n| config.component(n)) else {
        return Err(Exit::new(
            exit::USAGE,
            format!(
                "unknown component `{name}`; configured: {} (or `{SUPERVISOR}` for the Server Supervisor's own log)",
                config.component_names().join(", ")
            ),
        )
        .into());
    };
    let what = format!("component `{}`", component.name);
    let sources = sources_of(home, &component.name, &component.log);
    if sources.is_empty() {
        return Err(Exit::new(
            exit::FAILED,
            format!(
                "{what} keeps no log: its output is discarded; give it a log file in {} to keep it",
                config.origin()
            ),
        )
        .into());
    }
    Ok(Target {
        name: component.name.clone(),
        what,
        daemon: false,
        sources,
    })
}

/// Where `log` sends the lines of component `name`.
fn sources_of(home: &Home, name: &str, log: &LogSpec) -> Vec<Log> {
    if log.to_supervisor {
        return vec![Log::new(home.supervisor_stderr(), 0).with_prefix(format!("{name} | "))];
    }
    let mut sources: Vec<Log> = log
        .stdout
        .iter()
        .map(|p| Log::new(p.clone(), log.backups))
        .collect();
    if let Some(stderr) = &log.stderr {
        if log.stdout.as_ref() != Some(stderr) {
            sources.push(Log::new(stderr.clone(), log.backups));
        }
    }
    sources
}

/// `path` as shown: relative to the home when it is below it.
fn shown_path(home: &Home, path: &Path) -> String {
    path.strip_prefix(home.root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Why there is nothing to read at `source` yet, and what to do.
fn missing(target: &Target, source: &Log, shown: &str) -> String {
    if source.prefix().is_some() {
        format!(
            "{} writes its output to the Server Supervisor's standard error (`log_to_supervisor = true`), \
             and {shown}, where a supervisor started by `imageserving start` sends it, does not exist yet; \
             a supervisor run in the foreground (`imageserving supervisor`) sends it wherever its standard \
             error goes (`journalctl -u <unit>`, `docker logs <container>`); set `log_to_supervisor = false` \
             to have it logged to logs/{}.log",
            target.what, target.name
        )
    } else if target.daemon {
        format!(
            "{shown} does not exist yet: no Server Supervisor was started with `imageserving start` in this \
             home (one run in the foreground logs to its standard error); `logs -f` waits for it"
        )
    } else {
        format!(
            "{shown} does not exist yet: {} has not been started in this home; `logs -f` waits for it",
            target.what
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The last lines.

/// Without `-f`: the last `n` lines of each file, under a header when there are several.
fn print_last(
    target: &Target,
    n: usize,
    quiet: bool,
    shown: &dyn Fn(&Path) -> String,
) -> anyhow::Result<u8> {
    let mut found = Vec::new();
    let mut absent = Vec::new();
    for source in &target.sources {
        let path = shown(source.path());
        match tail::last_lines(source, n)? {
            Some(lines) => found.push((source, path, lines)),
            None => absent.push(missing(target, source, &path)),
        }
    }
    if found.is_empty() {
        return Err(Exit::new(exit::FAILED, absent.join("\n")).into());
    }
    if !quiet {
        for message in &absent {
            eprintln!("imageserving: {message}");
        }
    }
    let mut out = io::stdout().lock();
    let headers = target.sources.len() > 1;
    for (i, (source, path, lines)) in found.iter().enumerate() {
        if headers {
            let gap = if i == 0 { "" } else { "\n" };
            writeln!(out, "{gap}==> {path} <==")?;
        }
        for line in lines {
            out.write_all(line)?;
            out.write_all(b"\n")?;
        }
        if lines.is_empty() && source.prefix().is_some() && !quiet {
            eprintln!(
                "imageserving: no line of {} in {path}: a supervisor run in the foreground \
                 (`imageserving supervisor`) sends them wherever its standard error goes",
                target.what
            );
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

// ---------------------------------------------------------------------------------------------
// Following.

/// With `-f`: the last `n` lines of each file, then every new line, until interrupted.
fn follow(
    target: &Target,
    n: usize,
    quiet: bool,
    shown: &dyn Fn(&Path) -> String,
) -> anyhow::Result<u8> {
    let mut out = Printer {
        out: io::stdout().lock(),
        headers: target.sources.len() > 1,
        last: None,
    };
    let mut followers = Vec::with_capacity(target.sources.len());
    for (i, source) in target.sources.iter().enumerate() {
        let path = shown(source.path());
        let (tail, follower) = Follower::start(source, n)?;
        match tail {
            Some(lines) => {
                out.header(i, &path)?;
                for line in &lines {
                    out.line(i, &path, line)?;
                }
            }
            None => {
                if !quiet {
                    eprintln!("imageserving: {path} does not exist yet; waiting for it");
                }
            }
        }
        followers.push((source, path, follower));
    }
    out.flush()?;
    loop {
        for (i, (source, path, follower)) in followers.iter_mut().enumerate() {
            follower.poll(&mut |event| match event {
                Event::Line(line) => out.line(i, path, line),
                Event::Gap => {
                    if !quiet {
                        eprintln!(
                            "imageserving: {} was rotated more often than its {} rotated files keep \
                             since it was last read; the lines of the files deleted in between are \
                             missing here",
                            source.path().display(),
                            source.backups()
                        );
                    }
                    Ok(())
                }
            })?;
        }
        out.flush()?;
        std::thread::sleep(POLL);
    }
}

/// Prints lines, each file's under its header when there are several.
struct Printer<W: Write> {
    out: W,
    headers: bool,
    /// The file whose lines were printed last.
    last: Option<usize>,
}

impl<W: Write> Printer<W> {
    fn header(&mut self, file: usize, path: &str) -> io::Result<()> {
        if self.headers && self.last != Some(file) {
            let gap = if self.last.is_none() { "" } else { "\n" };
            writeln!(self.out, "{gap}==> {path} <==")?;
            self.last = Some(file);
        }
        Ok(())
    }

    fn line(&mut self, file: usize, path: &str, line: &[u8]) -> io::Result<()> {
        self.header(file, path)?;
        self.out.write_all(line)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
