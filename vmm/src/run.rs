//! Running a built VM: vCPU threads, console input, and the main loop that
//! waits for the guest to finish, fail or time out.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use devices::VmEvent;

use crate::config::VmConfig;
use crate::outcome::Outcome;
use crate::timings::Timings;
use crate::vm::{self, VmError};
use crate::VmmEvent;

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

/// Kicks every vCPU thread out of KVM_RUN so that each reports where the
/// guest was (see `Vcpu::run`), and gives them a moment to print.
fn locate_vcpus(threads: &[thread::JoinHandle<()>]) {
    use vmm_sys_util::signal::Killable;
    // A kick can land just before a thread re-enters KVM_RUN; a few rounds
    // make sure each thread sees one while inside.
    for _ in 0..3 {
        for t in threads.iter().filter(|t| !t.is_finished()) {
            let _ = t.kill(crate::vcpu::kick_signal());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Builds and runs the VM described by `config` until it ends.
pub fn run_vm(config: &VmConfig, started: Instant) -> Result<RunReport, VmError> {
    let (tx, rx) = mpsc::channel();
    // On nested PVM a kernel without the compatibility patch stops tens of
    // seconds into its boot: look for the patch while the VM is built, and
    // say so before the guest starts.
    let compat_check = crate::pvm::pvm_enabled(config.pvm, crate::pvm::host_is_pvm()).then(|| {
        let kernel = config.kernel.clone();
        thread::spawn(move || crate::compat_patch::check_kernel_before_pvm_boot(&kernel))
    });
    let vm = vm::build(config, tx)?;
    if let Some(warning) = compat_check.and_then(|check| check.join().ok().flatten()) {
        log::warn!("{warning}");
    }
    log::debug!("kernel command line: {}", vm.cmdline);
    let boot_started = Instant::now();
    let setup_time = boot_started - started;

    if let Err(e) = crate::vcpu::install_kick_handler() {
        log::warn!("no vCPU kick signal handler ({e}): a hung guest cannot be located");
    }
    // Each vCPU thread first restricts itself to --vcpu-affinity and says
    // how that went; none enters KVM_RUN before every one has (a failure
    // ends the run before the guest starts).
    let (placed_tx, placed_rx) = mpsc::channel();
    let mut threads = Vec::new();
    let mut gates = Vec::new();
    for vcpu in vm.vcpus {
        let id = vcpu.id;
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
            })
            .map_err(|e| VmError::Device {
                what: "vCPU thread",
                detail: e.to_string(),
            })?;
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
                failed.get_or_insert(VmError::Device {
                    what: "vCPU thread",
                    detail: "a vCPU thread ended before it started".into(),
                });
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
    spawn_console_input(vm.serial.clone());

    let deadline = config.timeout.map(|t| started + t);
    let mut boot_marker = None;
    let outcome = loop {
        let event = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) => {
                        break Outcome::Timeout(config.timeout.unwrap_or_default())
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        break Outcome::Unhandled("every vCPU stopped".into())
                    }
                }
            }
            None => match rx.recv() {
                Ok(event) => event,
                Err(_) => break Outcome::Unhandled("every vCPU stopped".into()),
            },
        };
        let panicked = vm.panic_seen.load(Ordering::SeqCst);
        match event {
            VmmEvent::Device(VmEvent::BootMarker) => {
                boot_marker.get_or_insert_with(|| started.elapsed());
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
    // Before the vCPU threads are told to stop: one that has exited would
    // count as the VMM's.
    let vmm_threads_cpu = crate::timings::vmm_threads_cpu();
    vm.stop.store(true, Ordering::SeqCst);
    if matches!(
        outcome,
        Outcome::Timeout(_) | Outcome::Unhandled(_) | Outcome::EmulationFailure { .. }
    ) {
        locate_vcpus(&threads);
    }
    // Taking the console lock waits out a vCPU that is mid-write.
    let _ = vm.serial.lock().unwrap_or_else(|e| e.into_inner()).flush();

    let guest_ram = config.memory.size;
    let timings = Timings {
        vmm_setup: setup_time,
        to_init: boot_marker,
        wall: started.elapsed(),
        in_kvm: Duration::from_nanos(vm.stats.in_kvm_ns.load(Ordering::Relaxed)),
        in_vmm: Duration::from_nanos(vm.stats.in_vmm_ns.load(Ordering::Relaxed)),
        exits: vm.stats.exits.load(Ordering::Relaxed),
        rss_beyond_guest_ram: crate::timings::rss_beyond_guest_ram(),
        pinned_at_exit: crate::timings::pinned_memory(),
        vmm_threads_cpu,
        guest_ram,
        backing: format!("{:?}", vm.ram.backing),
        pvm: vm.pvm,
        kernel_format: format!("{:?}", vm.kernel_format),
        emulated: vm.stats.emulated(),
    };
    Ok(RunReport { outcome, timings })
}
