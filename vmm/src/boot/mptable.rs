//! The Intel MultiProcessor Specification 1.4 table, which tells a guest
//! without ACPI how many CPUs it has and how ISA interrupts reach the IOAPIC.
//! Laid out by hand from the specification's byte layouts.

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::layout::{APIC_START, EBDA_START, IOAPIC_START};

/// Errors writing the MP table.
#[derive(Debug, Error)]
pub enum MpTableError {
    /// More CPUs than the table's space holds.
    #[error("{0} vCPUs do not fit in the MP table (at most {max})", max = MAX_CPUS)]
    TooManyCpus(u8),
    /// The table does not fit in guest RAM.
    #[error("writing the MP table at {EBDA_START:#x} failed: {0}")]
    Write(vm_memory::GuestMemoryError),
}

/// Most CPUs the table is built for (it must fit in the 1 KiB EBDA).
pub const MAX_CPUS: u8 = 32;
/// Number of ISA IRQs routed 1:1 to IOAPIC pins.
const ISA_IRQS: u8 = 16;
const APIC_VERSION: u8 = 0x14;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
/// CPU signature: family 6 (what KVM reports by default is irrelevant here).
const CPU_SIGNATURE: u32 = 0x600;
/// Feature flags: FPU, APIC.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const MP_IRQ_INT: u8 = 0;
const MP_IRQ_NMI: u8 = 1;
const MP_IRQ_EXTINT: u8 = 3;

/// Sums bytes modulo 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// Builds the configuration table's entries (without its header).
fn entries(cpus: u8) -> Vec<u8> {
    let ioapic_id = cpus + 1;
    let mut out = Vec::new();
    for cpu in 0..cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 };
        out.extend_from_slice(&[0, cpu, APIC_VERSION, flags]);
        out.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        out.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
    }
    // Bus 0 is ISA.
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(b"ISA   ");
    // The IOAPIC.
    out.extend_from_slice(&[2, ioapic_id, APIC_VERSION, CPU_ENABLED]);
    out.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    // ISA IRQ n -> IOAPIC pin n, conforming polarity and trigger.
    for irq in 0..ISA_IRQS {
        out.extend_from_slice(&[3, MP_IRQ_INT, 0, 0, 0, irq, ioapic_id, irq]);
    }
    // LINT0 is ExtINT, LINT1 is NMI, on every local APIC.
    out.extend_from_slice(&[4, MP_IRQ_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    out.extend_from_slice(&[4, MP_IRQ_NMI, 0, 0, 0, 0, 0xff, 1]);
    out
}

/// Builds the floating pointer and the configuration table, as placed at
/// `base`: 16 bytes of floating pointer, then the table.
pub fn build(cpus: u8, base: u64) -> Result<Vec<u8>, MpTableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MpTableError::TooManyCpus(cpus));
    }
    let table_addr = base + 16;
    let body = entries(cpus);
    let entry_count = u16::from(cpus) + 1 + 1 + u16::from(ISA_IRQS) + 2;

    let mut table = Vec::with_capacity(44 + body.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + body.len()) as u16).to_le_bytes());
    table.push(4); // specification revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"RINGVISR"); // OEM id
    table.extend_from_slice(b"RINGVISOR-VM"); // product id
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&entry_count.to_le_bytes());
    table.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes()); // extended table: none
    table.extend_from_slice(&body);
    table[7] = 0u8.wrapping_sub(checksum(&table));

    let mut floating = Vec::with_capacity(16);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&(table_addr as u32).to_le_bytes());
    floating.push(1); // length in 16-byte units
    floating.push(4); // specification revision 1.4
    floating.push(0); // checksum, below
    floating.extend_from_slice(&[0; 5]); // features: a configuration table exists
    floating[10] = 0u8.wrapping_sub(checksum(&floating));

    let mut out = floating;
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the MP table for `cpus` vCPUs into the EBDA.
pub fn setup<M: GuestMemory>(mem: &M, cpus: u8) -> Result<(), MpTableError> {
    let bytes = build(cpus, EBDA_START)?;
    debug_assert!(bytes.len() <= 0x400, "the MP table outgrew the EBDA");
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(MpTableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_zero_and_pointers_consistent() {
        for cpus in [1, 2, 8, MAX_CPUS] {
            let bytes = build(cpus, EBDA_START).unwrap();
            assert_eq!(&bytes[0..4], b"_MP_");
            assert_eq!(checksum(&bytes[..16]), 0);
            let table_addr = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as u64;
            assert_eq!(table_addr, EBDA_START + 16);
            let table = &bytes[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(checksum(table), 0);
            assert!(bytes.len() <= 0x400, "{cpus} cpus: {} bytes", bytes.len());
        }
    }

    #[test]
    fn one_enabled_processor_entry_per_cpu_and_one_bsp() {
        let bytes = build(4, EBDA_START).unwrap();
        let table = &bytes[16..];
        let count = u16::from_le_bytes([table[34], table[35]]);
        let mut at = 44;
        let (mut cpus, mut bsps, mut seen) = (0, 0, 0);
        while at < table.len() {
            let size = if table[at] == 0 { 20 } else { 8 };
            if table[at] == 0 {
                assert_eq!(table[at + 1], cpus, "APIC ids are 0..n");
                cpus += 1;
                bsps += usize::from(table[at + 3] & CPU_BOOTPROCESSOR != 0);
            }
            at += size;
            seen += 1;
        }
        assert_eq!(at, table.len());
        assert_eq!((cpus, bsps, seen), (4, 1, count));
    }

    #[test]
    fn cpu_count_is_checked() {
        assert!(build(0, EBDA_START).is_err());
        assert!(build(MAX_CPUS + 1, EBDA_START).is_err());
    }
}
