//! The global options as the two programs without clap read them by hand
//! (`imageserving-supervisor`, `imageserving-server`; see [`crate::supervisor_entry`]): the same
//! spellings as the CLI's ([`GlobalArgs`]), so that `imageserving` can pass its own on.
//!
//! ```text
//! --home DIR | --home=DIR    -v | -vv | --verbose    -q | --quiet
//! ```

use std::ffi::OsString;
use std::path::PathBuf;

use crate::cli::GlobalArgs;

/// One argument: its flag, and the value given with `=` (`--home=DIR`), if any.
pub(crate) fn split(arg: &OsString) -> Result<(&str, Option<OsString>), String> {
    let Some(text) = arg.to_str() else {
        return Err(format!("unexpected argument {arg:?}"));
    };
    Ok(match text.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => (flag, Some(OsString::from(value))),
        _ => (text, None),
    })
}

impl GlobalArgs {
    /// Global options with nothing set, `home` aside.
    pub(crate) fn with_home(home: Option<PathBuf>) -> GlobalArgs {
        GlobalArgs {
            home,
            verbose: 0,
            quiet: false,
        }
    }

    /// Takes `flag` (with its `inline` value, else the next of `rest`) if it is a global option:
    /// `Ok(true)`; `Ok(false)` if it is not one.
    pub(crate) fn take(
        &mut self,
        flag: &str,
        inline: Option<OsString>,
        rest: &mut impl Iterator<Item = OsString>,
    ) -> Result<bool, String> {
        match flag {
            "--home" => {
                let value = inline.or_else(|| rest.next()).filter(|v| !v.is_empty());
                self.home = Some(PathBuf::from(value.ok_or("--home needs a value")?));
            }
            "-q" | "--quiet" => self.quiet = true,
            "--verbose" => self.verbose = self.verbose.saturating_add(1),
            short
                if short.len() > 1
                    && short.starts_with('-')
                    && short[1..].bytes().all(|b| b == b'v') =>
            {
                let count = u8::try_from(short.len() - 1).unwrap_or(u8::MAX);
                self.verbose = self.verbose.saturating_add(count);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Refuses what the options say together: `-q` with `-v`.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.quiet && self.verbose > 0 {
            return Err("-q and -v exclude each other".to_string());
        }
        Ok(())
    }

    /// The arguments that give these options back.
    pub(crate) fn push_args(&self, out: &mut Vec<OsString>) {
        if let Some(home) = &self.home {
            out.push("--home".into());
            out.push(home.into());
        }
        if self.quiet {
            out.push("-q".into());
        }
        for _ in 0..self.verbose {
            out.push("-v".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_all(args: &[&str]) -> Result<GlobalArgs, String> {
        let mut global = GlobalArgs::with_home(None);
        let mut rest = args.iter().map(OsString::from);
        while let Some(arg) = rest.next() {
            let (flag, inline) = split(&arg)?;
            if !global.take(flag, inline, &mut rest)? {
                return Err(format!("not a global option: {flag}"));
            }
        }
        global.check()?;
        Ok(global)
    }

    #[test]
    fn every_spelling_of_the_cli_is_read() {
        let g = take_all(&["--home", "/h", "-vv", "--verbose"]).unwrap();
        assert_eq!((g.home, g.verbose, g.quiet), (Some("/h".into()), 3, false));
        let g = take_all(&["--home=/x=y", "--quiet"]).unwrap();
        assert_eq!((g.home, g.verbose, g.quiet), (Some("/x=y".into()), 0, true));
        let g = take_all(&["-q"]).unwrap();
        assert!(g.quiet);
    }

    #[test]
    fn the_options_give_themselves_back() {
        let g = take_all(&["--home", "/h", "-vv"]).unwrap();
        let mut args = Vec::new();
        g.push_args(&mut args);
        let args: Vec<String> = args.iter().map(|a| a.to_str().unwrap().into()).collect();
        let again = take_all(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!((again.home, again.verbose), (Some("/h".into()), 2));
    }

    #[test]
    fn bad_options_are_refused_with_the_reason() {
        assert_eq!(take_all(&["--home"]).unwrap_err(), "--home needs a value");
        assert_eq!(take_all(&["--home="]).unwrap_err(), "--home needs a value");
        assert_eq!(
            take_all(&["-q", "-v"]).unwrap_err(),
            "-q and -v exclude each other"
        );
        assert!(take_all(&["-vx"])
            .unwrap_err()
            .contains("not a global option"));
        assert!(take_all(&["-"])
            .unwrap_err()
            .contains("not a global option"));
        assert!(take_all(&["vv"])
            .unwrap_err()
            .contains("not a global option"));
        assert!(take_all(&["--vv"])
            .unwrap_err()
            .contains("not a global option"));
    }
}
