//! virtio-blk end to end: one boot attaches a pattern-filled disk with
//! O_DIRECT and a read-only disk, runs the guest program `blk-io` (io_uring
//! READ_FIXED/WRITE_FIXED on three rings sharing cloned buffers), and checks
//! on the host what the guest wrote and that the read-only disk is unchanged.
//! The disk layout is shared with guest-images/programs/blk-io.

mod common;

use std::path::PathBuf;

use common::{boot, skip_without_kvm};

const BLOCK: usize = 4096;
const HOST_BLOCKS: u64 = 256;
const WRITE_START: u64 = 256;
const WRITE_BLOCKS: u64 = 16;
const RINGS: u64 = 3;
const BOOT_TIMEOUT_SECS: &str = "400";

fn host_word(b: u64, j: u64) -> u64 {
    0x5256_4800_0000_0000 | (b << 16) | j
}

fn guest_word(b: u64, j: u64) -> u64 {
    0x4755_4553_0000_0000 | (b << 16) | j
}

fn blocks(first: u64, n: u64, word: fn(u64, u64) -> u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n as usize * BLOCK);
    for b in first..first + n {
        for j in 0..(BLOCK / 8) as u64 {
            v.extend_from_slice(&word(b, j).to_le_bytes());
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
fn guest_io_uring_on_virtio_blk_direct_and_read_only_disks() {
    if skip_without_kvm() {
        return;
    }
    // Under the target directory: a real file system (O_DIRECT-capable).
    let dir = TempDir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("blk-{}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let rw = dir.0.join("rw.img");
    let ro = dir.0.join("ro.img");
    let mut image = blocks(0, HOST_BLOCKS, host_word);
    image.resize(4 << 20, 0);
    std::fs::write(&rw, &image).unwrap();
    let ro_image = blocks(0, HOST_BLOCKS, host_word);
    std::fs::write(&ro, &ro_image).unwrap();

    let run = boot(&[
        "--cpus",
        "2",
        "--timeout",
        BOOT_TIMEOUT_SECS,
        "--disk",
        &format!("path={},direct=on", rw.display()),
        "--disk",
        &format!("path={},readonly=on", ro.display()),
        "--cmdline",
        &format!("-- /bin/blk-io --dev /dev/vda --ro-dev /dev/vdb --rings {RINGS}"),
    ]);
    run.check(run.status == Some(0), "blk-io must exit 0");
    // Every check blk-io makes, by name, each passed exactly once: a check
    // that was dropped or never reached fails here, not only one that
    // failed. The clone checks are what the header promises: rings 1.. got
    // their buffers by IORING_REGISTER_CLONE_BUFFERS, not by registering.
    let mut want = vec!["IORING_REGISTER_BUFFERS on ring 0".to_string()];
    for r in 1..RINGS {
        want.push(format!(
            "ring {r}: IORING_REGISTER_CLONE_BUFFERS from ring 0"
        ));
        want.push(format!(
            "ring {r}: holds the cloned table (registering again: EBUSY)"
        ));
    }
    for r in 0..RINGS {
        for what in [
            "READ_FIXED of the host pattern",
            "WRITE_FIXED",
            "fsync",
            "read back what it wrote",
        ] {
            want.push(format!("ring {r}: {what}"));
        }
    }
    for what in [
        "GET_ID serial of vda",
        "/sys/block/vdb/ro is 1",
        "read-only disk refuses writes",
        "read-only disk holds the host pattern",
    ] {
        want.push(what.to_string());
    }
    let lines: Vec<&str> = run.stdout.lines().map(str::trim_end).collect();
    let mut passed: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("blk-io: PASS "))
        .map(String::from)
        .collect();
    passed.sort();
    want.sort();
    run.check(
        passed == want,
        &format!("blk-io must pass exactly these checks:\n{want:#?}\npassed:\n{passed:#?}"),
    );
    run.check(
        lines.contains(&format!("blk-io: {} passed, 0 failed", want.len()).as_str()),
        &format!("blk-io must end with `{} passed, 0 failed`", want.len()),
    );
    run.check(
        lines.contains(
            &format!(
                "blk-io: {RINGS} rings, buffers cloned to {} of {}",
                RINGS - 1,
                RINGS - 1
            )
            .as_str(),
        ),
        "every ring but the first must have its buffers cloned",
    );

    let after = std::fs::read(&rw).unwrap();
    assert_eq!(after.len(), 4 << 20, "the disk keeps its size");
    assert!(
        after[..HOST_BLOCKS as usize * BLOCK] == image[..HOST_BLOCKS as usize * BLOCK],
        "the host pattern must be untouched"
    );
    let start = WRITE_START as usize * BLOCK;
    let end = start + (RINGS * WRITE_BLOCKS) as usize * BLOCK;
    assert!(
        after[start..end] == blocks(WRITE_START, RINGS * WRITE_BLOCKS, guest_word)[..],
        "every ring's writes must be on the host file"
    );
    assert!(
        after[end..].iter().all(|&b| b == 0),
        "nothing beyond the guest's region may be written"
    );
    assert!(
        std::fs::read(&ro).unwrap() == ro_image,
        "the read-only disk must be unchanged"
    );
}
