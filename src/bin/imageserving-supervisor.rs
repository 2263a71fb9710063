//! `imageserving-supervisor`: the Server Supervisor daemon alone, started by `imageserving start`
//! (detached) or `imageserving supervisor` (foreground). It links neither the CLI parser nor the
//! component servers, so the one process that must stay up maps a fraction of the code.

fn main() -> std::process::ExitCode {
    imageserving::supervisor_entry()
}
