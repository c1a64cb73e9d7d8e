//! A disk with a file system: the host makes an ext4 image with mkfs.ext4
//! (e2fsprogs; scripts/test-all.sh installs it) holding a file; one boot
//! mounts it with `rv.mount=/dev/vda:/mnt` (rv-init), reads the host's file,
//! and writes a new one with in-guest io_uring (WRITE_FIXED from a
//! registered buffer, O_DIRECT: `blk-io --write-file`); after the guest
//! exits the host reads that file back with `debugfs` (no mount, no loop
//! device) and checks the file system with `e2fsck -n`. A second boot
//! checks that a mount that fails stops the workload (status 125).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{boot, skip_without_kvm, token};

const BOOT_TIMEOUT_SECS: &str = "400";
const BLOCK: usize = 4096;
/// Blocks the guest writes (256 KiB).
const BLOCKS: u64 = 64;

/// Word `j` of block `b`: blk-io's `file_word`.
fn file_word(b: u64, j: u64) -> u64 {
    0x4649_4c45_0000_0000 | (b << 16) | j
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An e2fsprogs tool, from PATH or the sbin directories (not in a
/// non-root PATH), or a failure naming the package.
fn e2fs_tool(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "{name} is missing: install the Debian package e2fsprogs \
             (scripts/test-all.sh does: apt-get install e2fsprogs)"
        )
    })
}

fn run_tool(tool: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}\n{}",
        tool.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn guest_writes_a_file_on_an_ext4_disk_with_o_direct_io_uring() {
    if skip_without_kvm() {
        return;
    }
    let (mkfs, debugfs, e2fsck) = (
        e2fs_tool("mkfs.ext4"),
        e2fs_tool("debugfs"),
        e2fs_tool("e2fsck"),
    );
    let dir = TempDir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("disk-fs-{}", std::process::id())),
    );
    let content = dir.0.join("content");
    std::fs::create_dir_all(&content).unwrap();
    let t = token();
    std::fs::write(content.join("hello.txt"), format!("{t}\n")).unwrap();
    let img = dir.0.join("ext4.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let img_s = img.display().to_string();
    // 4 KiB blocks (O_DIRECT at 4 KiB alignment), populated from `content`.
    run_tool(
        &mkfs,
        &[
            "-q",
            "-F",
            "-b",
            "4096",
            "-d",
            &content.display().to_string(),
            &img_s,
        ],
    );

    let run = boot(&[
        "--timeout",
        BOOT_TIMEOUT_SECS,
        "--disk",
        &format!("path={img_s}"),
        "--cmdline",
        &format!(
            "rv.mount=/dev/vda:/mnt -- /bin/sh -c \"cat /mnt/hello.txt && \
             /bin/blk-io --write-file /mnt/out.bin --blocks {BLOCKS}\""
        ),
    ]);
    run.check(run.status == Some(0), "the guest must exit 0");
    run.check(
        run.stdout
            .contains("rv-init: mounted /dev/vda on /mnt (ext4)"),
        "rv-init must mount the disk",
    );
    run.check(
        run.stdout.lines().any(|l| l.trim_end() == t),
        "the guest must read the file the host put in the image",
    );
    run.check(
        run.stdout.contains(&format!(
            "blk-io: file /mnt/out.bin: {BLOCKS} blocks written and read back"
        )),
        "blk-io must write and read back the file",
    );

    // The host reads the guest's file from the image.
    let out = run_tool(&debugfs, &["-R", "cat /out.bin", &img_s]);
    let data = out.stdout;
    assert_eq!(
        data.len(),
        BLOCKS as usize * BLOCK,
        "size of /out.bin read by debugfs"
    );
    for (i, w) in data.chunks_exact(8).enumerate() {
        let (b, j) = ((i / (BLOCK / 8)) as u64, (i % (BLOCK / 8)) as u64);
        let got = u64::from_le_bytes(w.try_into().unwrap());
        assert_eq!(got, file_word(b, j), "/out.bin block {b} word {j}");
    }
    // rv-init unmounted it: a clean file system, nothing left in the journal.
    run_tool(&e2fsck, &["-f", "-n", &img_s]);
}

#[test]
fn a_mount_that_fails_stops_the_workload_with_status_125() {
    if skip_without_kvm() {
        return;
    }
    // No disk at all: /dev/vda does not exist in the guest.
    let t = token();
    let run = boot(&[
        "--timeout",
        BOOT_TIMEOUT_SECS,
        "--cmdline",
        &format!("rv.mount=/dev/vda:/mnt -- /bin/sh -c \"echo {t}\""),
    ]);
    run.check(
        run.status == Some(125),
        "a failed rv.mount must end with 125",
    );
    run.check(
        run.stdout
            .contains("rv-init: mount /dev/vda on /mnt (ext4): No such file or directory"),
        "rv-init must say which mount failed and why",
    );
    run.check(
        !run.stdout.lines().any(|l| l.trim_end() == t),
        "the workload must not run without its disk",
    );
}
