//! The paravirtual io_uring device end to end: one boot with two backends
//! (a pattern-filled O_DIRECT file and a read-only one) runs the guest suite
//! `pv-suite` (data integrity, clone semantics, the host buffer table,
//! hostile requests, ring create/destroy cycles) through /dev/vuring, then
//! the host checks what the guest wrote, that the read-only backend is
//! unchanged and that the VMM pinned nothing at exit. The data layout is
//! guest-images/programs/pv-uring/src/pattern.rs.

mod common;

use std::path::PathBuf;

use common::{boot, skip_without_kvm};

const BLOCK: usize = 4096;
const SEED: u32 = 0x5a17;
const READ_BLOCKS: u64 = 256;
const WRITE_BLOCK: u64 = 256;
const WRITE_BLOCKS: u64 = 16;
const CYCLES: u32 = 1000;

fn word(tag: u64, b: u64, j: u64) -> u64 {
    (tag << 56) | ((u64::from(SEED) & 0xffff) << 40) | ((b & 0xff_ffff) << 16) | (j & 0xffff)
}

fn blocks(first: u64, n: u64, tag: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n as usize * BLOCK);
    for b in first..first + n {
        for j in 0..(BLOCK / 8) as u64 {
            v.extend_from_slice(&word(tag, b, j).to_le_bytes());
        }
    }
    v
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn pv_suite_passes_through_dev_vuring_and_the_host_sees_its_writes() {
    if skip_without_kvm() {
        return;
    }
    let dir = TempDir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pv-{}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let rw = dir.0.join("backend0.img");
    let ro = dir.0.join("backend1.img");
    let mut image = blocks(0, READ_BLOCKS, 0x48);
    image.resize(((WRITE_BLOCK + WRITE_BLOCKS) as usize) * BLOCK, 0);
    std::fs::write(&rw, &image).unwrap();
    let ro_image = blocks(0, READ_BLOCKS, 0x48);
    std::fs::write(&ro, &ro_image).unwrap();

    let run = boot(&[
        "--timeout",
        "900",
        "--timings",
        "--uring",
        "rings=80",
        "--uring-backend",
        &format!("path={},direct=on", rw.display()),
        "--uring-backend",
        &format!("path={},readonly=on", ro.display()),
        "--cmdline",
        &format!(
            "-- /bin/sh -c \"/bin/pv-suite --seed {SEED} --read-blocks {READ_BLOCKS} \
             --write-block {WRITE_BLOCK} --write-blocks {WRITE_BLOCKS} && \
             /bin/pv-suite --seed {SEED} --read-blocks {READ_BLOCKS} --cycles {CYCLES}\""
        ),
    ]);
    // Two summaries: the whole suite, then the create/destroy cycles.
    let summaries: Vec<&str> = run
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.contains(" passed, ") && l.contains(" failed"))
        .collect();
    run.check(
        summaries.len() == 2,
        "pv-suite must print two summary lines (suite, cycles)",
    );
    let passed = |l: &str| -> u32 {
        l.split(" passed")
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    run.check(
        summaries.iter().all(|l| l.contains(" 0 failed")),
        "every pv-suite case must pass",
    );
    run.check(
        passed(summaries[0]) >= 40,
        "the whole suite (data, clone, table, hostile cases) must have run",
    );
    run.check(
        !run.stdout.lines().any(|l| l.starts_with("SKIP ")),
        "no case may be skipped (80 ring slots are enough for the 64-ring pool)",
    );
    run.check(run.status == Some(0), "pv-suite must exit 0");

    let after = std::fs::read(&rw).unwrap();
    let start = WRITE_BLOCK as usize * BLOCK;
    let written = &after[start..start + WRITE_BLOCKS as usize * BLOCK];
    run.check(
        written == blocks(WRITE_BLOCK, WRITE_BLOCKS, 0x47).as_slice(),
        "the guest's WRITE_FIXED blocks must be in the backend file",
    );
    run.check(
        after[..start] == image[..start],
        "the host-written blocks must be unchanged",
    );
    run.check(
        std::fs::read(&ro).unwrap() == ro_image,
        "the read-only backend must be unchanged",
    );
    let pinned = run.timings()["pinned_at_exit_bytes"].as_u64();
    run.check(
        pinned == Some(0),
        "after every ring is destroyed the VMM must pin no memory (VmPin 0)",
    );
}
