//! vCPU state at kernel entry for the 64-bit Linux boot protocol: long mode
//! with the first GiB identity-mapped, a flat GDT, RSI pointing at the zero
//! page. Plus the per-vCPU CPUID table and local APIC LINT set-up.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, CpuId};
use kvm_ioctls::VcpuFd;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::BootEntry;
use crate::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
};

/// Errors setting up vCPU registers.
#[derive(Debug, Error)]
pub enum CpuSetupError {
    /// A KVM ioctl failed.
    #[error("{what} failed for vCPU {cpu}: {source}")]
    Kvm {
        what: &'static str,
        cpu: u8,
        source: kvm_ioctls::Error,
    },
    /// Boot structures could not be written to guest memory.
    #[error("writing {what} into guest memory failed: {source}")]
    Write {
        what: &'static str,
        source: vm_memory::GuestMemoryError,
    },
}

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_NE: u64 = 1 << 5;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// A GDT entry from flags, base and limit (Intel SDM vol. 3, 3.4.5).
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

/// The boot GDT: null, 64-bit code, data, TSS.
const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// The KVM segment register value for GDT entry `index`.
fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let bits = |shift: u32, width: u32| ((entry >> shift) & ((1 << width) - 1)) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: {
            let raw = ((entry & 0xffff) | (((entry >> 48) & 0xf) << 16)) as u32;
            // Page-granular limits cover whole 4 KiB pages.
            if bits(55, 1) == 1 {
                (raw << 12) | 0xfff
            } else {
                raw
            }
        },
        selector: u16::from(index) * 8,
        type_: bits(40, 4),
        present: bits(47, 1),
        dpl: bits(45, 2),
        db: bits(54, 1),
        s: bits(44, 1),
        l: bits(53, 1),
        g: bits(55, 1),
        avl: bits(52, 1),
        padding: 0,
        unusable: u8::from(bits(47, 1) == 0),
    }
}

/// Writes the GDT, an empty IDT and identity-mapping page tables for the
/// first GiB (2 MiB pages).
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), CpuSetupError> {
    let write = |what, value: u64, addr: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(|source| CpuSetupError::Write { what, source })
    };
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        write("the boot GDT", *entry, BOOT_GDT_START + i as u64 * 8)?;
    }
    write("the boot IDT", 0, BOOT_IDT_START)?;
    // Present, writable.
    write("the PML4", PDPTE_START | 0x03, PML4_START)?;
    write("the PDPT", PDE_START | 0x03, PDPTE_START)?;
    for i in 0..512u64 {
        // Present, writable, 2 MiB page.
        write("the page directory", (i << 21) | 0x83, PDE_START + i * 8)?;
    }
    Ok(())
}

fn kvm_err(what: &'static str, cpu: u8) -> impl FnOnce(kvm_ioctls::Error) -> CpuSetupError {
    move |source| CpuSetupError::Kvm { what, cpu, source }
}

/// Puts a vCPU in long mode at the kernel entry (boot vCPU) or leaves an
/// application processor in its reset state, waiting for INIT/SIPI.
pub fn setup_registers(vcpu: &VcpuFd, cpu: u8, entry: &BootEntry) -> Result<(), CpuSetupError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU", cpu))?;
    if cpu != 0 {
        return Ok(());
    }

    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS", cpu))?;
    let code = segment_from_gdt(BOOT_GDT[1], 1);
    let data = segment_from_gdt(BOOT_GDT[2], 2);
    let tss = segment_from_gdt(BOOT_GDT[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(kvm_err("KVM_SET_SREGS", cpu))?;

    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry.rip,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: entry.zero_page,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS", cpu))
}

/// Local APIC LVT registers and delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Routes LINT0 as ExtINT and LINT1 as NMI, as the MP table says.
pub fn setup_lapic(vcpu: &VcpuFd, cpu: u8) -> Result<(), CpuSetupError> {
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC", cpu))?;
    let set_mode = |regs: &mut [std::os::raw::c_char; 1024], offset: usize, mode: u32| {
        let mut bytes = [0u8; 4];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = regs[offset + i] as u8;
        }
        let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            regs[offset + i] = *b as std::os::raw::c_char;
        }
    };
    set_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic)
        .map_err(kvm_err("KVM_SET_LAPIC", cpu))
}

/// CPUID bits the VMM changes.
const LEAF1_ECX_CX16: u32 = 1 << 13;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// KVM's paravirtual feature leaf.
const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
/// KVM PV features that are requested with the `vmcall` hypercall: under
/// nested PVM a vCPU that executes it in guest kernel mode never comes back
/// (seen as a 2-vCPU guest stuck at boot, one vCPU at `vmcall` in
/// `kvm_hypercall4` from the PV IPI path, the other spinning on a lock).
/// The guest falls back to APIC IPIs, native TLB flushes and halting.
const KVM_PV_HYPERCALL_FEATURES: u32 = (1 << 7) // PV_UNHALT
    | (1 << 9) // PV_TLB_FLUSH
    | (1 << 11) // PV_SEND_IPI
    | (1 << 13); // PV_SCHED_YIELD

/// Adapts the host-supported CPUID table for vCPU `cpu` of `cpus`: its APIC
/// ID and the hypervisor bit; under nested PVM (`pvm`) also `cmpxchg16b`
/// hidden (the host's emulator cannot run it in guest kernel mode) and the
/// KVM PV features that use hypercalls.
pub fn vcpu_cpuid(supported: &CpuId, cpu: u8, cpus: u8, pvm: bool) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (entry.ebx & 0x00ff_ffff) | (u32::from(cpu) << 24);
                // Logical processor count for this package.
                entry.ebx = (entry.ebx & 0xff00_ffff) | (u32::from(cpus) << 16);
                entry.ecx |= LEAF1_ECX_HYPERVISOR;
                if pvm {
                    entry.ecx &= !LEAF1_ECX_CX16;
                }
            }
            KVM_CPUID_FEATURES if pvm => entry.eax &= !KVM_PV_HYPERCALL_FEATURES,
            0xb | 0x1f => entry.edx = u32::from(cpu),
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn gdt_segments_decode_to_flat_long_mode() {
        let code = segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!((code.selector, code.l, code.db, code.present), (8, 1, 0, 1));
        assert_eq!((code.base, code.limit, code.type_), (0, 0xffff_ffff, 0xb));
        let data = segment_from_gdt(BOOT_GDT[2], 2);
        assert_eq!((data.selector, data.db, data.type_, data.s), (16, 1, 3, 1));
        let tss = segment_from_gdt(BOOT_GDT[3], 3);
        assert_eq!((tss.selector, tss.s, tss.type_), (24, 0, 0xb));
        let null = segment_from_gdt(BOOT_GDT[0], 0);
        assert_eq!(null.unusable, 1);
    }

    #[test]
    fn page_tables_identity_map_the_first_gib() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        write_boot_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4 & !0xfff, PDPTE_START);
        let pde: u64 = mem.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(pde, (511 << 21) | 0x83);
    }

    #[test]
    fn cpuid_carries_apic_id_and_hides_pvm_hazards_only_on_pvm() {
        let leaf1 = kvm_cpuid_entry2 {
            function: 1,
            ecx: LEAF1_ECX_CX16,
            ebx: 0xaa00_0000,
            ..Default::default()
        };
        let kvm_leaf = kvm_cpuid_entry2 {
            function: KVM_CPUID_FEATURES,
            eax: 0xffff,
            ..Default::default()
        };
        let supported = CpuId::from_entries(&[leaf1, kvm_leaf]).unwrap();
        let c = vcpu_cpuid(&supported, 3, 4, true);
        let e = c.as_slice()[0];
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_eq!(e.ecx & LEAF1_ECX_CX16, 0);
        assert_ne!(e.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(c.as_slice()[1].eax, 0xffff & !KVM_PV_HYPERCALL_FEATURES);
        assert_ne!(c.as_slice()[1].eax & 1, 0, "kvmclock stays");
        let c = vcpu_cpuid(&supported, 0, 1, false);
        assert_ne!(c.as_slice()[0].ecx & LEAF1_ECX_CX16, 0);
        assert_eq!(
            c.as_slice()[1].eax,
            0xffff,
            "hardware KVM keeps PV features"
        );
    }
}
