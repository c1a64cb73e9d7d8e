//! Shared helpers for tests that boot guests under the `ringvisor` binary.
//!
//! The guest image comes from `guest-images/build.sh` (cached, so a no-op
//! after the first build), or from RINGVISOR_KERNEL and RINGVISOR_INITRAMFS.
//! Without /dev/kvm these tests fail, unless RINGVISOR_SKIP_KVM_TESTS=1;
//! each skip is printed and appended to $RINGVISOR_SKIP_LOG (see skip.rs).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The kernel and initramfs under test.
pub struct Image {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The ringvisor binary cargo built for these tests.
pub fn ringvisor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringvisor"))
}

/// Builds the `ringvisor-bench` binary (package `bench`) beside the
/// `ringvisor` binary, where `ringvisor bench` looks for it: cargo builds
/// only this package's binaries for its tests. Panics if the build fails.
pub fn build_bench() {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-p", "bench", "--bin", "ringvisor-bench"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let status = cmd
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .status()
        .expect("running cargo build -p bench");
    assert!(status.success(), "cargo build -p bench failed: {status}");
    let bench = Path::new(env!("CARGO_BIN_EXE_ringvisor")).with_file_name("ringvisor-bench");
    assert!(bench.is_file(), "cargo built no {}", bench.display());
}

pub mod skip;

/// Whether a test that boots a guest must be skipped: only when
/// RINGVISOR_SKIP_KVM_TESTS=1 (documented in the README), and then the skip
/// is printed and counted (see [`skip`]). Without /dev/kvm and without the
/// variable, this panics.
pub fn skip_without_kvm() -> bool {
    skip::skip_without_kvm("boots a guest")
}

/// The guest image, built once per test process.
pub fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        if let (Some(k), Some(i)) = (
            std::env::var_os("RINGVISOR_KERNEL"),
            std::env::var_os("RINGVISOR_INITRAMFS"),
        ) {
            return Image {
                kernel: k.into(),
                initramfs: i.into(),
            };
        }
        let image = vmm::guest_image::build_default()
            .unwrap_or_else(|e| panic!("building the guest image: {e}"));
        Image {
            kernel: image.kernel,
            initramfs: image.initramfs,
        }
    })
}

/// What a guest run gave back.
pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The `RINGVISOR_TIMINGS` JSON the VMM printed (with `--timings`).
    pub fn timings(&self) -> serde_json::Value {
        let line = self
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("RINGVISOR_TIMINGS "))
            .unwrap_or_else(|| panic!("no RINGVISOR_TIMINGS line in stderr:\n{}", self.stderr));
        serde_json::from_str(line).expect("timings JSON")
    }

    /// Panics with the whole console when `cond` is false.
    pub fn check(&self, cond: bool, what: &str) {
        assert!(
            cond,
            "{what}\n--- exit status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.status, self.stdout, self.stderr
        );
    }
}

fn collect(out: Output) -> Run {
    Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ringvisor run --kernel K --initramfs I ARGS` for the test image.
pub fn run_command(args: &[&str]) -> Command {
    let image = image();
    let mut cmd = ringvisor();
    cmd.arg("run")
        .arg("--kernel")
        .arg(&image.kernel)
        .arg("--initramfs")
        .arg(&image.initramfs)
        .args(args);
    cmd
}

/// Boots the test image with `args` after `run --kernel K --initramfs I`.
pub fn boot(args: &[&str]) -> Run {
    let out = run_command(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawning ringvisor");
    collect(out)
}

/// Runs ringvisor with exactly `args` (no guest image added).
pub fn run_raw(args: &[&str]) -> Run {
    collect(
        ringvisor()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawning ringvisor"),
    )
}

/// A token that cannot appear on the console by accident.
pub fn token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("rv-token-{:x}-{:x}", std::process::id(), nanos)
}

/// The cached snapshot of the test image booted with the default options
/// (`ringvisor snapshot --cached`: taken on first use, under the ringvisor
/// cache), taken once per test process. For tests that only need a booted
/// guest; each kind of test keeps a cold boot elsewhere.
pub fn cached_snapshot() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let image = image();
        let out = ringvisor()
            .args(["snapshot", "--cached", "--kernel"])
            .arg(&image.kernel)
            .arg("--initramfs")
            .arg(&image.initramfs)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("spawning ringvisor snapshot --cached");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ringvisor snapshot --cached failed: {stdout}"
        );
        PathBuf::from(stdout.trim())
    })
}

/// Whether `RINGVISOR_TEST_COLD_BOOT=1` asks [`restore_cached`] to boot.
pub fn cold_boot_asked() -> bool {
    std::env::var_os("RINGVISOR_TEST_COLD_BOOT").is_some_and(|v| v == "1")
}

/// `ringvisor run --restore CACHED ARGS`: [`boot`] from the cached
/// snapshot (`--cmdline` takes only `-- WORKLOAD` or `rv.workload=NAME`).
/// With `RINGVISOR_TEST_COLD_BOOT=1` it boots instead, with the same
/// arguments: the same test on a cold boot, to compare the suite's time
/// (docs/snapshot.md) or on a host where snapshots fail.
pub fn restore_cached(args: &[&str]) -> Run {
    if cold_boot_asked() {
        return boot(args);
    }
    let dir = cached_snapshot();
    collect(
        ringvisor()
            .arg("run")
            .arg("--restore")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawning ringvisor run --restore"),
    )
}

/// Block size of the data pattern the pv-suite cases and the tests share.
pub const PV_BLOCK: usize = 4096;
/// Seed the tests pass to pv-suite (`--seed`), folded into every word.
pub const PV_SEED: u32 = 0x5a17;

/// Blocks `first..first + n` of the data pattern tagged `tag`: word `j` of
/// block `b` is `tag << 56 | (seed & 0xffff) << 40 | (b & 0xffffff) << 16 |
/// (j & 0xffff)`, little endian, as pv-suite writes and checks it.
pub fn pv_blocks(first: u64, n: u64, tag: u64) -> Vec<u8> {
    let word = |b: u64, j: u64| {
        (tag << 56) | ((u64::from(PV_SEED) & 0xffff) << 40) | ((b & 0xff_ffff) << 16) | (j & 0xffff)
    };
    let mut v = Vec::with_capacity(n as usize * PV_BLOCK);
    for b in first..first + n {
        for j in 0..(PV_BLOCK / 8) as u64 {
            v.extend_from_slice(&word(b, j).to_le_bytes());
        }
    }
    v
}
