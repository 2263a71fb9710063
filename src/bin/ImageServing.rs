//! `ImageServing`: the original control script's name, for `service ImageServing start` and the
//! scripts that call it. A small program that execs `imageserving` from its own directory with
//! the same arguments, and with its own name as `argv[0]`, so that usage lines and `--help` say
//! `ImageServing` as the original's did. It links nothing but the standard library.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// The program this one stands for, installed in the same directory.
const PROGRAM: &str = "imageserving";

/// Exit code when `imageserving` cannot be run: LSB's "program is not installed", as the init
/// script's.
const NOT_INSTALLED: u8 = 5;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let name = args.next().unwrap_or_else(|| "ImageServing".into());
    let program = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(PROGRAM),
        Err(e) => {
            eprintln!("ImageServing: cannot find this program's path: {e}");
            return ExitCode::from(NOT_INSTALLED);
        }
    };
    // `exec` returns only on failure.
    let err = Command::new(&program).arg0(name).args(args).exec();
    eprintln!(
        "ImageServing: cannot run {} (install it beside ImageServing): {err}",
        program.display()
    );
    ExitCode::from(NOT_INSTALLED)
}
