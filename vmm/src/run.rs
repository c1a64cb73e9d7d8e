//! Running a built VM: vCPU threads, console input, and the main loop that
//! waits for the guest to finish, fail or time out.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use devices::VmEvent;

use crate::config::VmConfig;
use crate::error::VmError;
use crate::guest_profile::GuestProfile;
use crate::outcome::Outcome;
use crate::snapshot::state::{FileInfo, Machine, Snapshot, UringInfo, VcpuState};
use crate::snapshot::{self, SnapshotError};
use crate::timings::Timings;
use crate::vcpu::{Vcpu, VcpuKick};
use crate::vm::{self, Start, Vm};
use crate::VmmEvent;

/// What a run does.
pub enum Mode {
    /// Boot and run the workload.
    Boot,
    /// Boot until /init is ready for a workload, then write a snapshot to
    /// this directory.
    Snapshot {
        /// The snapshot directory.
        out: PathBuf,
    },
    /// Restore a snapshot and hand /init this workload command.
    Restore {
        /// The checked snapshot state.
        snapshot: Box<Snapshot>,
        /// Its memory file.
        memory: PathBuf,
        /// argv words, each ended by a NUL (empty: the default workload).
        command: Vec<u8>,
    },
}

/// How long the vCPUs get to pause for a snapshot.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The result of a VM run.
pub struct RunReport {
    /// How it ended.
    pub outcome: Outcome,
    /// What it measured.
    pub timings: Timings,
}

/// Feeds the VMM's stdin to the guest console until EOF.
fn spawn_console_input(serial: std::sync::Arc<std::sync::Mutex<devices::legacy::SerialConsole>>) {
    let spawned = thread::Builder::new()
        .name("console-in".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 64];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    return;
                }
                let mut pending = &buf[..n];
                while !pending.is_empty() {
                    let taken = serial
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .enqueue_input(pending)
                        .unwrap_or(0);
                    pending = &pending[taken..];
                    if !pending.is_empty() {
                        // The guest has not drained its receive FIFO yet.
                        thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("no console input: {e}");
    }
}

/// The running vCPU threads, each with the kick that gets it out of
/// KVM_RUN.
struct VcpuThreads {
    threads: Vec<thread::JoinHandle<Vcpu>>,
    kicks: Vec<VcpuKick>,
}

impl VcpuThreads {
    /// Kicks every vCPU thread out of KVM_RUN.
    fn kick_all(&self) {
        for (t, kick) in self.threads.iter().zip(&self.kicks) {
            kick.kick(t);
        }
    }
}

/// Kicks every vCPU thread out of KVM_RUN (once each: the kick cannot be
/// lost) after `stop` is set, so that each reports where the guest was (see
/// `Vcpu::run`), and waits a moment for them to print.
fn locate_vcpus(vcpus: &VcpuThreads) {
    vcpus.kick_all();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline && vcpus.threads.iter().any(|t| !t.is_finished()) {
        thread::sleep(Duration::from_millis(5));
    }
}

/// Pauses every vCPU (each saves its own state on its thread and sends it)
/// and collects their states, in vCPU order.
fn pause_vcpus(
    vm: &Vm,
    rx: &mpsc::Receiver<VmmEvent>,
    vcpus: &VcpuThreads,
    paused_at: Instant,
) -> Result<Vec<VcpuState>, SnapshotError> {
    vm.pause.store(true, Ordering::SeqCst);
    vcpus.kick_all();
    let mut states: Vec<Option<VcpuState>> = (0..vm.vcpus_count).map(|_| None).collect();
    while states.iter().any(Option::is_none) {
        let left = PAUSE_TIMEOUT.saturating_sub(paused_at.elapsed());
        let missing = states.iter().position(Option::is_none).unwrap_or(0) as u8;
        match rx.recv_timeout(left) {
            Ok(VmmEvent::Paused { cpu, state }) => {
                let state = (*state).map_err(|e| SnapshotError::PauseFailed {
                    cpu,
                    source: Box::new(e),
                })?;
                if let Some(slot) = states.get_mut(usize::from(cpu)) {
                    *slot = Some(state);
                }
            }
            Ok(VmmEvent::Device(_)) => {}
            Ok(other) => {
                return Err(SnapshotError::PauseInterrupted {
                    cpu: missing,
                    event: format!("{other:?}"),
                })
            }
            Err(_) => {
                return Err(SnapshotError::PauseTimeout {
                    cpu: missing,
                    timeout: PAUSE_TIMEOUT,
                })
            }
        }
    }
    Ok(states.into_iter().flatten().collect())
}

/// The machine a snapshot of `vm` records: its size, command line, and the
/// files behind its disks and pv-uring backends.
fn machine(vm: &Vm, config: &VmConfig) -> Result<Machine, SnapshotError> {
    let file_info = |d: &crate::config::DiskConfig| -> Result<FileInfo, SnapshotError> {
        let size = std::fs::metadata(&d.path)
            .map_err(|source| SnapshotError::Io {
                what: "reading",
                path: d.path.clone(),
                source,
            })?
            .len();
        Ok(FileInfo {
            path: d.path.display().to_string(),
            size,
            readonly: d.readonly,
            direct: d.direct,
        })
    };
    Ok(Machine {
        memory_size: config.memory.size,
        cpus: config.cpus,
        pvm: vm.pvm,
        cmdline: vm.cmdline.clone(),
        kernel_format: format!("{:?}", vm.kernel_format),
        disks: config
            .disks
            .iter()
            .map(file_info)
            .collect::<Result<_, _>>()?,
        uring: match &config.uring {
            // The arena's memory and the guest's chunk ownership are not
            // saved: a restored guest would find its mappings gone.
            Some(u) if u.arena.is_some() => return Err(SnapshotError::Arena),
            Some(u) => Some(UringInfo {
                rings: u.rings,
                polled: u.polled,
                max_registered: u.max_registered,
                backends: u.backends.iter().map(file_info).collect::<Result<_, _>>()?,
            }),
            None => None,
        },
        tsc_khz: vm.tsc_khz,
    })
}

/// Pauses every vCPU (each saves its own state on its thread) and writes the
/// snapshot to `out`: guest RAM first, then the state file, each through a
/// temporary file renamed into place. Returns what to tell the user.
fn take_snapshot(
    vm: &Vm,
    config: &VmConfig,
    rx: &mpsc::Receiver<VmmEvent>,
    vcpu_threads: &VcpuThreads,
    out: &Path,
) -> Result<String, SnapshotError> {
    let paused_at = Instant::now();
    let vcpus = pause_vcpus(vm, rx, vcpu_threads, paused_at)?;
    let vm_state = snapshot::vm::save(&vm.fd)?;
    let devices = snapshot::devices::save(vm.devices())?;
    let machine = machine(vm, config)?;
    let mut state = Snapshot {
        ringvisor_version: snapshot::RINGVISOR_VERSION.into(),
        machine,
        vm: vm_state,
        vcpus,
        devices,
        memory: Default::default(),
    };
    state.check()?;
    let paused = paused_at.elapsed();
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { what, path, source }
    };
    std::fs::create_dir_all(out).map_err(io("creating", out))?;
    // An older snapshot here stops being one first.
    let state_path = out.join(snapshot::STATE_FILE);
    if state_path.exists() {
        std::fs::remove_file(&state_path).map_err(io("removing", &state_path))?;
    }
    let memory_tmp = out.join(format!("{}.tmp", snapshot::MEMORY_FILE));
    let memory = out.join(snapshot::MEMORY_FILE);
    state.memory = snapshot::memory::write(&vm.ram.memory, config.memory.size, &memory_tmp)?;
    let ram_bytes = state.memory.data_bytes;
    std::fs::rename(&memory_tmp, &memory).map_err(io("renaming", &memory_tmp))?;
    let state_bytes = snapshot::write_state(out, &state)?;
    Ok(format!(
        "snapshot written to {}: {} MiB of guest RAM in use ({} MiB file, sparse), {} KiB of state; \
         vCPUs paused and state saved in {:.1} ms, written in {:.1} ms",
        out.display(),
        ram_bytes >> 20,
        config.memory.size >> 20,
        state_bytes.div_ceil(1024),
        paused.as_secs_f64() * 1e3,
        (paused_at.elapsed() - paused).as_secs_f64() * 1e3,
    ))
}

/// Starts a thread per vCPU. Each first restricts itself to
/// `--vcpu-affinity`; none enters KVM_RUN before every one has, and a
/// failure ends the run before the guest starts.
fn start_vcpus(vm: &mut Vm, config: &VmConfig) -> Result<VcpuThreads, VmError> {
    if let Err(e) = crate::vcpu::install_kick_handler() {
        log::warn!("no vCPU kick signal handler ({e}): a hung guest cannot be located");
    }
    // Each vCPU thread first restricts itself to --vcpu-affinity and says
    // how that went; none enters KVM_RUN before every one has (a failure
    // ends the run before the guest starts).
    let (placed_tx, placed_rx) = mpsc::channel();
    let mut threads = Vec::new();
    let mut gates = Vec::new();
    let mut kicks = Vec::new();
    for mut vcpu in std::mem::take(&mut vm.vcpus) {
        let id = vcpu.id;
        kicks.push(VcpuKick::new(&mut vcpu));
        let cpus = config.vcpu_affinity.clone();
        let placed = placed_tx.clone();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                let pinned = cpus
                    .as_deref()
                    .map_or(Ok(()), crate::affinity::pin_current_thread);
                let ok = pinned.is_ok();
                let _ = placed.send((id, pinned));
                drop(placed);
                // A dropped gate (the run failed) ends the thread.
                if ok && go_rx.recv().is_ok() {
                    vcpu.run();
                }
                // Handed back through the JoinHandle: its kvm_run mapping,
                // which the VcpuKick points into, lives as long as that.
                vcpu
            })
            .map_err(VmError::VcpuThread)?;
        threads.push(handle);
        gates.push(go_tx);
    }
    drop(placed_tx);
    let mut failed = None;
    for _ in 0..threads.len() {
        match placed_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((cpu, Err(source))) => {
                failed.get_or_insert(VmError::VcpuAffinity { cpu, source });
            }
            Err(_) => {
                failed.get_or_insert(VmError::VcpuThreadEnded);
                break;
            }
        }
    }
    if let Some(e) = failed {
        drop(gates);
        for t in threads {
            let _ = t.join();
        }
        return Err(e);
    }
    for gate in gates {
        let _ = gate.send(());
    }
    Ok(VcpuThreads { threads, kicks })
}

/// When the guest reached its milestones, since the run started.
#[derive(Default)]
struct Marks {
    /// /init started (the boot marker).
    boot_marker: Option<Duration>,
    /// The workload started.
    workload_started: Option<Duration>,
}

/// The next event, or the outcome when the deadline passes or every vCPU
/// stopped.
fn next_event(
    rx: &mpsc::Receiver<VmmEvent>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
) -> Result<VmmEvent, Outcome> {
    match deadline {
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(event) => Ok(event),
                Err(RecvTimeoutError::Timeout) => {
                    Err(Outcome::Timeout(timeout.unwrap_or_default()))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    Err(Outcome::Unhandled("every vCPU stopped".into()))
                }
            }
        }
        None => rx
            .recv()
            .map_err(|_| Outcome::Unhandled("every vCPU stopped".into())),
    }
}

/// Handles the VM's events until the run ends (the guest exits, resets or
/// fails, the timeout passes, or the snapshot of `Mode::Snapshot` is
/// written), noting the guest's milestones in `marks`.
fn wait_for_end(
    vm: &Vm,
    config: &VmConfig,
    mode: &Mode,
    rx: &mpsc::Receiver<VmmEvent>,
    vcpus: &VcpuThreads,
    started: Instant,
    marks: &mut Marks,
) -> Result<Outcome, VmError> {
    let deadline = config.timeout.map(|t| started + t);
    let from_workload = config
        .guest_profile
        .as_ref()
        .is_some_and(|p| p.from_workload);
    let mut sampler = vm
        .profile
        .as_deref()
        .filter(|_| !from_workload)
        .map(Sampler::new);
    let outcome = loop {
        let wake = match (deadline, sampler.as_ref().map(|s| s.next)) {
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        };
        let event = match next_event(rx, wake, config.timeout) {
            Ok(event) => event,
            Err(Outcome::Timeout(_)) if deadline.is_none_or(|d| Instant::now() < d) => {
                // Not the run's deadline: the profile's next sample.
                if let Some(s) = sampler.as_mut() {
                    s.sample(vcpus);
                }
                continue;
            }
            Err(outcome) => break outcome,
        };
        let panicked = vm.panic_seen.load(Ordering::SeqCst);
        match event {
            VmmEvent::Device(VmEvent::BootMarker) => {
                marks.boot_marker.get_or_insert_with(|| started.elapsed());
            }
            VmmEvent::Device(VmEvent::WorkloadStarted) => {
                marks
                    .workload_started
                    .get_or_insert_with(|| started.elapsed());
                if sampler.is_none() {
                    sampler = vm.profile.as_deref().map(Sampler::new);
                }
            }
            VmmEvent::Device(VmEvent::ReadyForWorkload) => match mode {
                Mode::Snapshot { out } => {
                    let done = take_snapshot(vm, config, rx, vcpus, out)?;
                    break Outcome::Snapshot(done);
                }
                _ => log::warn!(
                    "the guest waits for a workload in the guest-signal mailbox \
                     (`{}` on its command line): only `ringvisor snapshot` and \
                     `run --restore` give it one",
                    snapshot::SNAPSHOT_PARAM
                ),
            },
            VmmEvent::Paused { cpu, .. } => {
                break Outcome::Unhandled(format!("vCPU {cpu} paused outside a snapshot"))
            }
            VmmEvent::Device(VmEvent::GuestExit(status)) => break Outcome::GuestExit(status),
            VmmEvent::Device(VmEvent::Reset) => break Outcome::from_reset(false, panicked),
            VmmEvent::TripleFault { .. } => break Outcome::from_reset(true, panicked),
            VmmEvent::SystemEvent { kind, .. } => {
                log::debug!("system event {kind}");
                break Outcome::from_reset(false, panicked);
            }
            VmmEvent::Unhandled { cpu, what } => {
                break Outcome::Unhandled(format!("vCPU {cpu}: {what}"))
            }
            VmmEvent::EmulationFailure { cpu, what, hint } => {
                break Outcome::EmulationFailure {
                    what: format!("vCPU {cpu}: {what}"),
                    hint,
                }
            }
        }
    };
    Ok(outcome)
}

/// `--guest-profile`'s clock: asks every vCPU for a sample and kicks it
/// out of KVM_RUN, once a period (the vCPU's thread reads its registers).
struct Sampler<'a> {
    profile: &'a GuestProfile,
    next: Instant,
}

impl<'a> Sampler<'a> {
    fn new(profile: &'a GuestProfile) -> Self {
        Self {
            profile,
            next: Instant::now() + profile.period(),
        }
    }

    fn sample(&mut self, vcpus: &VcpuThreads) {
        self.profile.request_all();
        vcpus.kick_all();
        // A late tick (the host was busy) is not made up for.
        let now = Instant::now();
        self.next = (self.next + self.profile.period()).max(now);
    }
}

/// What the run measured.
fn timings(
    vm: &Vm,
    config: &VmConfig,
    marks: &Marks,
    vmm_setup: Duration,
    started: Instant,
    vmm_threads_cpu: Option<f64>,
    restored: bool,
) -> Timings {
    Timings {
        vmm_setup,
        to_init: marks.boot_marker,
        to_workload: marks.workload_started,
        restored,
        wall: started.elapsed(),
        in_kvm: Duration::from_nanos(vm.stats.in_kvm_ns.load(Ordering::Relaxed)),
        in_vmm: Duration::from_nanos(vm.stats.in_vmm_ns.load(Ordering::Relaxed)),
        exits: vm.stats.exits.load(Ordering::Relaxed),
        rss_beyond_guest_ram: crate::timings::rss_beyond_guest_ram(),
        pinned_at_exit: crate::timings::pinned_memory(),
        vmm_threads_cpu,
        guest_ram: config.memory.size,
        backing: format!("{:?}", vm.ram.backing),
        pvm: vm.pvm,
        kernel_format: format!("{:?}", vm.kernel_format),
        emulated: vm.stats.emulated(),
    }
}

/// Builds (boots or restores) and runs the VM described by `config` until
/// it ends, or until its snapshot is written.
pub fn run_vm(config: &VmConfig, started: Instant, mode: Mode) -> Result<RunReport, VmError> {
    let (tx, rx) = mpsc::channel();
    // On nested PVM a kernel without the compatibility patch stops tens of
    // seconds into its boot: look for the patch while the VM is built, and
    // say so before the guest starts.
    let booting = !matches!(mode, Mode::Restore { .. });
    let compat_check = (booting && crate::pvm::pvm_enabled(config.pvm, crate::pvm::host_is_pvm()))
        .then(|| {
            let kernel = config.kernel.clone();
            thread::spawn(move || crate::compat_patch::check_kernel_before_pvm_boot(&kernel))
        });
    let start = match &mode {
        Mode::Restore {
            snapshot, memory, ..
        } => Start::Restore { snapshot, memory },
        _ => Start::Boot,
    };
    let mut vm = vm::build(config, tx, start)?;
    if let Mode::Restore { command, .. } = &mode {
        vm.guest_signal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_command(command.clone())
            .map_err(VmError::Command)?;
    }
    if let Some(warning) = compat_check.and_then(|check| check.join().ok().flatten()) {
        log::warn!("{warning}");
    }
    log::debug!("kernel command line: {}", vm.cmdline);
    let boot_started = Instant::now();
    let setup_time = boot_started - started;

    let vcpus = start_vcpus(&mut vm, config)?;
    spawn_console_input(vm.serial.clone());

    let mut marks = Marks::default();
    let outcome = wait_for_end(&vm, config, &mode, &rx, &vcpus, started, &mut marks)?;
    // Before the vCPU threads are told to stop: one that has exited would
    // count as the VMM's.
    let vmm_threads_cpu = crate::timings::vmm_threads_cpu();
    vm.stop.store(true, Ordering::SeqCst);
    if matches!(
        outcome,
        Outcome::Timeout(_) | Outcome::Unhandled(_) | Outcome::EmulationFailure { .. }
    ) {
        locate_vcpus(&vcpus);
    }
    // Taking the console lock waits out a vCPU that is mid-write.
    let _ = vm.serial.lock().unwrap_or_else(|e| e.into_inner()).flush();
    if let Some(profile) = &vm.profile {
        match profile.finish() {
            Ok(Some((samples, path))) => eprintln!(
                "ringvisor: guest profile: {samples} samples in {}",
                path.display()
            ),
            Ok(None) => {}
            Err(e) => eprintln!("ringvisor: error: {e}"),
        }
    }

    let timings = timings(
        &vm,
        config,
        &marks,
        setup_time,
        started,
        vmm_threads_cpu,
        !booting,
    );
    Ok(RunReport { outcome, timings })
}
