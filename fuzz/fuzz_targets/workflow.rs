//! stepctl's workflow parser and planner on any text: no panic, no hang (the YAML parser's
//! quadratic nesting is bounded before it), one error or a plan.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(wf) = stepctl::workflow::parse("fuzz.yaml", text) {
        let _ = stepctl::plan::plan(&wf, None);
    }
});
