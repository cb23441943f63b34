//! The termination summary's decoder on any bytes: no panic; what it accepts encodes back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stepinit_protocol::summary::Summary;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Summary::decode(data) {
        let again = s.encode();
        assert!(again.len() < 4096);
        assert!(Summary::decode(&again).is_ok());
    }
});
