//! The arguments of `imageserving-supervisor`, read by hand (see [`crate::supervisor_entry`]).
//!
//! ```text
//! imageserving-supervisor [--home DIR] [--detached] [--exe PATH] [-v|-vv|-q]
//! ```
//!
//! `--home` falls back to `IMAGESERVING_HOME`, then to the default home, as in the CLI.
//! `--exe` is the program `@self` names in the configuration: the `imageserving` that started
//! this daemon; by default, `imageserving` beside this program.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::args::split;
use crate::cli::GlobalArgs;

/// What `imageserving-supervisor` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub struct SupervisorArgs {
    /// `--home` (else `IMAGESERVING_HOME`; `None`: the default home), `-v`, `-q`.
    pub global: GlobalArgs,
    /// Started by `start`: log to `logs/supervisor.log`, and leave the components to the caller.
    pub detached: bool,
    /// The program `@self` means.
    pub exe: PathBuf,
}

impl SupervisorArgs {
    /// Parses the arguments after the program's name.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<SupervisorArgs, String> {
        let home = std::env::var_os("IMAGESERVING_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let mut parsed = SupervisorArgs {
            global: GlobalArgs::with_home(home),
            detached: false,
            exe: sibling("imageserving"),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = split(&arg)?;
            if parsed.global.take(flag, inline.clone(), &mut args)? {
                continue;
            }
            match flag {
                "--exe" => {
                    let value = inline.or_else(|| args.next()).filter(|v| !v.is_empty());
                    parsed.exe = PathBuf::from(value.ok_or("--exe needs a value")?);
                }
                "--detached" => parsed.detached = true,
                "-h" | "--help" => {
                    return Err(
                        "usage: imageserving-supervisor [--home DIR] [--detached] [--exe PATH] [-v|-q]; \
                         it is started by `imageserving start` or `imageserving supervisor`"
                            .to_string(),
                    )
                }
                other => return Err(format!("unexpected argument `{other}`")),
            }
        }
        parsed.global.check()?;
        Ok(parsed)
    }

    /// The arguments that give `self` back, for the command line of a new daemon.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        if self.detached {
            out.push("--detached".into());
        }
        out.push("--exe".into());
        out.push(self.exe.clone().into());
        self.global.push_args(&mut out);
        out
    }
}

/// `name` in the directory of the running program (`name` alone if that is unknown).
pub fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SupervisorArgs, String> {
        SupervisorArgs::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn arguments_round_trip() {
        let args = parse(&["--home", "/h", "--detached", "--exe=/bin/x", "-vv"]).unwrap();
        assert_eq!(
            args.global.home.as_deref(),
            Some(std::path::Path::new("/h"))
        );
        assert!(args.detached);
        assert_eq!(args.exe, PathBuf::from("/bin/x"));
        assert_eq!(args.global.verbose, 2);
        assert_eq!(SupervisorArgs::parse(args.to_args()).unwrap(), args);
    }

    #[test]
    fn bad_arguments_are_refused_with_the_reason() {
        assert!(parse(&["--home"])
            .unwrap_err()
            .contains("--home needs a value"));
        assert!(parse(&["--home="])
            .unwrap_err()
            .contains("--home needs a value"));
        assert!(parse(&["start"])
            .unwrap_err()
            .contains("unexpected argument `start`"));
        assert!(parse(&["-q", "-v"]).unwrap_err().contains("exclude"));
        assert!(parse(&["-vx"]).unwrap_err().contains("unexpected"));
    }
}
