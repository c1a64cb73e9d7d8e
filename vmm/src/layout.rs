//! The guest-physical memory map (see `docs/guest-interface.md`). Pure
//! arithmetic, unit-tested.

/// Boot GDT.
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT (empty: the kernel installs its own before enabling interrupts).
pub const BOOT_IDT_START: u64 = 0x520;
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Boot page tables: PML4, one PDPT, one PD of 2 MiB pages (the first GiB).
pub const PML4_START: u64 = 0x9000;
/// See [`PML4_START`].
pub const PDPTE_START: u64 = 0xa000;
/// See [`PML4_START`].
pub const PDE_START: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line the 6.1 x86 kernel takes (COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area; the MP table lives here.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of RAM above the legacy hole.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap (devices, IOAPIC, LAPIC).
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// The pv-uring doorbell page (4 KiB, `--uring`), in the MMIO gap past the
/// virtio-mmio windows in use.
pub const URING_DOORBELL_START: u64 = 0xcf00_0000;
/// End of the 32-bit MMIO gap: RAM resumes here.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// IOAPIC base address.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC base address.
pub const APIC_START: u64 = 0xfee0_0000;
/// KVM's TSS (3 pages) and identity-map page sit just below the IOAPIC
/// window; Intel VMX needs them inside the 4 GiB space, outside RAM.
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// See [`KVM_TSS_START`].
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;

/// One contiguous piece of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRegion {
    /// Guest-physical start.
    pub guest_addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Offset of the region in the RAM backing file.
    pub file_offset: u64,
}

/// Splits `ram_size` bytes of RAM around the 32-bit MMIO gap.
pub fn ram_regions(ram_size: u64) -> Vec<RamRegion> {
    let low = ram_size.min(MMIO_GAP_START);
    let mut regions = vec![RamRegion {
        guest_addr: 0,
        len: low,
        file_offset: 0,
    }];
    if ram_size > low {
        regions.push(RamRegion {
            guest_addr: MMIO_GAP_END,
            len: ram_size - low,
            file_offset: low,
        });
    }
    regions
}

/// Kinds of e820 entries the guest is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved (the EBDA holding the MP table).
    Reserved = 2,
}

/// One e820 map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Kind.
    pub kind: E820Type,
}

/// The e820 map for `ram_size` bytes of RAM: conventional memory below the
/// EBDA, the EBDA reserved, then RAM from 1 MiB around the MMIO gap.
pub fn e820_map(ram_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820Type::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            size: 0xa0000 - EBDA_START,
            kind: E820Type::Reserved,
        },
    ];
    for region in ram_regions(ram_size) {
        let start = region.guest_addr.max(HIMEM_START);
        let end = region.guest_addr + region.len;
        if end > start {
            map.push(E820Entry {
                addr: start,
                size: end - start,
                kind: E820Type::Ram,
            });
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ram_is_one_region() {
        assert_eq!(
            ram_regions(512 << 20),
            vec![RamRegion {
                guest_addr: 0,
                len: 512 << 20,
                file_offset: 0
            }]
        );
    }

    #[test]
    fn large_ram_skips_the_mmio_gap() {
        let regions = ram_regions(5 << 30);
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[0].len, MMIO_GAP_START);
        assert_eq!(regions[1].guest_addr, MMIO_GAP_END);
        assert_eq!(regions[1].len, (5 << 30) - MMIO_GAP_START);
        assert_eq!(regions[1].file_offset, MMIO_GAP_START);
        let total: u64 = regions.iter().map(|r| r.len).sum();
        assert_eq!(total, 5 << 30);
    }

    #[test]
    fn ram_of_exactly_the_gap_start_has_no_high_region() {
        assert_eq!(ram_regions(MMIO_GAP_START).len(), 1);
    }

    #[test]
    fn e820_covers_ram_and_reserves_the_ebda() {
        let map = e820_map(4 << 30);
        assert_eq!(map[0].addr, 0);
        assert_eq!(map[0].size, EBDA_START);
        assert_eq!(map[1].kind, E820Type::Reserved);
        assert_eq!(map[2].addr, HIMEM_START);
        assert_eq!(map[2].size, MMIO_GAP_START - HIMEM_START);
        assert_eq!(map[3].addr, MMIO_GAP_END);
        assert_eq!(map[3].size, (4 << 30) - MMIO_GAP_START);
        // No RAM entry overlaps the gap or a device.
        for e in map.iter().filter(|e| e.kind == E820Type::Ram) {
            let end = e.addr + e.size;
            assert!(end <= MMIO_GAP_START || e.addr >= MMIO_GAP_END);
        }
    }

    #[test]
    fn fixed_boot_structures_do_not_overlap() {
        let mut areas = [
            (BOOT_GDT_START, 0x20),
            (BOOT_IDT_START, 8),
            (ZERO_PAGE_START, 0x1000),
            (PML4_START, 0x1000),
            (PDPTE_START, 0x1000),
            (PDE_START, 0x1000),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
            (EBDA_START, 0x400),
        ];
        areas.sort();
        for pair in areas.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:x?}");
        }
        const {
            assert!(
                BOOT_STACK_POINTER < PML4_START && BOOT_STACK_POINTER > ZERO_PAGE_START + 0x1000
            )
        };
    }
}
