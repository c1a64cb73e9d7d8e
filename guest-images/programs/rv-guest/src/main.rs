//! Every ringvisor guest program in one static binary, chosen by the name it
//! is run as (`argv[0]`), like busybox. Each static Rust program carries its
//! own copy of std and glibc (about 1.1 MiB); sharing one keeps the
//! initramfs small, and on nested PVM every initramfs byte costs boot time.
//!
//! `rv-guest --applets` lists the names build.sh links to this binary.

use std::process::ExitCode;

/// The programs, by the name they are run as.
const APPLETS: &[&str] = &[
    "init",
    "rv-init",
    "demo",
    "clone-suite",
    "ring-pool",
    "blk-io",
    "pv-suite",
    "pv-bench",
];

fn run(name: &str) -> Option<ExitCode> {
    Some(match name {
        "init" | "rv-init" => {
            rv_init::main();
            ExitCode::SUCCESS
        }
        "demo" => {
            demo::main();
            ExitCode::SUCCESS
        }
        "clone-suite" => clone_suite::main(),
        "ring-pool" => ring_pool::main(),
        "blk-io" => {
            blk_io::main();
            ExitCode::SUCCESS
        }
        "pv-suite" => pv_suite::main(),
        "pv-bench" => pv_bench::main(),
        _ => return None,
    })
}

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(code) = run(&name) {
        return code;
    }
    if std::env::args().nth(1).as_deref() == Some("--applets") {
        for applet in APPLETS.iter().filter(|a| **a != "init") {
            println!("{applet}");
        }
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "rv-guest: run me as one of: {} (e.g. through a symlink); `rv-guest --applets` lists them",
        APPLETS.join(", ")
    );
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_not_dispatched() {
        assert!(run("rv-guest").is_none());
        assert!(run("").is_none());
    }
}
