//! `imageserving-server`: the component servers (`ps`, `is`, `svg`), started by the Server
//! Supervisor. Apart from the CLI so that the CLI does not map the image code.

fn main() -> std::process::ExitCode {
    imageserving::server_entry()
}
