//! `ringvisor run --file`: host files in the guest with no image build.
//!
//! One boot runs a dynamically linked program of a Debian package the
//! project does not build (`jq`, which needs libjq, libonig, libm and libc
//! through the x86-64 loader; scripts/test-all.sh installs it) on a JSON
//! file from a `--file` directory, and lists what else arrived. The error
//! cases stop before the guest starts.

mod common;

use std::path::{Path, PathBuf};

use common::{boot, skip_without_kvm, token};

const BOOT_TIMEOUT_SECS: &str = "400";
/// The Debian program (package `jq`).
const JQ: &str = "/usr/bin/jq";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The jq program, or a clear failure naming the package to install.
fn jq() -> &'static str {
    assert!(
        Path::new(JQ).is_file(),
        "{JQ} is missing: install the Debian package jq (scripts/test-all.sh does: \
         apt-get install jq)"
    );
    JQ
}

#[test]
fn a_dynamically_linked_debian_program_runs_from_the_command_line() {
    if skip_without_kvm() {
        return;
    }
    let jq = jq();
    let t = token();
    let dir = TempDir::new("data");
    std::fs::create_dir_all(dir.0.join("sub")).unwrap();
    std::fs::write(
        dir.0.join("sub/in.json"),
        format!(r#"{{"t":"{t}","a":[1,2,3]}}"#),
    )
    .unwrap();
    std::os::unix::fs::symlink("sub/in.json", dir.0.join("link.json")).unwrap();

    // The guest: jq (through the symlink the directory brought) prints the
    // token and the sum; then the libraries the loader found.
    // (No double quotes inside: the kernel's command line only groups.)
    let script =
        "/usr/bin/jq -r --arg eq = '.t + $eq + (.a | add | tostring)' /srv/data/link.json \
                  && echo libs: $(ls /usr/lib/x86_64-linux-gnu) && /usr/bin/jq --version";
    let run = boot(&[
        "--timeout",
        BOOT_TIMEOUT_SECS,
        "--file",
        jq,
        "--file",
        &format!("{}:/srv/data", dir.0.display()),
        "--cmdline",
        &format!("-- /bin/sh -c \"{script}\""),
    ]);
    run.check(run.status == Some(0), "the guest's jq must exit 0");
    run.check(
        run.stdout.lines().any(|l| l.trim_end() == format!("{t}=6")),
        "jq must print the token and the sum (6) of the JSON file",
    );
    let libs = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("libs: "))
        .unwrap_or_default()
        .to_string();
    for lib in ["libjq.so.1", "libonig.so.5", "libm.so.6", "libc.so.6"] {
        run.check(
            libs.split_whitespace().any(|l| l == lib),
            &format!("{lib} must be in the guest's /usr/lib/x86_64-linux-gnu"),
        );
    }
    run.check(
        run.stdout.lines().any(|l| l.starts_with("jq-1.")),
        "jq --version must print its version",
    );
}

#[test]
fn bad_files_are_clear_errors_before_the_guest_starts() {
    if skip_without_kvm() {
        return;
    }
    let jq = jq();
    let dir = TempDir::new("errors");
    // `fails(args, words)`: exit status 1, one error line naming `words`,
    // and no guest console.
    let fails = |args: &[&str], words: &[&str]| {
        let run = boot(args);
        let errors: Vec<_> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("ringvisor: error:"))
            .collect();
        run.check(run.status == Some(1), "a bad --file must exit 1");
        run.check(errors.len() == 1, "exactly one error line");
        for w in words {
            run.check(errors[0].contains(w), &format!("the error must name {w}"));
        }
        run.check(
            !run.stdout.contains("rv-init"),
            "the guest must not have started",
        );
    };

    fails(&["--file", "/no/such/file"], &["/no/such/file"]);

    // Two --file entries on one guest path.
    fails(
        &[
            "--file",
            &format!("{jq}:/opt/x"),
            "--file",
            "/etc/hostname:/opt/x",
        ],
        &["/opt/x", "/etc/hostname:/opt/x"],
    );

    // A path the base initramfs holds (busybox's /bin/sh).
    let initramfs = common::image().initramfs.display().to_string();
    fails(
        &["--file", "/etc/hostname:/bin/sh"],
        &["/bin/sh", &initramfs],
    );

    // A library that cannot be found: a copy of jq that needs libjq under
    // another name of the same length (the string table stays valid).
    let mut data = std::fs::read(jq).unwrap();
    let at = data
        .windows(11)
        .position(|w| w == b"libjq.so.1\0")
        .expect("jq needs libjq.so.1");
    data[at..at + 10].copy_from_slice(b"libnq.so.1");
    let copy = dir.0.join("jq-broken");
    std::fs::write(&copy, &data).unwrap();
    let copy = copy.display().to_string();
    fails(
        &["--file", &format!("{copy}:/bin/jq-broken")],
        &["libnq.so.1", &copy],
    );
}
