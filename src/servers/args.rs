//! The arguments of `imageserving-server`, read by hand (see [`crate::server_entry`]).
//!
//! ```text
//! imageserving-server NAME [--home DIR] [-v|-vv|--verbose] [-q|--quiet]
//! ```
//!
//! `NAME` is `ps`, `is` or `svg`. The options may come before or after it, as they may after
//! `imageserving component NAME` (which execs this program). A server takes its settings from
//! the environment the supervisor gives it; `--home` is accepted for the CLI's sake.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::args::split;
use crate::cli::GlobalArgs;
use crate::config::SelfProgram;

/// What `imageserving-server` was asked to run.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerArgs {
    /// The component server: `ps`, `is` or `svg`.
    pub name: String,
    /// `--home` (if given), `-v`, `-q`.
    pub global: GlobalArgs,
}

/// The usage line.
pub const USAGE: &str = "usage: imageserving-server ps|is|svg [--home DIR] [-v|-q]; \
                         it is started by the Server Supervisor (`@self component NAME`)";

impl ServerArgs {
    /// Parses the arguments after the program's name.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<ServerArgs, String> {
        let mut name = None;
        let mut global = GlobalArgs::with_home(None);
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = split(&arg)?;
            if global.take(flag, inline, &mut args)? {
                continue;
            }
            match flag {
                "-h" | "--help" => return Err(USAGE.to_string()),
                flag if flag.starts_with('-') => {
                    return Err(format!("unexpected argument `{flag}`; {USAGE}"))
                }
                component if name.is_none() => name = Some(component.to_string()),
                other => return Err(format!("unexpected argument `{other}`; {USAGE}")),
            }
        }
        global.check()?;
        let name = name.ok_or_else(|| format!("which server? {USAGE}"))?;
        Ok(ServerArgs { name, global })
    }

    /// The arguments that give `self` back.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![self.name.clone().into()];
        self.global.push_args(&mut out);
        out
    }
}

/// `imageserving-server` beside `exe` (the `imageserving` program), if it is installed there.
pub fn program_beside(exe: &std::path::Path) -> Option<PathBuf> {
    crate::installed_beside(exe, "imageserving-server")
}

/// What `@self` stands for in the configuration when this program is `exe`: `exe` itself, and
/// for `@self component NAME` this program, [`program_beside`] `exe`, if it is installed.
pub fn self_program(exe: PathBuf) -> SelfProgram {
    let server_exe = program_beside(&exe);
    SelfProgram { exe, server_exe }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ServerArgs, String> {
        ServerArgs::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn the_name_and_the_options_in_any_order() {
        let a = parse(&["ps", "--verbose"]).unwrap();
        assert_eq!(
            (a.name.as_str(), a.global.verbose, a.global.quiet),
            ("ps", 1, false)
        );
        let a = parse(&["-vv", "--home=/h", "is"]).unwrap();
        assert_eq!(a.name, "is");
        assert_eq!(a.global.verbose, 2);
        assert_eq!(a.global.home.as_deref(), Some(std::path::Path::new("/h")));
        assert_eq!(ServerArgs::parse(a.to_args()).unwrap(), a);
    }

    #[test]
    fn bad_arguments_are_refused_with_the_reason() {
        assert!(parse(&[]).unwrap_err().contains("which server"));
        assert!(parse(&["ps", "is"])
            .unwrap_err()
            .contains("unexpected argument `is`"));
        assert!(parse(&["ps", "--home"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(&["ps", "-q", "-v"]).unwrap_err().contains("exclude"));
        assert!(parse(&["ps", "--port", "1"])
            .unwrap_err()
            .contains("`--port`"));
    }
}
