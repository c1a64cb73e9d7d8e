//! Prints every constant, size and offset `include/pv_uring.h` must have as
//! `NAME VALUE` lines, from `uring-abi` (see `src/abi.rs`), for
//! `guest-kernel-patches/check.sh` to compare with `c/abi-dump.c`.

fn main() {
    print!("{}", pv_uring_c::abi::dump_text());
}
