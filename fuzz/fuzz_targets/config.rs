//! Fuzzes the configuration parser: every error names its origin first, and every accepted
//! configuration has at least one component.
#![no_main]

use std::sync::OnceLock;

use imageserving::config;
use imageserving::home::Home;
use libfuzzer_sys::fuzz_target;

const ORIGIN: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    static HOME: OnceLock<Home> = OnceLock::new();
    // `parse` only reads the home's path; it never touches the directory.
    let home =
        HOME.get_or_init(|| Home::new("/nonexistent-imageserving-fuzz/home").expect("a home"));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(
        text,
        ORIGIN,
        home,
        &config::SelfProgram::new("/opt/imageserving/bin/imageserving"),
    ) {
        Ok(config) => assert!(!config.tree.components.is_empty()),
        Err(e) => assert!(e.to_string().starts_with("fuzz.toml: "), "{e}"),
    }
});
