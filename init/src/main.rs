//! The `init` binary: argv straight from the C entry point to [`stepinit::cli_main`].
//!
//! `#![no_main]`: std's runtime set-up (SIGPIPE ignored, an alternate signal stack, handlers for
//! SIGSEGV/SIGBUS) is skipped; PID 1 wants none of it, and the wrap path stays a few thousand
//! instructions long.
// (Under `cargo test` the harness provides main; this file then has nothing to test.)
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
use std::ffi::{CStr, OsString};
#[cfg(not(test))]
use std::os::raw::{c_char, c_int};
#[cfg(not(test))]
use std::os::unix::ffi::OsStringExt;

#[cfg(not(test))]
#[no_mangle]
// The C runtime calls this with its own argc/argv; nothing else can.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    let mut args = Vec::with_capacity(argc.max(1) as usize - 1);
    for i in 1..argc.max(1) as usize {
        // SAFETY: the C runtime passes argc valid NUL-terminated strings.
        let a = unsafe { CStr::from_ptr(*argv.add(i)) };
        args.push(OsString::from_vec(a.to_bytes().to_vec()));
    }
    stepinit::cli_main(args)
}
