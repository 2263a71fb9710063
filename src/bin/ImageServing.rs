//! `ImageServing`: the original control script's name, for `service ImageServing start`.

fn main() -> std::process::ExitCode {
    imageserving::main_entry()
}
