//! Prints every size, offset and constant of the `/dev/vuring` uAPI as
//! `NAME VALUE` lines (decimal), for `guest-kernel-patches/check.sh` to
//! compare with the same lines printed by a C program built against the
//! patched `include/uapi/linux/vuring.h`.

fn main() {
    uring_abi::vuring::dump(|name, value| println!("{name} {value}"));
}
