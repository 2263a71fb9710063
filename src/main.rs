//! The `imageserving` command.

fn main() -> std::process::ExitCode {
    imageserving::main_entry()
}
