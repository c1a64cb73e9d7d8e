//! The `ringvisor-bench` binary: its command line (clap), handed to the
//! `bench` library. `ringvisor bench ARGS` runs it with the same ARGS.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use vmm::config::{ConfigError, MemoryConfig};

/// Measure registration latency from the guest (registering again versus
/// cloning, in-guest and through the pv device), I/O (host, virtio-blk, pv
/// rings) and boot, against host-native io_uring in the same run; writes
/// results.json and SVG/PNG charts.
///
/// Guests run under the `ringvisor` binary beside this one (or
/// $RINGVISOR_BIN). Example: ringvisor-bench --suite registration --quick
/// --out /tmp/bench
#[derive(Parser, Debug)]
#[command(name = "ringvisor-bench", version, about, long_about)]
struct BenchArgs {
    /// More log output on stderr (-v: info, -vv: debug). RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Which suite to run.
    #[arg(long, value_enum, default_value_t = Suite::All)]
    suite: Suite,
    /// The smallest points only (a few minutes).
    #[arg(long)]
    quick: bool,
    /// Boots of the boot suite (1 with --quick).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    runs: u16,
    /// Guest RAM of the boot suite's guests (see `ringvisor run --memory`).
    #[arg(long, default_value = "size=256M,hugepages=2M", value_parser = validate_memory)]
    memory: String,
    /// Write results.json and the charts into this directory.
    #[arg(long, value_name = "DIR", default_value = "bench-results")]
    out: PathBuf,
    /// Never raise the host's 2 MiB hugepage pool: without enough free
    /// hugepages the host 2 MiB registration points are skipped (and
    /// results.json says why). By default, as root, the bench raises
    /// nr_hugepages for those points and restores it right after.
    #[arg(long)]
    no_reserve_hugepages: bool,
    /// Leave the io suite's threads where the scheduler puts them. By
    /// default a short probe finds the CPU that takes the target disk's
    /// interrupts: SQ threads run there, vCPUs and the host reference's
    /// submitting thread on the quietest other CPU (results.json's
    /// `placement` says what was chosen, or why nothing was).
    #[arg(long)]
    no_pin: bool,
}

/// Benchmark suites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    /// Registering a buffer pool again versus cloning it: host, ring-pool
    /// in a guest, pv-bench through /dev/vuring.
    Registration,
    /// 4 KiB random O_DIRECT reads and writes at QD1 and QD32: host
    /// io_uring (plain and SQPOLL), guest virtio-blk, guest pv-uring rings
    /// (doorbell and SQPOLL).
    Io,
    /// Boot time, VMM share, VMM memory overhead.
    Boot,
    /// Every suite.
    All,
}

/// Checks a `--memory` value that is passed on to child VMMs verbatim.
fn validate_memory(s: &str) -> Result<String, String> {
    s.parse::<MemoryConfig>()
        .map(|_| s.to_string())
        .map_err(|e: ConfigError| e.to_string())
}

/// Parses the command line; usage errors print one line and exit 2.
fn parse_cli() -> BenchArgs {
    match BenchArgs::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid command line");
            eprintln!("ringvisor-bench: {first} (see `ringvisor-bench --help`)");
            std::process::exit(2);
        }
    }
}

fn main() -> ExitCode {
    let args = parse_cli();
    vmm::logging::init(args.verbose);
    let suites = match args.suite {
        Suite::Registration => vec![bench::Suite::Registration],
        Suite::Io => vec![bench::Suite::Io],
        Suite::Boot => vec![bench::Suite::Boot],
        Suite::All => vec![
            bench::Suite::Registration,
            bench::Suite::Io,
            bench::Suite::Boot,
        ],
    };
    match bench::run(bench::Options {
        suites,
        out: args.out,
        quick: args.quick,
        runs: usize::from(args.runs),
        memory: args.memory,
        reserve_hugepages: !args.no_reserve_hugepages,
        pin: !args.no_pin,
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringvisor-bench: bench failed: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        BenchArgs::command().debug_assert();
    }

    #[test]
    fn bad_options_are_usage_errors() {
        let ok =
            BenchArgs::try_parse_from(["ringvisor-bench", "--suite", "io", "--quick"]).unwrap();
        assert_eq!(ok.suite, Suite::Io);
        assert!(ok.quick);
        for argv in [
            &["ringvisor-bench", "--suite", "disk"][..],
            &["ringvisor-bench", "--runs", "0"],
            &["ringvisor-bench", "--memory", "size=huge"],
        ] {
            assert!(BenchArgs::try_parse_from(argv).is_err(), "{argv:?} parsed");
        }
    }
}
