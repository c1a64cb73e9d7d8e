//! Nested PVM: what ringvisor does differently when `/dev/kvm` is served by
//! PVM (see README, "Running on nested PVM"). The decisions are pure and
//! unit-tested; only [`host_is_pvm`] looks at the host.

use std::path::Path;

use crate::config::PvmMode;

/// Present when the host's KVM is the PVM flavour.
pub const PVM_MODULE_DIR: &str = "/sys/module/kvm_pvm";

/// Guest command-line defaults under PVM. The host's emulator runs every
/// guest kernel instruction and lacks XSAVE/XRSTOR, SMAP's CLAC/STAC, POPCNT
/// and more: these keep the guest kernel off them. `ringvisor_pvm` turns on
/// the guest compatibility patch (guest-kernel-patches/0001), inert without
/// it.
pub const PVM_CMDLINE: &str = "noxsave mitigations=off \
    clearcpuid=smap,smep,umip,popcnt,fsgsbase,rdpid,pku,rdrand,rdseed,movbe,bmi1,bmi2,avx,avx2,avx512f,erms,fsrm \
    ringvisor_pvm";

/// Whether this host's KVM is PVM.
pub fn host_is_pvm() -> bool {
    Path::new(PVM_MODULE_DIR).exists()
}

/// Whether to apply the PVM measures, from the user's choice and the host.
pub fn pvm_enabled(mode: PvmMode, host_pvm: bool) -> bool {
    match mode {
        PvmMode::Auto => host_pvm,
        PvmMode::On => true,
        PvmMode::Off => false,
    }
}

/// The VMM's part of the kernel command line.
pub fn base_cmdline(pvm: bool, tsc_khz: Option<u32>) -> String {
    // quiet: every console byte is a trapped port write and emulated driver
    // code on PVM; panics still print. io_delay=none: no port 0x80 writes.
    let mut cmdline = String::from("console=ttyS0 reboot=k panic=-1 quiet io_delay=none");
    if let Some(khz) = tsc_khz {
        // Skip the PIT-based TSC calibration loop.
        cmdline.push_str(&format!(" tsc_early_khz={khz} tsc=reliable no_timer_check"));
    }
    if pvm {
        cmdline.push(' ');
        cmdline.push_str(PVM_CMDLINE);
    }
    cmdline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_host_and_explicit_modes_override() {
        assert!(pvm_enabled(PvmMode::Auto, true));
        assert!(!pvm_enabled(PvmMode::Auto, false));
        assert!(pvm_enabled(PvmMode::On, false));
        assert!(!pvm_enabled(PvmMode::Off, true));
    }

    #[test]
    fn hardware_kvm_gets_no_pvm_measures() {
        let c = base_cmdline(false, Some(2_000_000));
        assert!(!c.contains("noxsave"));
        assert!(!c.contains("ringvisor_pvm"));
        assert!(!c.contains("clearcpuid"));
        assert!(c.contains("tsc_early_khz=2000000"));
    }

    #[test]
    fn pvm_gets_the_compatibility_defaults() {
        let c = base_cmdline(true, None);
        assert!(c.starts_with("console=ttyS0"));
        for needed in ["noxsave", "clearcpuid=smap,", "popcnt", "ringvisor_pvm"] {
            assert!(c.contains(needed), "{needed} missing from {c}");
        }
        assert!(!c.contains("tsc_early_khz"));
    }
}
