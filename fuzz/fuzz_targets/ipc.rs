//! Fuzzes the control socket: the frame reader over arbitrary bytes, then both decoders on
//! every frame it returns.
#![no_main]

use imageserving::protocol::{decode_request, decode_response, read_frame, MAX_FRAME};
use libfuzzer_sys::fuzz_target;
use tokio::io::BufReader;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        // A small buffer makes the reader assemble frames across many reads.
        let mut reader = BufReader::with_capacity(7, data);
        while let Ok(Some(frame)) = read_frame(&mut reader).await {
            assert!(frame.len() <= MAX_FRAME);
            assert!(!frame.contains(&b'\n'));
            if let Err(e) = decode_request(&frame) {
                assert!(!e.is_fatal_to_connection(), "{e}");
            }
            if let Err(e) = decode_response(&frame) {
                assert!(!e.is_fatal_to_connection(), "{e}");
            }
        }
    });
});
