//! Fuzzes the pv-uring control-request parser: arbitrary limits and request
//! bytes; every accepted command must satisfy the invariants checked by
//! `devices::virtio::uring::control::fuzz_one`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = devices::virtio::uring::control::fuzz_one(data);
});
