//! The `ringvisor` binary: its command line (clap), handed to the `vmm`
//! library.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use vmm::config::{self, MemoryConfig, PvmMode, VmConfig};
use vmm::{guest_files, guest_image, guest_profile, outcome, run, snapshot};

/// The demo's workload: the ring-pool registration benchmark (register
/// again versus IORING_REGISTER_CLONE_BUFFERS, 8 rings sharing a 16 MiB pool
/// of 2 MiB guest hugepages), small enough for a nested-PVM guest.
const DEMO_CMDLINE: &str =
    "hugepages=16 rv.workload=ring-pool rv.pool.rings=8 rv.pool.size=16M rv.pool.page=2M";

/// ringvisor boots a Linux guest under KVM and runs a workload in it.
///
/// The guest's console is this process's stdout (and stdin). The process
/// exits with the guest workload's exit status, or with 120 (guest kernel
/// panic), 121 (triple fault), 122 (an exit the VMM cannot handle), 124
/// (--timeout expired), 1 (VMM error) or 2 (bad command line).
#[derive(Parser, Debug)]
#[command(name = "ringvisor", version, about, long_about)]
struct Cli {
    /// More log output on stderr (-v: info, -vv: debug). RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: boxing `Run` would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a guest kernel and run it until it exits.
    ///
    /// Example: ringvisor run --kernel vmlinux --initramfs initramfs.cpio --cmdline 'rv.workload=demo'
    Run(RunArgs),
    /// Boot a guest until its /init is ready for a workload, then write a
    /// snapshot of it to DIR for `run --restore DIR` (docs/snapshot.md).
    ///
    /// Example: ringvisor snapshot --out /tmp/snap --kernel vmlinux --initramfs initramfs.cpio
    Snapshot(SnapshotArgs),
    /// Build the default guest (first use only) and boot it with the default
    /// workload (the ring-pool registration benchmark), printing what it
    /// measured.
    Demo(DemoArgs),
    /// Measure registration latency from the guest (registering again
    /// versus cloning, in-guest and through the pv device), I/O (host,
    /// virtio-blk, pv rings) and boot, against host-native io_uring in the
    /// same run; writes results.json and SVG/PNG charts. Runs the
    /// `ringvisor-bench` binary beside this one (`cargo build --release -p
    /// bench`) with the same arguments.
    ///
    /// Example: ringvisor bench --suite registration --quick --out /tmp/bench
    Bench(BenchArgs),
}

/// `ringvisor bench`'s arguments, all handed to `ringvisor-bench`.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
struct BenchArgs {
    /// The arguments of `ringvisor-bench` (see `ringvisor bench --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// Options shared by every command that boots a VM.
#[derive(Args, Debug)]
struct MachineArgs {
    /// Number of vCPUs (1 to 8).
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Guest RAM: size=SIZE[,hugepages=off|2M|1G|required]. Without enough
    /// free host hugepages, 2M and 1G fall back to ordinary memory with a
    /// warning; `required` makes that an error.
    #[arg(long, default_value = "size=256M,hugepages=2M", value_parser = parse_memory)]
    memory: MemoryConfig,
    /// Kill the guest after this many seconds (exit status 124).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Nested-PVM compatibility measures: auto detects /sys/module/kvm_pvm.
    #[arg(long, value_enum, default_value_t = PvmMode::Auto)]
    pvm: PvmMode,
}

#[derive(Args, Debug)]
struct SnapshotArgs {
    /// The snapshot directory (created; a snapshot there is replaced).
    #[arg(long, value_name = "DIR", required_unless_present = "cached")]
    out: Option<PathBuf>,
    /// Use the cached snapshot of these options (under the ringvisor cache,
    /// like the guest image), taking it first if missing, and print its
    /// directory: `run --restore "$(ringvisor snapshot --cached ...)"`.
    #[arg(long, conflicts_with = "out")]
    cached: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Guest kernel: an uncompressed ELF vmlinux (preferred) or a bzImage.
    #[arg(long, value_name = "PATH", required_unless_present = "restore")]
    kernel: Option<PathBuf>,
    /// Restore the snapshot in DIR (`ringvisor snapshot`) instead of
    /// booting: --cmdline then takes only `-- WORKLOAD` or
    /// `rv.workload=NAME`; --disk and --uring-backend, when given, replace
    /// the snapshot's files (same count, sizes and read-only modes).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["kernel", "initramfs", "files"])]
    restore: Option<PathBuf>,
    /// Initramfs (uncompressed cpio is fastest to unpack).
    #[arg(long, value_name = "PATH")]
    initramfs: Option<PathBuf>,
    /// A host file or directory to add to the guest (repeatable), at GUEST
    /// or at the same path. A dynamically linked program brings its ELF
    /// interpreter and libraries, found as the host's loader finds them.
    #[arg(long = "file", value_name = "HOST[:GUEST]", value_parser = parse_file)]
    files: Vec<guest_files::FileSpec>,
    /// Extra kernel command line, appended to ringvisor's own. Arguments
    /// after ` -- ` go to the guest's /init (the workload command).
    #[arg(
        long,
        value_name = "STR",
        default_value = "",
        allow_hyphen_values = true
    )]
    cmdline: String,
    #[command(flatten)]
    machine: MachineArgs,
    /// A virtio-blk disk: path=FILE[,readonly=on][,direct=on]. Repeatable;
    /// the guest sees /dev/vda, /dev/vdb, ... in this order.
    #[arg(long = "disk", value_name = "SPEC", value_parser = parse_disk)]
    disks: Vec<config::DiskConfig>,
    /// The paravirtual io_uring device (/dev/vuring in the guest), with N
    /// ring slots (default 32, at most 256). polled=P: at most P rings at
    /// once may have a polled submitter, a host thread that may spin on a
    /// CPU (default 1; 0 offers none). max-registered=SIZE: the most bytes
    /// the guest's rings may have registered at once (default: the guest's
    /// RAM). sq-cpu=C binds the polled submitters and the device's worker
    /// to host CPU C (e.g. the CPU that takes the backend disk's
    /// interrupts, with the vCPUs kept off it by --vcpu-affinity).
    /// arena=SIZE[,page=2M|1G|required|1G-required]: a buffer arena of
    /// host hugepages that guest rings register from in O(1).
    #[arg(long, value_name = "rings=N,polled=P,max-registered=SIZE,sq-cpu=C,arena=SIZE,page=P", num_args = 0..=1,
          default_missing_value = "", value_parser = parse_uring)]
    uring: Option<config::UringOptions>,
    /// A host file the pv-uring rings reach as fixed file 0, 1, ...:
    /// path=FILE[,readonly=on][,direct=on]. Repeatable (at most 16);
    /// implies --uring.
    #[arg(long = "uring-backend", value_name = "SPEC", value_parser = parse_uring_backend)]
    uring_backends: Vec<config::DiskConfig>,
    /// Restrict every vCPU thread to these host CPUs (the kernel's list
    /// syntax: 1, 0-3, 0,2-3), e.g. to keep a polling guest off the CPU
    /// that takes the backend disk's interrupts. Each CPU must be one
    /// ringvisor may run on.
    #[arg(long, value_name = "CPULIST", value_parser = parse_vcpu_affinity)]
    vcpu_affinity: Option<CpuList>,
    /// Print boot timings, the VMM's share of vCPU time, its memory overhead
    /// and what PVM compatibility handled (on stderr) at exit.
    #[arg(long)]
    timings: bool,
    /// Sample every vCPU's instruction pointer HZ times a second (default
    /// 997) and write, when the run ends, where the guest spent its time:
    /// guest user mode, or the guest kernel function, named from the
    /// symbols of VMLINUX (default: --kernel; a restore needs symbols=)
    #[arg(long, value_name = "FILE[,hz=HZ][,symbols=VMLINUX]", value_parser = parse_guest_profile)]
    guest_profile: Option<guest_profile::ProfileConfig>,
}

#[derive(Args, Debug)]
struct DemoArgs {
    #[command(flatten)]
    machine: MachineArgs,
    /// Boot the guest instead of restoring the cached snapshot of the demo
    /// guest (taken on first use).
    #[arg(long)]
    cold: bool,
}

fn parse_disk(s: &str) -> Result<config::DiskConfig, String> {
    s.parse().map_err(|e: config::ConfigError| e.to_string())
}

fn parse_file(s: &str) -> Result<guest_files::FileSpec, String> {
    s.parse()
        .map_err(|e: guest_files::FilesError| e.to_string())
}

fn parse_guest_profile(s: &str) -> Result<guest_profile::ProfileConfig, String> {
    guest_profile::ProfileConfig::parse(s).map_err(|e| e.to_string())
}

fn parse_uring(s: &str) -> Result<config::UringOptions, String> {
    config::parse_uring(s).map_err(|e| e.to_string())
}

/// Host CPU numbers; the alias keeps clap from taking a `Vec` argument for a
/// repeatable one.
type CpuList = Vec<usize>;

fn parse_vcpu_affinity(s: &str) -> Result<CpuList, String> {
    config::parse_vcpu_affinity(s).map_err(|e| e.to_string())
}

fn parse_uring_backend(s: &str) -> Result<config::DiskConfig, String> {
    config::parse_uring_backend(s).map_err(|e| e.to_string())
}

fn parse_memory(s: &str) -> Result<MemoryConfig, String> {
    s.parse().map_err(|e: config::ConfigError| e.to_string())
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("invalid timeout {s:?}: expected seconds, e.g. 30 or 2.5"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("invalid timeout {s:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses the command line; usage errors print one line and exit 2. The
/// matches say which options were given (not defaulted).
fn parse_cli() -> (Cli, clap::ArgMatches) {
    use clap::{CommandFactory, FromArgMatches};
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    match parsed {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => usage_error(&e.render().to_string()),
    }
}

/// Prints the first line of a usage error and exits 2.
fn usage_error(rendered: &str) -> ! {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut first = lines.next().unwrap_or("invalid command line").to_string();
    // "the following required arguments were not provided:" names them on
    // the next line.
    if first.ends_with(':') {
        if let Some(next) = lines.next() {
            first = format!("{first} {next}");
        }
    }
    eprintln!("ringvisor: {first} (see `ringvisor --help`)");
    std::process::exit(2);
}

/// The VM configuration of `run` or `snapshot` options (booting).
fn boot_config(args: RunArgs) -> VmConfig {
    VmConfig {
        kernel: args.kernel.unwrap_or_default(),
        initramfs: args.initramfs,
        files: args.files,
        cmdline: args.cmdline,
        cpus: args.machine.cpus,
        memory: args.machine.memory,
        timeout: args.machine.timeout,
        pvm: args.machine.pvm,
        timings: args.timings,
        disks: args.disks,
        uring: (args.uring.is_some() || !args.uring_backends.is_empty()).then(|| {
            let options = args.uring.unwrap_or_default();
            config::UringConfig {
                rings: options.rings,
                polled: options.polled,
                max_registered: options.max_registered,
                sq_cpu: options.sq_cpu,
                backends: args.uring_backends,
                arena: options.arena,
            }
        }),
        vcpu_affinity: args.vcpu_affinity,
        guest_profile: args.guest_profile,
    }
}

/// `ringvisor snapshot`: boots with `rv.snapshot=1` and no workload.
fn snapshot_command(args: SnapshotArgs, started: Instant) -> ExitCode {
    if args.run.restore.is_some() {
        usage_error("error: snapshot takes no --restore");
    }
    let cmdline = args.run.cmdline.trim();
    if cmdline == "--" || cmdline.starts_with("-- ") || cmdline.contains(" -- ") {
        usage_error(
            "error: a snapshot is taken before any workload runs: give the workload to \
             `run --restore DIR --cmdline '-- WORKLOAD'`, not to snapshot",
        );
    }
    if args.cached && !args.run.files.is_empty() {
        usage_error("error: snapshot --cached takes no --file (the cache is keyed by kernel, initramfs and command line): use --out DIR");
    }
    if args.cached {
        let machine = snapshot::cache::CachedMachine {
            kernel: args.run.kernel.unwrap_or_default(),
            initramfs: args.run.initramfs,
            cmdline: args.run.cmdline,
            cpus: args.run.machine.cpus,
            memory: args.run.machine.memory.size,
            pvm: args.run.machine.pvm,
        };
        let dir = std::env::current_exe()
            .map_err(|e| format!("finding this program: {e}"))
            .and_then(|exe| {
                snapshot::cache::ensure(&exe, &machine)
                    .map(|(dir, _)| dir)
                    .map_err(|e| e.to_string())
            });
        return match dir {
            Ok(dir) => {
                println!("{}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringvisor: error: {e}");
                ExitCode::from(1)
            }
        };
    }
    let out = args.out.unwrap_or_default();
    let mut config = boot_config(args.run);
    config.cmdline = format!(
        "{} {} {}",
        snapshot::SNAPSHOT_CLOCKSOURCE,
        config.cmdline,
        snapshot::SNAPSHOT_PARAM
    );
    boot(config, started, run::Mode::Snapshot { out })
}

/// `ringvisor demo` from the cached snapshot of the demo guest (taken on
/// first use); the restored guest runs the workload of its command line.
fn demo_restored(image: &guest_image::GuestImage, args: &DemoArgs) -> ExitCode {
    let machine = snapshot::cache::CachedMachine {
        kernel: image.kernel.clone(),
        initramfs: Some(image.smallest_initramfs().to_path_buf()),
        cmdline: DEMO_CMDLINE.into(),
        cpus: args.machine.cpus,
        memory: args.machine.memory.size,
        pvm: args.machine.pvm,
    };
    let loaded = std::env::current_exe()
        .map_err(|e| format!("finding this program: {e}"))
        .and_then(|exe| snapshot::cache::ensure(&exe, &machine).map_err(|e| e.to_string()));
    let (dir, snap) = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ringvisor: error: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("ringvisor: restoring the demo guest from {}", dir.display());
    let request = snapshot::restore::RestoreRequest {
        timeout: args.machine.timeout,
        timings: true,
        ..Default::default()
    };
    let config = match snapshot::restore::config(&snap, &request) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringvisor: error: snapshot {}: {e}", dir.display());
            return ExitCode::from(1);
        }
    };
    boot(
        config,
        Instant::now(),
        run::Mode::Restore {
            snapshot: Box::new(snap),
            memory: dir.join(snapshot::MEMORY_FILE),
            command: Vec::new(),
        },
    )
}

/// `ringvisor run --restore DIR`.
fn restore_command(
    args: RunArgs,
    given: &clap::ArgMatches,
    dir: PathBuf,
    started: Instant,
) -> ExitCode {
    let given_by_user =
        |id: &str| given.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let command = match snapshot::restore::workload_command(&args.cmdline) {
        Ok(c) => c,
        Err(e) => usage_error(&format!("error: {e}")),
    };
    let snap = match snapshot::load(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringvisor: error: snapshot {}: {e}", dir.display());
            return ExitCode::from(1);
        }
    };
    let request = snapshot::restore::RestoreRequest {
        cpus: given_by_user("cpus").then_some(args.machine.cpus),
        memory_size: given_by_user("memory").then_some(args.machine.memory.size),
        disks: args.disks,
        uring: args.uring.is_some(),
        uring_backends: args.uring_backends,
        timeout: args.machine.timeout,
        timings: args.timings,
        vcpu_affinity: args.vcpu_affinity,
        guest_profile: args.guest_profile,
    };
    let config = match snapshot::restore::config(&snap, &request) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringvisor: error: snapshot {}: {e}", dir.display());
            return ExitCode::from(1);
        }
    };
    let memory = dir.join(snapshot::MEMORY_FILE);
    boot(
        config,
        started,
        run::Mode::Restore {
            snapshot: Box::new(snap),
            memory,
            command,
        },
    )
}

fn boot(config: VmConfig, started: Instant, mode: run::Mode) -> ExitCode {
    let config = match config.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringvisor: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match run::run_vm(&config, started, mode) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("ringvisor: error: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = &report.outcome;
    match outcome {
        outcome::Outcome::GuestExit(_) | outcome::Outcome::Reset => log::info!("{outcome}"),
        outcome::Outcome::Snapshot(what) => eprintln!("ringvisor: {what}"),
        _ => eprintln!("ringvisor: {outcome} (exit status {})", outcome.exit_code()),
    }
    if let Some(hint) = outcome.hint() {
        eprintln!("ringvisor: hint: {hint} (README: \"Bringing your own kernel\")");
    }
    if config.timings || log::log_enabled!(log::Level::Debug) {
        eprintln!("{}", report.timings.summary());
        eprintln!("RINGVISOR_TIMINGS {}", report.timings.to_json());
    }
    ExitCode::from(outcome.exit_code())
}

/// `ringvisor bench ARGS`: replaces this process with the `ringvisor-bench`
/// beside it, which runs its guests under this binary ($RINGVISOR_BIN).
fn exec_bench(verbose: u8, args: Vec<OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;

    let me = match std::env::current_exe() {
        Ok(me) => me,
        Err(e) => {
            eprintln!("ringvisor: error: finding this program's path: {e}");
            return ExitCode::from(1);
        }
    };
    let bench = me.with_file_name("ringvisor-bench");
    if !bench.is_file() {
        eprintln!(
            "ringvisor: the bench is a separate program and {} is missing: build it with `cargo build --release -p bench`",
            bench.display()
        );
        return ExitCode::from(1);
    }
    let err = std::process::Command::new(&bench)
        .args((0..verbose).map(|_| "-v"))
        .args(args)
        .env("RINGVISOR_BIN", &me)
        .exec();
    eprintln!("ringvisor: error: running {}: {err}", bench.display());
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let started = Instant::now();
    let (cli, matches) = parse_cli();
    vmm::logging::init(cli.verbose);
    match cli.command {
        Command::Run(mut args) => match args.restore.take() {
            Some(dir) => {
                let given = matches
                    .subcommand_matches("run")
                    .expect("the run subcommand matched");
                restore_command(args, given, dir, started)
            }
            None => boot(boot_config(args), started, run::Mode::Boot),
        },
        Command::Snapshot(args) => snapshot_command(args, started),
        Command::Bench(args) => exec_bench(cli.verbose, args.args),
        Command::Demo(args) => {
            let image = match guest_image::build_default() {
                Ok(image) => image,
                Err(e) => {
                    eprintln!("ringvisor: error: {e}");
                    return ExitCode::from(1);
                }
            };
            if !args.cold {
                return demo_restored(&image, &args);
            }
            eprintln!(
                "ringvisor: booting {} with {}",
                image.kernel.display(),
                image.smallest_initramfs().display()
            );
            boot(
                VmConfig {
                    initramfs: Some(image.smallest_initramfs().to_path_buf()),
                    files: Vec::new(),
                    kernel: image.kernel,
                    cmdline: DEMO_CMDLINE.into(),
                    cpus: args.machine.cpus,
                    memory: args.machine.memory,
                    timeout: args.machine.timeout,
                    pvm: args.machine.pvm,
                    timings: true,
                    disks: Vec::new(),
                    uring: None,
                    vcpu_affinity: None,
                    guest_profile: None,
                },
                // Time the boot, not the image build.
                Instant::now(),
                run::Mode::Boot,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_parses_every_option() {
        let cli = Cli::try_parse_from([
            "ringvisor",
            "run",
            "--kernel",
            "k",
            "--initramfs",
            "i",
            "--cmdline",
            "-- sh -c true",
            "--cpus",
            "2",
            "--memory",
            "size=1G,hugepages=required",
            "--timeout",
            "2.5",
            "--pvm",
            "off",
            "--timings",
            "--disk",
            "path=a.img",
            "--disk",
            "path=b.img,readonly=on,direct=on",
            "--file",
            "/usr/bin/jq",
            "--file",
            "data:/srv/data",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        assert_eq!(args.kernel, Some(PathBuf::from("k")));
        assert_eq!(args.cmdline, "-- sh -c true");
        assert_eq!(args.machine.cpus, 2);
        assert_eq!(args.machine.memory.size, 1 << 30);
        assert_eq!(args.machine.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(args.machine.pvm, PvmMode::Off);
        assert!(args.timings);
        assert_eq!(args.disks.len(), 2);
        assert_eq!(args.disks[0].path, PathBuf::from("a.img"));
        assert!(args.disks[1].readonly && args.disks[1].direct);
        assert_eq!(args.files.len(), 2);
        assert_eq!(args.files[1].guest.as_deref(), Some("/srv/data"));
        assert_eq!(args.uring, None);
        assert!(args.uring_backends.is_empty());
        assert_eq!(args.vcpu_affinity, None);
    }

    #[test]
    fn uring_options_parse() {
        let run = |extra: &[&str]| {
            let mut argv = vec!["ringvisor", "run", "--kernel", "k"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Command::Run(args)) => Ok(args),
                Ok(_) => panic!("not run"),
                Err(e) => Err(e),
            }
        };
        let a = run(&["--uring"]).unwrap();
        assert_eq!(a.uring.map(|u| u.rings), Some(32));
        let a = run(&["--uring", "--timings"]).unwrap();
        assert_eq!(a.uring.map(|u| u.rings), Some(32));
        assert!(a.timings);
        let a = run(&["--uring", "rings=8"]).unwrap();
        assert_eq!(a.uring.map(|u| u.rings), Some(8));
        let a = run(&["--uring", "rings=2,sq-cpu=1", "--vcpu-affinity", "0,2-3"]).unwrap();
        assert_eq!(
            a.uring,
            Some(config::UringOptions {
                rings: 2,
                sq_cpu: Some(1),
                ..config::UringOptions::default()
            })
        );
        assert_eq!(a.vcpu_affinity, Some(vec![0, 2, 3]));
        let a = run(&[
            "--uring-backend",
            "path=a",
            "--uring-backend",
            "path=b,readonly=on,direct=on",
        ])
        .unwrap();
        assert_eq!(a.uring, None);
        assert_eq!(a.uring_backends.len(), 2);
        assert!(a.uring_backends[1].readonly && a.uring_backends[1].direct);
        for bad in [
            &["--uring", "rings=0"][..],
            &["--uring", "rings=257"],
            &["--uring", "slots=4"],
            &["--uring", "rings=2,sq-cpu=x"],
            &["--uring", "rings=2,sq-cpu=0-1"],
            &["--vcpu-affinity", "1-0"],
            &["--vcpu-affinity", ""],
            &["--uring-backend", "readonly=on"],
            &["--uring-backend"],
        ] {
            assert!(run(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn malformed_options_are_usage_errors() {
        for argv in [
            &["ringvisor", "run"][..],
            &["ringvisor", "run", "--kernel", "k", "--bogus"],
            &["ringvisor", "run", "--kernel", "k", "--cpus", "many"],
            &["ringvisor", "run", "--kernel", "k", "--memory", "size=huge"],
            &["ringvisor", "run", "--kernel", "k", "--timeout", "-1"],
            &["ringvisor", "run", "--kernel", "k", "--pvm", "maybe"],
            &["ringvisor", "run", "--kernel", "k", "--disk", "readonly=on"],
            &["ringvisor", "run", "--kernel", "k", "--file", "a:/x/../y"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?} parsed");
        }
    }
}
