//! Fuzzes the guest SQE allow-list: arbitrary backend counts, buffer
//! tables and SQE bytes; every host SQE the policy emits (an accepted SQE
//! or the error NOP of a refused one) must satisfy the allow-list, as
//! checked by `uring_abi::policy::fuzz_one`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    uring_abi::policy::fuzz_one(data);
});
