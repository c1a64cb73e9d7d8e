//! The C API from C, on this host (no pv-uring device here; the data path
//! runs in the guest: tests/capi.rs of the host workspace boots it):
//! - `include/pv_uring.h` against `uring-abi` (`c/abi-dump.c` vs
//!   [`pv_uring_c::abi::dump`]), as `guest-kernel-patches/check.sh` does;
//! - `c/test-capi.c`, linked with this crate's static library: NULL
//!   arguments, errnos of opening, and the header's inline SQE helpers,
//!   whose bytes must equal what pv-uring's Rust builders make;
//! - `c/ring-pool-c.c` and `c/capi-suite.c` build with `-Wall -Wextra
//!   -Werror` and, without a device, print their error line and exit 1
//!   (bad arguments: 2).
//!
//! Needs a C compiler (`cc`, or `$CC`): without one these tests fail.

use io_uring::{opcode, types};
use pv_uring::uring_abi::uring::{Sqe, IORING_FSYNC_DATASYNC, IORING_OP_FSYNC, IOSQE_FIXED_FILE};
use pv_uring::{nop, read_fixed, sqe_bytes, write_fixed, FixedBuf};
use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `libpv_uring_c.a` cargo built for this test: `cargo build` puts it
/// in `target/<profile>/`, `cargo test` only in `target/<profile>/deps/`
/// (with a hash in its name), so the newest of those is the one built
/// from the sources this test was built from.
fn staticlib() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("target/<profile>/deps");
    let profile = deps.parent().expect("target/<profile>");
    let uplifted = profile.join("libpv_uring_c.a");
    let hashed = std::fs::read_dir(deps)
        .expect("reading target/<profile>/deps")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libpv_uring_c-") && n.ends_with(".a"))
        });
    let newest = std::iter::once(uplifted)
        .chain(hashed)
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p);
    newest.unwrap_or_else(|| panic!("no libpv_uring_c.a under {}", profile.display()))
}

/// Compiles `c/<src>` with warnings as errors (linked with the static
/// library when `link`); returns the binary.
fn build(src: &str, link: bool) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{}-{}",
        src.trim_end_matches(".c"),
        std::process::id()
    ));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args(["-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir().join("include"))
        .arg("-o")
        .arg(&out)
        .arg(crate_dir().join("c").join(src));
    if link {
        cmd.arg(staticlib()).args(["-lpthread", "-ldl", "-lm"]);
    }
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cc} (a C compiler is needed): {e}"));
    assert!(
        o.status.success(),
        "{cc} {src} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn run(bin: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(bin).args(args).output().expect("running");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn the_header_matches_uring_abi() {
    let bin = build("abi-dump.c", false);
    let (code, out, err) = run(&bin, &[]);
    assert_eq!(code, Some(0), "{err}");
    let want = pv_uring_c::abi::dump_text();
    if out != want {
        let diff: Vec<String> = want
            .lines()
            .zip(out.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("uring-abi: {a}\npv_uring.h: {b}"))
            .collect();
        panic!(
            "pv_uring.h differs from uring-abi ({} vs {} lines):\n{}",
            want.lines().count(),
            out.lines().count(),
            diff.join("\n")
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn c_calls_check_their_arguments_and_helpers_build_the_library_sqes() {
    let bin = build("test-capi.c", true);
    let (code, out, err) = run(&bin, &[]);
    assert_eq!(code, Some(0), "test-capi failed:\n{out}\n{err}");
    assert!(out.ends_with("OK\n"), "{out}");
    let sqe = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("sqe {name} ")))
            .unwrap_or_else(|| panic!("no sqe {name} line in:\n{out}"))
            .to_string()
    };
    assert_eq!(sqe("nop"), hex(&sqe_bytes(&nop().user_data(9))));
    let at = FixedBuf {
        buf_index: 7,
        offset: 0x1000,
    };
    assert_eq!(
        sqe("read_fixed"),
        hex(&sqe_bytes(
            &read_fixed(3, at, 4096, 0x2000).user_data(0xabcd)
        ))
    );
    let at = FixedBuf {
        buf_index: 2,
        offset: 0x200,
    };
    let w = write_fixed(1, at, 512, 0x4000)
        .user_data(5)
        .flags(io_uring::squeue::Flags::IO_LINK);
    assert_eq!(sqe("write_fixed_link"), hex(&sqe_bytes(&w)));
    let f = opcode::Fsync::new(types::Fixed(2))
        .flags(types::FsyncFlags::DATASYNC)
        .build();
    assert_eq!(sqe("fsync_datasync"), hex(&sqe_bytes(&f)));
    let want = Sqe {
        opcode: IORING_OP_FSYNC,
        flags: IOSQE_FIXED_FILE,
        fd: 2,
        op_flags: IORING_FSYNC_DATASYNC,
        ..Default::default()
    };
    assert_eq!(sqe("fsync_datasync"), hex(&want.to_bytes()));
}

#[test]
fn the_programs_build_strictly_and_fail_cleanly_without_a_device() {
    let bin = build("ring-pool-c.c", true);
    let (code, out, err) = run(&bin, &["--rings", "2"]);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    let line = out.lines().last().unwrap_or_default();
    assert!(
        line.starts_with(r#"{"kind":"ring-pool-c-error","call":"pvu_open","ring":-1,"errno":2,"#),
        "{out}"
    );
    for bad in [&["--rings", "1"][..], &["--size", "3"], &["--bogus", "1"]] {
        let (code, _, err) = run(&bin, bad);
        assert_eq!(code, Some(2), "{bad:?}: {err}");
    }
    let suite = build("capi-suite.c", true);
    let (code, out, _) = run(&suite, &["--scratch", "0"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("FAIL open: pvu_open: -2\n"), "{out}");
}
