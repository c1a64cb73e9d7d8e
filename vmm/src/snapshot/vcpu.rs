//! Saving and restoring one vCPU's KVM state. Both run on a vCPU that is
//! not in KVM_RUN (its thread paused it, or it has not started).

use kvm_bindings::{kvm_msr_entry, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::VcpuFd;

use super::state::VcpuState;
use super::SnapshotError;

/// MSRs read or written per ioctl.
const MSR_BATCH: usize = 64;

fn kvm(what: &'static str, cpu: u8) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Kvm {
        what,
        cpu: Some(cpu),
        source,
    }
}

fn msr_batch(entries: &[kvm_msr_entry]) -> Result<Msrs, SnapshotError> {
    Msrs::from_entries(entries).map_err(SnapshotError::MsrList)
}

/// Reads every MSR of `index` that KVM lets this vCPU read back. KVM_GET_MSRS
/// stops at the first MSR it refuses: that one is left out and the read goes
/// on after it.
fn read_msrs(fd: &VcpuFd, cpu: u8, index: &[u32]) -> Result<Vec<(u32, u64)>, SnapshotError> {
    let mut out = Vec::with_capacity(index.len());
    let mut rest = index;
    while !rest.is_empty() {
        let n = rest.len().min(MSR_BATCH);
        let entries: Vec<kvm_msr_entry> = rest[..n]
            .iter()
            .map(|&i| kvm_msr_entry {
                index: i,
                ..Default::default()
            })
            .collect();
        let mut msrs = msr_batch(&entries)?;
        let read = fd.get_msrs(&mut msrs).map_err(kvm("KVM_GET_MSRS", cpu))?;
        out.extend(msrs.as_slice()[..read].iter().map(|e| (e.index, e.data)));
        if read < n {
            log::debug!(
                "vCPU {cpu}: MSR {:#x} does not read back; left out",
                rest[read]
            );
            rest = &rest[read + 1..];
        } else {
            rest = &rest[n..];
        }
    }
    Ok(out)
}

/// Saves the state of vCPU `id`; `msr_index` is KVM_GET_MSR_INDEX_LIST.
pub fn save(fd: &VcpuFd, id: u8, msr_index: &[u32]) -> Result<VcpuState, SnapshotError> {
    let cpuid = fd
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm("KVM_GET_CPUID2", id))?;
    Ok(VcpuState {
        id,
        cpuid: cpuid.as_slice().to_vec(),
        mp_state: fd.get_mp_state().map_err(kvm("KVM_GET_MP_STATE", id))?,
        regs: fd.get_regs().map_err(kvm("KVM_GET_REGS", id))?,
        sregs: fd.get_sregs().map_err(kvm("KVM_GET_SREGS", id))?,
        xsave: fd.get_xsave().map_err(kvm("KVM_GET_XSAVE", id))?,
        xcrs: fd.get_xcrs().map_err(kvm("KVM_GET_XCRS", id))?,
        debug_regs: fd.get_debug_regs().map_err(kvm("KVM_GET_DEBUGREGS", id))?,
        lapic: fd.get_lapic().map_err(kvm("KVM_GET_LAPIC", id))?,
        msrs: read_msrs(fd, id, msr_index)?,
        events: fd
            .get_vcpu_events()
            .map_err(kvm("KVM_GET_VCPU_EVENTS", id))?,
    })
}

/// The CPUID table of a saved vCPU, to set before [`restore`].
pub fn cpuid(state: &VcpuState) -> Result<CpuId, SnapshotError> {
    CpuId::from_entries(&state.cpuid).map_err(|source| SnapshotError::Cpuid {
        cpu: state.id,
        source,
    })
}

/// Loads a saved state into a fresh vCPU whose CPUID is already set, in
/// the order KVM needs (as Firecracker does): MP state, registers, special
/// registers, extended state, XCRs, debug registers, LAPIC, MSRs, events.
pub fn restore(fd: &VcpuFd, state: &VcpuState) -> Result<(), SnapshotError> {
    let id = state.id;
    fd.set_mp_state(state.mp_state)
        .map_err(kvm("KVM_SET_MP_STATE", id))?;
    fd.set_regs(&state.regs).map_err(kvm("KVM_SET_REGS", id))?;
    fd.set_sregs(&state.sregs)
        .map_err(kvm("KVM_SET_SREGS", id))?;
    // SAFETY: KVM reads the vCPU's uABI XSAVE size from the struct, which
    // is the 4 KiB of kvm_xsave unless the process asked for dynamically
    // enabled guest features (AMX: ARCH_REQ_XCOMP_GUEST_PERM), which
    // ringvisor never does.
    unsafe { fd.set_xsave(&state.xsave) }.map_err(kvm("KVM_SET_XSAVE", id))?;
    fd.set_xcrs(&state.xcrs).map_err(kvm("KVM_SET_XCRS", id))?;
    fd.set_debug_regs(&state.debug_regs)
        .map_err(kvm("KVM_SET_DEBUGREGS", id))?;
    fd.set_lapic(&state.lapic)
        .map_err(kvm("KVM_SET_LAPIC", id))?;
    for chunk in state.msrs.chunks(MSR_BATCH) {
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = msr_batch(&entries)?;
        let written = fd.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS", id))?;
        if written < chunk.len() {
            return Err(SnapshotError::MsrRefused {
                cpu: id,
                index: chunk[written].0,
                value: chunk[written].1,
            });
        }
    }
    fd.set_vcpu_events(&state.events)
        .map_err(kvm("KVM_SET_VCPU_EVENTS", id))?;
    Ok(())
}
