//! The state journal a container's init reads: any bytes (what a step without the key can
//! write; the seeds are real journals, signed with another key than the one replaying them), and,
//! half the time, entries signed with the key (what only an init writes, to reach the code behind
//! the verification), replayed into the machine of a fixed three-container spec, which then
//! starts. No panic, whatever the journal holds; no line of a journal signed with another key is
//! ever taken in.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stepinit::journal::{self, Key};
use stepinit::machine::Machine;
use stepinit_protocol::Spec;

const SPEC: &str = r#"{"version":1,"containers":[{},{},{}],"steps":[
  {"command":["a"],"container":0,"retry":{"count":2}},
  {"id":"g","timeoutMs":50,"steps":[{"command":["b"],"container":0},{"command":["c"],"container":1,"condition":"always"},{"command":["d"],"container":2}]},
  {"command":["e"],"container":2,"condition":"failed","negative":true}]}"#;

fuzz_target!(|data: &[u8]| {
    let spec: Spec = serde_json::from_str(SPEC).unwrap();
    let key = Key::from_bytes([42; 32]);
    let (Some(&mode), rest) = (data.first(), data.get(1..).unwrap_or_default()) else { return };
    let from = u32::from(mode % 3);
    let group = from.max(u32::from((mode >> 2) % 3));
    let mut m = Machine::new(&spec, group, "/bin/sh").unwrap();
    let bytes = if mode & 0x80 != 0 {
        // Line bodies given by the fuzzer, signed as an init would sign them.
        let template = Machine::new(&spec, from, "/bin/sh").unwrap();
        let entries: Vec<_> = rest
            .split(|&b| b == b'\n')
            .filter_map(journal::decode)
            .collect();
        journal::sign(&template, from, None, &entries, &key)
    } else {
        rest.to_vec()
    };
    let replay_key = if mode & 0x80 != 0 { key } else { Key::from_bytes([7; 32]) };
    if let Ok(r) = journal::replay_bytes(&bytes, from, &mut m, &replay_key) {
        if mode & 0x80 == 0 {
            assert_eq!(r.lines, 0, "a journal of another key verified: {r:?}");
        }
        let _ = m.start(1_000, r.taint);
    }
});
