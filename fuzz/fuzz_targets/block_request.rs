//! Fuzzes the virtio-blk request parser: arbitrary descriptor chains,
//! headers and device limits; every accepted request must satisfy the
//! invariants checked by `devices::virtio::block::request::fuzz_one`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = devices::virtio::block::request::fuzz_one(data);
});
