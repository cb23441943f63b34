//! The spec loader as `init run` uses it: JSON into a Spec, validation, the machine built for
//! every container, its first actions. No panic, whatever the file holds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stepinit::machine::Machine;
use stepinit_protocol::Spec;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<Spec>(data) else { return };
    if spec.validate().is_err() {
        return;
    }
    for g in 0..spec.container_count().min(8) as u32 {
        if let Ok(mut m) = Machine::new(&spec, g, "/bin/sh") {
            let _ = m.start(0, None);
        }
    }
});
