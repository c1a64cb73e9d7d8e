//! vCPU threads: the KVM_RUN loop, exit dispatch to the buses, emulation
//! failures, and the time spent inside and outside KVM_RUN.

use std::collections::BTreeMap;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use devices::Bus;
use kvm_bindings::KVM_INTERNAL_ERROR_EMULATION;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::emulation::{self, CpuState, EmulationContext};
use crate::guest_profile::GuestProfile;
use crate::VmmEvent;

/// Counters shared by all vCPUs, printed with `--timings`.
#[derive(Default)]
pub struct RunStats {
    /// Nanoseconds spent inside KVM_RUN, all vCPUs.
    pub in_kvm_ns: AtomicU64,
    /// Nanoseconds spent in the VMM handling exits, all vCPUs.
    pub in_vmm_ns: AtomicU64,
    /// Exits returned to the VMM.
    pub exits: AtomicU64,
    /// Instructions emulated for the host, by mnemonic.
    pub emulated: Mutex<BTreeMap<&'static str, u64>>,
}

impl RunStats {
    /// A copy of the emulation counts.
    pub fn emulated(&self) -> BTreeMap<&'static str, u64> {
        self.emulated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn ignore_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) handler of [`kick_signal`], so that the signal only
/// interrupts KVM_RUN with EINTR.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), ignore_kick)
}

/// Kicks one vCPU out of KVM_RUN without a race (as Firecracker does):
/// `immediate_exit` is set in the vCPU's `kvm_run` before its thread is
/// signalled. A thread inside KVM_RUN leaves it on the signal; one outside
/// (handling an exit, or about to enter) gets EINTR from its next KVM_RUN,
/// which first completes a pending MMIO or port read. One kick always lands.
pub struct VcpuKick {
    immediate_exit: *mut u8,
}

// SAFETY: the pointer is into the vCPU's kvm_run mapping, written only with
// volatile byte stores; `run.rs` keeps the vCPU (and so the mapping) alive
// in its thread's JoinHandle for as long as it holds the kick.
unsafe impl Send for VcpuKick {}
// SAFETY: as above; concurrent byte stores of 1 are harmless.
unsafe impl Sync for VcpuKick {}

impl VcpuKick {
    /// The kick of `vcpu`. The caller must not use it once the vCPU is
    /// dropped.
    pub fn new(vcpu: &mut Vcpu) -> Self {
        let run = vcpu.fd.get_kvm_run();
        Self {
            immediate_exit: std::ptr::addr_of_mut!(run.immediate_exit),
        }
    }

    /// Sets `immediate_exit`, then signals `thread` (the vCPU's) with
    /// [`kick_signal`]. The flag the thread is to act on must be set first.
    pub fn kick<T>(&self, thread: &std::thread::JoinHandle<T>) {
        use vmm_sys_util::signal::Killable;
        // SAFETY: see the Send impl: the mapping outlives this kick.
        unsafe { std::ptr::write_volatile(self.immediate_exit, 1) };
        fence(Ordering::SeqCst);
        let _ = thread.kill(kick_signal());
    }
}

/// One vCPU and what its exits need.
pub struct Vcpu {
    /// The KVM vCPU.
    pub fd: VcpuFd,
    /// Its index (and APIC ID).
    pub id: u8,
    /// Port-I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Guest RAM (for instruction bytes and memory operands).
    pub mem: GuestMemoryMmap,
    /// Where fatal conditions go.
    pub events: Sender<VmmEvent>,
    /// Shared counters.
    pub stats: Arc<RunStats>,
    /// Set by the VMM once the run has ended: the vCPU handles no more exits.
    pub stop: Arc<AtomicBool>,
    /// Set by the VMM (then a [`VcpuKick`]) to take a snapshot: the vCPU
    /// saves its state, reports it and stops.
    pub pause: Arc<AtomicBool>,
    /// The MSRs to save (KVM_GET_MSR_INDEX_LIST).
    pub msr_index: Arc<Vec<u32>>,
    /// `--guest-profile`: where this vCPU's samples go (the VMM asks for
    /// one, then kicks).
    pub profile: Option<Arc<GuestProfile>>,
}

/// What the run loop does after an exit.
enum Next {
    Continue,
    Stop,
}

/// An exit that is not device I/O, detached from the `kvm_run` borrow.
enum OtherExit {
    Shutdown,
    SystemEvent(u32),
    Hlt,
    InternalError,
    FailEntry(u64, u32),
    Other(String),
}

/// Reads guest-virtual memory through the vCPU's page tables.
struct VcpuMemory<'a> {
    fd: &'a VcpuFd,
    mem: &'a GuestMemoryMmap,
}

impl VcpuMemory<'_> {
    fn read_virt(&self, addr: u64, buf: &mut [u8]) -> bool {
        // Byte ranges can cross a page boundary: translate page by page.
        let mut done = 0;
        while done < buf.len() {
            let va = addr.wrapping_add(done as u64);
            let Ok(t) = self.fd.translate_gva(va) else {
                return false;
            };
            if t.valid == 0 {
                return false;
            }
            let in_page = (0x1000 - (va & 0xfff)) as usize;
            let n = in_page.min(buf.len() - done);
            if self
                .mem
                .read_slice(&mut buf[done..done + n], GuestAddress(t.physical_address))
                .is_err()
            {
                return false;
            }
            done += n;
        }
        true
    }
}

impl EmulationContext for VcpuMemory<'_> {
    fn read_virt(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        VcpuMemory::read_virt(self, addr, buf)
    }
    fn fpu(&mut self) -> Option<kvm_bindings::kvm_fpu> {
        self.fd.get_fpu().ok()
    }
}

impl Vcpu {
    /// Runs the vCPU until the VM stops, pauses for a snapshot, or a fatal
    /// condition is reported.
    pub fn run(&mut self) {
        loop {
            let entered = Instant::now();
            let result = self.fd.run();
            let left = Instant::now();
            if self.stop.load(Ordering::SeqCst) {
                // The run is over: no exit of this vCPU may reach a device
                // (console output would interleave with the VMM's report).
                // A vCPU kicked out of KVM_RUN by the VMM says where it was,
                // which is what a hung guest needs explained.
                if matches!(&result, Err(e) if e.errno() == libc::EINTR) {
                    eprintln!(
                        "ringvisor: vCPU {} was at {}",
                        self.id,
                        self.describe_position()
                    );
                }
                return;
            }
            let next = match result {
                Ok(exit) => match dispatch_io(&self.pio, &self.mmio, self.id, exit) {
                    Ok(next) => next,
                    Err(other) => self.handle_other(other),
                },
                Err(e) if e.errno() == libc::EINTR => {
                    // Clear the kick before looking at the flags: a kick
                    // whose flag is set after this look still lands.
                    self.fd.set_kvm_immediate_exit(0);
                    fence(Ordering::SeqCst);
                    if self.pause.load(Ordering::SeqCst) {
                        let state = crate::snapshot::vcpu::save(&self.fd, self.id, &self.msr_index);
                        self.report(VmmEvent::Paused {
                            cpu: self.id,
                            state: Box::new(state),
                        });
                        return;
                    }
                    self.sample_if_asked();
                    Next::Continue
                }
                Err(e) if e.errno() == libc::EAGAIN => Next::Continue,
                Err(e) => {
                    self.report(VmmEvent::Unhandled {
                        cpu: self.id,
                        what: format!("KVM_RUN failed: {e}"),
                    });
                    Next::Stop
                }
            };
            let handled = Instant::now();
            self.stats
                .in_kvm_ns
                .fetch_add((left - entered).as_nanos() as u64, Ordering::Relaxed);
            self.stats
                .in_vmm_ns
                .fetch_add((handled - left).as_nanos() as u64, Ordering::Relaxed);
            self.stats.exits.fetch_add(1, Ordering::Relaxed);
            if let Next::Stop = next {
                return;
            }
        }
    }

    /// Records where the guest was, if the profile asked this vCPU.
    fn sample_if_asked(&self) {
        if let Some(profile) = &self.profile {
            if profile.take_request(usize::from(self.id)) {
                profile.record(self.fd.get_regs().ok().map(|r| r.rip));
            }
        }
    }

    fn report(&self, event: VmmEvent) {
        let _ = self.events.send(event);
    }

    fn handle_other(&mut self, exit: OtherExit) -> Next {
        match exit {
            OtherExit::Shutdown => self.report(VmmEvent::TripleFault { cpu: self.id }),
            OtherExit::SystemEvent(kind) => {
                self.report(VmmEvent::SystemEvent { cpu: self.id, kind })
            }
            // With the in-kernel irqchip HLT stays in KVM; reaching here
            // means the guest halted for good.
            OtherExit::Hlt => self.report_unhandled("HLT exit".into()),
            OtherExit::InternalError => return self.handle_internal_error(),
            OtherExit::FailEntry(reason, cpu) => self.report(VmmEvent::Unhandled {
                cpu: self.id,
                what: format!("KVM_EXIT_FAIL_ENTRY: hardware reason {reason:#x} on CPU {cpu}"),
            }),
            OtherExit::Other(what) => self.report_unhandled(what),
        }
        Next::Stop
    }

    /// Describes the vCPU's position for an error report: RIP and the
    /// instruction bytes there.
    fn describe_position(&self) -> String {
        let Ok(regs) = self.fd.get_regs() else {
            return "registers unavailable".into();
        };
        let mut bytes = [0u8; 15];
        let memory = VcpuMemory {
            fd: &self.fd,
            mem: &self.mem,
        };
        if memory.read_virt(regs.rip, &mut bytes) {
            let text = emulation::decode(&bytes, regs.rip)
                .map(|i| format!(" `{i}`"))
                .unwrap_or_default();
            format!("RIP {:#x}, bytes {bytes:02x?}{text}", regs.rip)
        } else {
            format!("RIP {:#x} (instruction bytes unreadable)", regs.rip)
        }
    }

    fn report_unhandled(&self, what: String) {
        let position = self.describe_position();
        self.report(VmmEvent::Unhandled {
            cpu: self.id,
            what: format!("{what} at {position}"),
        });
    }

    fn handle_internal_error(&mut self) -> Next {
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal`
        // is the union member KVM filled in.
        let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
        if internal.suberror != KVM_INTERNAL_ERROR_EMULATION {
            self.report_unhandled(format!(
                "KVM internal error, suberror {} (data {:x?})",
                internal.suberror,
                &internal.data[..(internal.ndata as usize).min(16)]
            ));
            return Next::Stop;
        }
        match self.emulate_current(internal.ndata, &internal.data) {
            Ok(name) => {
                *self
                    .stats
                    .emulated
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(name)
                    .or_default() += 1;
                Next::Continue
            }
            Err(EmulationStop { what, hint }) => {
                let position = self.describe_position();
                self.report(VmmEvent::EmulationFailure {
                    cpu: self.id,
                    what: format!("emulation failure the VMM cannot handle: {what} at {position}"),
                    hint,
                });
                Next::Stop
            }
        }
    }

    fn emulate_current(
        &mut self,
        ndata: u32,
        data: &[u64; 16],
    ) -> Result<&'static str, EmulationStop> {
        let regs = self
            .fd
            .get_regs()
            .map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        let mut memory = VcpuMemory {
            fd: &self.fd,
            mem: &self.mem,
        };
        let bytes = match emulation::reported_instruction_bytes(ndata, data) {
            Some(bytes) => bytes,
            None => {
                let mut bytes = vec![0u8; 15];
                if !memory.read_virt(regs.rip, &mut bytes) {
                    return Err(format!("instruction at {:#x} unreadable", regs.rip).into());
                }
                bytes
            }
        };
        let mut state = CpuState { regs, fpu: None };
        let name =
            emulation::emulate(&bytes, &mut state, &mut memory).map_err(|e| EmulationStop {
                what: e.to_string(),
                hint: e.stop_hint(),
            })?;
        if let Some(fpu) = state.fpu {
            self.fd
                .set_fpu(&fpu)
                .map_err(|e| format!("KVM_SET_FPU: {e}"))?;
        }
        self.fd
            .set_regs(&state.regs)
            .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
        Ok(name)
    }
}

/// Why an emulation failure stopped the guest, and what to do about it when
/// the instruction is one a stock kernel is known to stop on.
struct EmulationStop {
    what: String,
    hint: Option<&'static str>,
}

impl From<String> for EmulationStop {
    fn from(what: String) -> Self {
        Self { what, hint: None }
    }
}

/// Handles device I/O exits on the buses; anything else is returned.
fn dispatch_io(pio: &Bus, mmio: &Bus, id: u8, exit: VcpuExit) -> Result<Next, OtherExit> {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if pio.read(u64::from(port), data).is_err() {
                // Absent ISA ports read as zero here: the guest probes a few
                // (CMOS, other UARTs) and all-ones would look like a device
                // stuck busy.
                data.fill(0);
            }
        }
        VcpuExit::IoOut(port, data) => {
            let _ = pio.write(u64::from(port), data);
        }
        VcpuExit::MmioRead(addr, data) => {
            if let Err(e) = mmio.read(addr, data) {
                log::debug!("vCPU {id}: {e}");
            }
        }
        VcpuExit::MmioWrite(addr, data) => {
            if let Err(e) = mmio.write(addr, data) {
                log::debug!("vCPU {id}: {e}");
            }
        }
        VcpuExit::Shutdown => return Err(OtherExit::Shutdown),
        VcpuExit::SystemEvent(kind, _) => return Err(OtherExit::SystemEvent(kind)),
        VcpuExit::Hlt => return Err(OtherExit::Hlt),
        VcpuExit::InternalError => return Err(OtherExit::InternalError),
        VcpuExit::FailEntry(reason, cpu) => return Err(OtherExit::FailEntry(reason, cpu)),
        other => return Err(OtherExit::Other(format!("exit {other:?}"))),
    }
    Ok(Next::Continue)
}
