//! The VM's configuration: parsed and validated from the command line, with
//! no I/O (but for reading the process's CPU affinity in
//! [`VmConfig::validate`]), so that every rule is unit-tested.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use crate::affinity::{self, CpuListError};

/// Errors in a user-supplied configuration value.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A size that is not a number with an optional K/M/G/T suffix.
    #[error(
        "invalid size {0:?}: expected a number with an optional K, M, G or T suffix (e.g. 512M)"
    )]
    InvalidSize(String),
    /// A `--memory` key that is not known.
    #[error("unknown --memory key {0:?}: expected size=SIZE or hugepages=off|2M|1G|required")]
    UnknownMemoryKey(String),
    /// A `--memory` item without `=`.
    #[error("invalid --memory item {0:?}: expected key=value")]
    MalformedMemoryItem(String),
    /// A `hugepages=` value that is not known.
    #[error("invalid hugepages value {0:?}: expected off, 2M, 1G or required")]
    InvalidHugepages(String),
    /// Guest RAM too small or too large.
    #[error("guest memory of {0} bytes is out of range: at least 64 MiB and at most 1 TiB")]
    MemoryOutOfRange(u64),
    /// Guest RAM that is not a whole number of the chosen pages.
    #[error("guest memory of {size} bytes is not a multiple of the {page}-byte hugepage size")]
    MemoryNotPageMultiple { size: u64, page: u64 },
    /// A vCPU count the VMM does not support.
    #[error("--cpus {0} is out of range: 1 to {max}", max = MAX_VCPUS)]
    CpusOutOfRange(u8),
    /// A `--disk` value that does not parse.
    #[error("invalid --disk {0:?}: expected path=FILE[,readonly=on|off][,direct=on|off]")]
    InvalidDisk(String),
    /// More disks than IRQ lines set aside for them.
    #[error("too many disks ({0}): at most {max}", max = MAX_DISKS)]
    TooManyDisks(usize),
    /// A `--uring` value that does not parse.
    #[error(
        "invalid --uring {0:?}: expected comma-separated rings=N (1 to {max}), polled=P (0 to N), \
         max-registered=SIZE (e.g. 4G), sq-cpu=C (one host CPU), arena=SIZE (e.g. 4G) and \
         page=2M|1G|required|1G-required (the arena's hugepages)",
        max = MAX_URING_RINGS
    )]
    InvalidUring(String),
    /// A host CPU list (`--vcpu-affinity`, `--uring sq-cpu=`) that does not
    /// parse.
    #[error("invalid {flag} {value:?}: {reason}; expected host CPUs such as 1, 0-3 or 0,2-3")]
    InvalidCpuList {
        /// The option (`--vcpu-affinity`, `--uring`).
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: CpuListError,
    },
    /// A host CPU that the ringvisor process may not run on.
    #[error("{flag} {value}: host CPU {cpu} is not available to ringvisor (allowed: {allowed})")]
    CpuNotAvailable {
        /// The option (`--vcpu-affinity`, `--uring`).
        flag: &'static str,
        /// Its value.
        value: String,
        /// The first CPU outside the allowed set.
        cpu: usize,
        /// The CPUs the process may run on, in CPU-list syntax.
        allowed: String,
    },
    /// The process's own CPU affinity cannot be read.
    #[error("cannot check host CPUs: {0}")]
    HostCpusUnknown(String),
    /// A `--uring-backend` value that does not parse.
    #[error("invalid --uring-backend {0:?}: expected path=FILE[,readonly=on|off][,direct=on|off]")]
    InvalidUringBackend(String),
    /// More backends than the device serves.
    #[error("too many --uring-backend ({0}): at most {max}", max = MAX_URING_BACKENDS)]
    TooManyUringBackends(usize),
    /// Every IRQ line for virtio devices is taken by disks.
    #[error("--uring needs a virtio IRQ line: use at most {} disks with it", MAX_DISKS - 1)]
    UringWithTooManyDisks,
}

/// Default ring slots of the pv-uring device.
pub const DEFAULT_URING_RINGS: u32 = 32;
/// Most ring slots of the pv-uring device.
pub const MAX_URING_RINGS: u32 = 256;
/// Most pv-uring backends.
pub const MAX_URING_BACKENDS: usize = 16;
/// Default number of polled pv-uring rings (each a host thread that may
/// spin on a CPU).
pub const DEFAULT_URING_POLLED: u32 = 1;

/// The paravirtual io_uring device (`--uring`, `--uring-backend`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringConfig {
    /// Ring slots.
    pub rings: u32,
    /// Most polled rings at once (`polled=`; 0: none).
    pub polled: u32,
    /// Most bytes the rings may have registered at once
    /// (`max-registered=`); `None`: the guest's RAM size.
    pub max_registered: Option<u64>,
    /// The host CPU of every polled ring's submitter thread and the
    /// device's worker (`sq-cpu=`); `None` leaves them to the scheduler.
    pub sq_cpu: Option<usize>,
    /// Host files every ring reaches as fixed files 0.., in order.
    pub backends: Vec<DiskConfig>,
    /// The buffer arena (`arena=SIZE`, `page=`), if any.
    pub arena: Option<ArenaOptions>,
}

/// The pv-uring buffer arena (`--uring arena=SIZE[,page=2M|1G|required|1G-required]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaOptions {
    /// Bytes.
    pub size: u64,
    /// Host hugepage size: 2 MiB (default) or 1 GiB.
    pub page: u64,
    /// Fail at start, rather than fall back to ordinary memory with a
    /// warning, when the host lacks the pages (`page=required`: 2 MiB,
    /// `page=1G-required`).
    pub required: bool,
}

/// What a `--uring` value says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringOptions {
    /// Ring slots (`rings=`).
    pub rings: u32,
    /// Most polled rings (`polled=`).
    pub polled: u32,
    /// Budget of registered bytes (`max-registered=`).
    pub max_registered: Option<u64>,
    /// The submitting threads' host CPU (`sq-cpu=`).
    pub sq_cpu: Option<usize>,
    /// The buffer arena (`arena=`, `page=`).
    pub arena: Option<ArenaOptions>,
}

impl Default for UringOptions {
    fn default() -> Self {
        Self {
            rings: DEFAULT_URING_RINGS,
            polled: DEFAULT_URING_POLLED,
            max_registered: None,
            sq_cpu: None,
            arena: None,
        }
    }
}

/// Parses a `--uring` value: empty (the defaults) or comma-separated
/// `rings=N`, `polled=P`, `max-registered=SIZE` and `sq-cpu=C`. Whether
/// CPU C is available to the process is checked by [`VmConfig::validate`].
pub fn parse_uring(s: &str) -> Result<UringOptions, ConfigError> {
    let bad = || ConfigError::InvalidUring(s.to_string());
    let mut options = UringOptions::default();
    let mut polled = None;
    let (mut arena, mut page) = (None, None);
    for item in s.split(',').filter(|i| !i.is_empty()) {
        match item.split_once('=') {
            Some(("rings", v)) => options.rings = v.parse().map_err(|_| bad())?,
            Some(("polled", v)) => polled = Some(v.parse().map_err(|_| bad())?),
            Some(("max-registered", v)) => {
                let size = parse_size(v).map_err(|_| bad())?;
                if size == 0 {
                    return Err(bad());
                }
                options.max_registered = Some(size);
            }
            Some(("sq-cpu", v)) => {
                let cpus =
                    affinity::parse_cpu_list(v).map_err(|reason| ConfigError::InvalidCpuList {
                        flag: "--uring",
                        value: s.to_string(),
                        reason,
                    })?;
                match cpus[..] {
                    [cpu] if !v.contains([',', '-']) => options.sq_cpu = Some(cpu),
                    _ => return Err(bad()),
                }
            }
            Some(("arena", v)) => arena = Some(parse_size(v).map_err(|_| bad())?),
            Some(("page", v)) => {
                page = Some(match v.to_ascii_lowercase().as_str() {
                    "2m" => (2 << 20, false),
                    "1g" => (1 << 30, false),
                    "required" | "2m-required" => (2 << 20, true),
                    "1g-required" => (1 << 30, true),
                    _ => return Err(bad()),
                })
            }
            _ => return Err(bad()),
        }
    }
    if options.rings == 0 || options.rings > MAX_URING_RINGS {
        return Err(bad());
    }
    // The default never asks for more polled rings than there are rings.
    options.polled = polled.unwrap_or(DEFAULT_URING_POLLED.min(options.rings));
    if options.polled > options.rings {
        return Err(bad());
    }
    let page_given = page.is_some();
    let (page, required) = page.unwrap_or((2 << 20, false));
    options.arena = match arena {
        // The arena splits into at most 1024 chunks of a power-of-two
        // multiple of the page (docs/pv-uring.md, "The buffer arena").
        Some(size) if devices::virtio::uring::arena_chunk_size(size, page).is_some() => {
            Some(ArenaOptions {
                size,
                page,
                required,
            })
        }
        Some(_) => return Err(bad()),
        // page= without arena= says nothing.
        None if page_given => return Err(bad()),
        None => None,
    };
    Ok(options)
}

/// Parses a `--vcpu-affinity` value (a host CPU list: `1`, `0-3`,
/// `0,2-3`). Whether the CPUs are available to the process is checked by
/// [`VmConfig::validate`].
pub fn parse_vcpu_affinity(s: &str) -> Result<Vec<usize>, ConfigError> {
    affinity::parse_cpu_list(s).map_err(|reason| ConfigError::InvalidCpuList {
        flag: "--vcpu-affinity",
        value: s.to_string(),
        reason,
    })
}

/// Checks that every CPU in `cpus` is in `allowed` (the process's
/// affinity); the error names `flag`, `value` and the allowed set.
pub fn check_host_cpus(
    flag: &'static str,
    value: &str,
    cpus: &[usize],
    allowed: &[usize],
) -> Result<(), ConfigError> {
    match cpus.iter().find(|c| !allowed.contains(c)) {
        None => Ok(()),
        Some(&cpu) => Err(ConfigError::CpuNotAvailable {
            flag,
            value: value.to_string(),
            cpu,
            allowed: affinity::format_cpu_list(allowed),
        }),
    }
}

/// Parses a `--uring-backend` value (the `--disk` syntax).
pub fn parse_uring_backend(s: &str) -> Result<DiskConfig, ConfigError> {
    s.parse()
        .map_err(|_| ConfigError::InvalidUringBackend(s.to_string()))
}

/// The most `--disk`s a VM may have (one IRQ line each, see `layout`).
pub const MAX_DISKS: usize = 8;

/// One `--disk`: a host file served as a virtio-blk device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The host file (or block device).
    pub path: PathBuf,
    /// The guest sees a read-only disk (VIRTIO_BLK_F_RO); the file is
    /// opened read-only.
    pub readonly: bool,
    /// The file is opened with O_DIRECT (bypassing the host page cache).
    pub direct: bool,
}

fn parse_on_off(key: &str, v: &str, whole: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(ConfigError::InvalidDisk(format!("{whole} ({key}={v})"))),
    }
}

impl FromStr for DiskConfig {
    type Err = ConfigError;

    /// Parses `path=FILE[,readonly=on|off][,direct=on|off]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::InvalidDisk(s.to_string());
        let (mut path, mut readonly, mut direct) = (None, false, false);
        for item in s.split(',') {
            match item.split_once('=') {
                Some(("path", v)) if !v.is_empty() && path.is_none() => {
                    path = Some(PathBuf::from(v))
                }
                Some(("readonly", v)) => readonly = parse_on_off("readonly", v, s)?,
                Some(("direct", v)) => direct = parse_on_off("direct", v, s)?,
                _ => return Err(bad()),
            }
        }
        Ok(DiskConfig {
            path: path.ok_or_else(bad)?,
            readonly,
            direct,
        })
    }
}

/// The most vCPUs a guest may have (the MP table and APIC IDs allow more,
/// the guest kernel config is built for this many).
pub const MAX_VCPUS: u8 = 8;

/// Parses a byte size such as `512M`, `2G`, `4096` or `64KiB`.
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let err = || ConfigError::InvalidSize(s.to_string());
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let stripped = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let split = stripped
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(stripped.len());
    let (digits, suffix) = stripped.split_at(split);
    let number: u64 = digits.parse().map_err(|_| err())?;
    let shift = match suffix {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(err()),
    };
    number.checked_mul(1u64 << shift).ok_or_else(err)
}

/// How guest RAM is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugepagePolicy {
    /// Ordinary shared memory (with transparent-hugepage advice).
    Off,
    /// 2 MiB hugetlb pages; falls back to ordinary memory with a warning.
    Size2M,
    /// 1 GiB hugetlb pages; falls back to ordinary memory with a warning.
    Size1G,
    /// 2 MiB hugetlb pages; too few free pages is an error.
    Required,
}

impl HugepagePolicy {
    /// The hugetlb page size this policy asks for, if any.
    pub fn page_size(self) -> Option<u64> {
        match self {
            HugepagePolicy::Off => None,
            HugepagePolicy::Size2M | HugepagePolicy::Required => Some(2 << 20),
            HugepagePolicy::Size1G => Some(1 << 30),
        }
    }
}

impl FromStr for HugepagePolicy {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "off" | "none" => Ok(HugepagePolicy::Off),
            "2m" | "on" => Ok(HugepagePolicy::Size2M),
            "1g" => Ok(HugepagePolicy::Size1G),
            "required" => Ok(HugepagePolicy::Required),
            _ => Err(ConfigError::InvalidHugepages(s.to_string())),
        }
    }
}

/// Guest RAM: its size and backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Bytes of guest RAM.
    pub size: u64,
    /// Hugepage backing.
    pub hugepages: HugepagePolicy,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            size: 256 << 20,
            hugepages: HugepagePolicy::Size2M,
        }
    }
}

impl MemoryConfig {
    /// Smallest guest RAM accepted.
    pub const MIN_SIZE: u64 = 64 << 20;
    /// Largest guest RAM accepted.
    pub const MAX_SIZE: u64 = 1 << 40;

    fn validate(self) -> Result<Self, ConfigError> {
        if !(Self::MIN_SIZE..=Self::MAX_SIZE).contains(&self.size) {
            return Err(ConfigError::MemoryOutOfRange(self.size));
        }
        if let Some(page) = self.hugepages.page_size() {
            if !self.size.is_multiple_of(page) {
                return Err(ConfigError::MemoryNotPageMultiple {
                    size: self.size,
                    page,
                });
            }
        }
        Ok(self)
    }
}

impl FromStr for MemoryConfig {
    type Err = ConfigError;

    /// Parses `size=SIZE[,hugepages=off|2M|1G|required]`; a bare `SIZE` is
    /// accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut config = MemoryConfig::default();
        for item in s.split(',').filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                Some(("size", v)) => config.size = parse_size(v)?,
                Some(("hugepages", v)) => config.hugepages = v.parse()?,
                Some((k, _)) => return Err(ConfigError::UnknownMemoryKey(k.to_string())),
                None => match parse_size(item) {
                    Ok(size) => config.size = size,
                    Err(_) => return Err(ConfigError::MalformedMemoryItem(item.to_string())),
                },
            }
        }
        config.validate()
    }
}

/// Whether to apply the nested-PVM compatibility measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PvmMode {
    /// Detect PVM on this host (`/sys/module/kvm_pvm`).
    #[default]
    Auto,
    /// Apply them whatever the host is.
    On,
    /// Never apply them.
    Off,
}

/// Everything needed to build and run one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Guest kernel (ELF vmlinux or bzImage).
    pub kernel: PathBuf,
    /// Optional initramfs (cpio).
    pub initramfs: Option<PathBuf>,
    /// `--file`: host files added to the initramfs (see `guest_files`).
    pub files: Vec<crate::guest_files::FileSpec>,
    /// Extra kernel command line, appended to the VMM's own.
    pub cmdline: String,
    /// Number of vCPUs.
    pub cpus: u8,
    /// Guest RAM.
    pub memory: MemoryConfig,
    /// Kill the guest after this long.
    pub timeout: Option<Duration>,
    /// Nested-PVM compatibility.
    pub pvm: PvmMode,
    /// Print boot timings and emulation statistics at exit.
    pub timings: bool,
    /// virtio-blk disks, in guest order (/dev/vda, /dev/vdb, ...).
    pub disks: Vec<DiskConfig>,
    /// The pv-uring device, if enabled.
    pub uring: Option<UringConfig>,
    /// The host CPUs every vCPU thread is restricted to; `None` leaves
    /// them where the process may run.
    pub vcpu_affinity: Option<Vec<usize>>,
    /// `--guest-profile`: sample the vCPUs' instruction pointers.
    pub guest_profile: Option<crate::guest_profile::ProfileConfig>,
}

impl VmConfig {
    /// Checks the values that depend on each other and, when host CPUs are
    /// named, that the process may run on them (`sched_getaffinity`).
    pub fn validate(self) -> Result<Self, ConfigError> {
        let names_cpus =
            self.vcpu_affinity.is_some() || self.uring.as_ref().is_some_and(|u| u.sq_cpu.is_some());
        let allowed = if names_cpus {
            affinity::current_thread_cpus()
                .map_err(|e| ConfigError::HostCpusUnknown(e.to_string()))?
        } else {
            Vec::new()
        };
        self.validate_for_host(&allowed)
    }

    /// [`VmConfig::validate`] with the host CPUs the process may run on
    /// given.
    pub fn validate_for_host(self, allowed: &[usize]) -> Result<Self, ConfigError> {
        if let Some(cpus) = &self.vcpu_affinity {
            check_host_cpus(
                "--vcpu-affinity",
                &affinity::format_cpu_list(cpus),
                cpus,
                allowed,
            )?;
        }
        if let Some(cpu) = self.uring.as_ref().and_then(|u| u.sq_cpu) {
            check_host_cpus("--uring", &format!("sq-cpu={cpu}"), &[cpu], allowed)?;
        }
        if self.cpus == 0 || self.cpus > MAX_VCPUS {
            return Err(ConfigError::CpusOutOfRange(self.cpus));
        }
        if self.disks.len() > MAX_DISKS {
            return Err(ConfigError::TooManyDisks(self.disks.len()));
        }
        if let Some(uring) = &self.uring {
            if uring.backends.len() > MAX_URING_BACKENDS {
                return Err(ConfigError::TooManyUringBackends(uring.backends.len()));
            }
            if uring.rings == 0 || uring.rings > MAX_URING_RINGS {
                return Err(ConfigError::InvalidUring(format!("rings={}", uring.rings)));
            }
            if uring.polled > uring.rings {
                return Err(ConfigError::InvalidUring(format!(
                    "rings={},polled={}",
                    uring.rings, uring.polled
                )));
            }
            if self.disks.len() >= MAX_DISKS {
                return Err(ConfigError::UringWithTooManyDisks);
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        for bad in ["", "M", "12X", "-1", "1.5G", "99999999999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_size("20000000T").is_err(), "overflow accepted");
    }

    #[test]
    fn memory_spec_parses_keys_and_bare_size() {
        let m: MemoryConfig = "size=1G,hugepages=1G".parse().unwrap();
        assert_eq!(m.size, 1 << 30);
        assert_eq!(m.hugepages, HugepagePolicy::Size1G);
        let m: MemoryConfig = "256M".parse().unwrap();
        assert_eq!(m.size, 256 << 20);
        assert_eq!(m.hugepages, HugepagePolicy::Size2M);
        let m: MemoryConfig = "size=128M,hugepages=off".parse().unwrap();
        assert_eq!(m.hugepages, HugepagePolicy::Off);
        let m: MemoryConfig = "size=128M,hugepages=required".parse().unwrap();
        assert_eq!(m.hugepages.page_size(), Some(2 << 20));
    }

    #[test]
    fn memory_spec_errors_name_the_bad_part() {
        assert_eq!(
            "size=1G,color=red".parse::<MemoryConfig>(),
            Err(ConfigError::UnknownMemoryKey("color".into()))
        );
        assert_eq!(
            "hugepages=4M".parse::<MemoryConfig>(),
            Err(ConfigError::InvalidHugepages("4M".into()))
        );
        assert_eq!(
            "lots".parse::<MemoryConfig>(),
            Err(ConfigError::MalformedMemoryItem("lots".into()))
        );
        assert_eq!(
            "size=16M".parse::<MemoryConfig>(),
            Err(ConfigError::MemoryOutOfRange(16 << 20))
        );
        assert_eq!(
            "size=1025M,hugepages=off"
                .parse::<MemoryConfig>()
                .unwrap()
                .size,
            1025 << 20
        );
        assert_eq!(
            "size=1025M".parse::<MemoryConfig>(),
            Err(ConfigError::MemoryNotPageMultiple {
                size: 1025 << 20,
                page: 2 << 20
            })
        );
        assert!("size=1536M,hugepages=1G".parse::<MemoryConfig>().is_err());
    }

    #[test]
    fn cpu_count_is_bounded() {
        let config = VmConfig {
            kernel: "vmlinux".into(),
            initramfs: None,
            files: Vec::new(),
            cmdline: String::new(),
            cpus: 1,
            memory: MemoryConfig::default(),
            timeout: None,
            pvm: PvmMode::Auto,
            timings: false,
            disks: Vec::new(),
            uring: None,
            vcpu_affinity: None,
            guest_profile: None,
        };
        assert!(config.clone().validate().is_ok());
        let zero = VmConfig {
            cpus: 0,
            ..config.clone()
        };
        assert_eq!(zero.validate(), Err(ConfigError::CpusOutOfRange(0)));
        let many = VmConfig {
            cpus: 9,
            ..config.clone()
        };
        assert_eq!(many.validate(), Err(ConfigError::CpusOutOfRange(9)));
        let disk: DiskConfig = "path=d".parse().unwrap();
        let disks = VmConfig {
            disks: vec![disk; MAX_DISKS + 1],
            ..config
        };
        assert_eq!(
            disks.validate(),
            Err(ConfigError::TooManyDisks(MAX_DISKS + 1))
        );
    }

    #[test]
    fn uring_arena_specs() {
        let arena = |s| parse_uring(s).map(|o| o.arena);
        assert_eq!(arena(""), Ok(None));
        assert_eq!(
            arena("arena=4G"),
            Ok(Some(ArenaOptions {
                size: 4 << 30,
                page: 2 << 20,
                required: false
            }))
        );
        assert_eq!(
            arena("arena=8G,page=1G-required"),
            Ok(Some(ArenaOptions {
                size: 8 << 30,
                page: 1 << 30,
                required: true
            }))
        );
        assert_eq!(
            arena("page=required,arena=64M").unwrap().unwrap().page,
            2 << 20
        );
        // Not a whole number of chunks, no page without an arena, an
        // unknown page, a chunk above 1 GiB (2 TiB of 1 GiB pages).
        for bad in [
            "arena=3M",
            "page=1G",
            "arena=4G,page=4K",
            "arena=2048G,page=1G",
            "arena=0",
        ] {
            assert!(
                matches!(parse_uring(bad), Err(ConfigError::InvalidUring(ref v)) if v == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn uring_specs_parse_and_validate() {
        let rings = |s| parse_uring(s).map(|o| o.rings);
        assert_eq!(rings(""), Ok(32));
        assert_eq!(rings("rings=1"), Ok(1));
        assert_eq!(rings("rings=256"), Ok(256));
        assert_eq!(
            parse_uring("rings=2,sq-cpu=1"),
            Ok(UringOptions {
                rings: 2,
                sq_cpu: Some(1),
                ..UringOptions::default()
            })
        );
        assert_eq!(
            parse_uring("sq-cpu=0"),
            Ok(UringOptions {
                sq_cpu: Some(0),
                ..UringOptions::default()
            })
        );
        assert_eq!(
            parse_uring("polled=4,max-registered=2G"),
            Ok(UringOptions {
                polled: 4,
                max_registered: Some(2 << 30),
                ..UringOptions::default()
            })
        );
        assert_eq!(parse_uring("polled=0").unwrap().polled, 0);
        assert_eq!(parse_uring("").unwrap().polled, 1);
        assert_eq!(parse_uring("rings=4").unwrap().sq_cpu, None);
        for bad in [
            "rings=0",
            "rings=257",
            "rings=x",
            "rings",
            "ring=4",
            "rings=4,x=1",
            "sq-cpu=0-1",
            "sq-cpu=0,rings=2,1",
            "rings=2,sq-cpu=1,2",
            "rings=2,polled=3",
            "polled=-1",
            "polled=x",
            "max-registered=0",
            "max-registered=lots",
        ] {
            assert_eq!(
                parse_uring(bad),
                Err(ConfigError::InvalidUring(bad.into())),
                "{bad:?}"
            );
        }
        let b = parse_uring_backend("path=/tmp/f,readonly=on,direct=on").unwrap();
        assert!(b.readonly && b.direct);
        assert_eq!(b.path, PathBuf::from("/tmp/f"));
        for bad in ["", "f", "path=", "path=f,readonly=maybe", "path=f,x=1"] {
            assert_eq!(
                parse_uring_backend(bad),
                Err(ConfigError::InvalidUringBackend(bad.into()))
            );
        }
        let base = VmConfig {
            kernel: "vmlinux".into(),
            initramfs: None,
            files: Vec::new(),
            cmdline: String::new(),
            cpus: 1,
            memory: MemoryConfig::default(),
            timeout: None,
            pvm: PvmMode::Auto,
            timings: false,
            disks: Vec::new(),
            vcpu_affinity: None,
            guest_profile: None,
            uring: Some(UringConfig {
                rings: 32,
                polled: 1,
                max_registered: None,
                sq_cpu: None,
                backends: vec![parse_uring_backend("path=f").unwrap(); MAX_URING_BACKENDS],
                arena: None,
            }),
        };
        assert!(base.clone().validate().is_ok());
        let mut many = base.clone();
        many.uring
            .as_mut()
            .unwrap()
            .backends
            .push(parse_uring_backend("path=g").unwrap());
        assert_eq!(
            many.validate(),
            Err(ConfigError::TooManyUringBackends(MAX_URING_BACKENDS + 1))
        );
        let mut rings = base.clone();
        let mut polled = base.clone();
        polled.uring.as_mut().unwrap().polled = 33;
        assert!(matches!(
            polled.validate(),
            Err(ConfigError::InvalidUring(_))
        ));
        rings.uring.as_mut().unwrap().rings = 300;
        assert!(rings.validate().is_err());
        let disks = VmConfig {
            disks: vec!["path=d".parse().unwrap(); MAX_DISKS],
            ..base
        };
        assert_eq!(disks.validate(), Err(ConfigError::UringWithTooManyDisks));
    }

    #[test]
    fn host_cpus_are_checked_against_the_allowed_set() {
        assert_eq!(parse_vcpu_affinity("0,2-3"), Ok(vec![0, 2, 3]));
        assert_eq!(
            parse_vcpu_affinity("3-1"),
            Err(ConfigError::InvalidCpuList {
                flag: "--vcpu-affinity",
                value: "3-1".into(),
                reason: CpuListError::Backwards("3-1".into())
            })
        );
        assert!(matches!(
            parse_uring("rings=2,sq-cpu=x"),
            Err(ConfigError::InvalidCpuList {
                flag: "--uring",
                ..
            })
        ));
        let base = VmConfig {
            kernel: "vmlinux".into(),
            initramfs: None,
            files: Vec::new(),
            cmdline: String::new(),
            cpus: 2,
            memory: MemoryConfig::default(),
            timeout: None,
            pvm: PvmMode::Auto,
            timings: false,
            disks: Vec::new(),
            uring: Some(UringConfig {
                rings: 2,
                polled: 1,
                max_registered: None,
                sq_cpu: Some(1),
                backends: Vec::new(),
                arena: None,
            }),
            vcpu_affinity: Some(vec![0]),
            guest_profile: None,
        };
        assert!(base.clone().validate_for_host(&[0, 1]).is_ok());
        let e = VmConfig {
            vcpu_affinity: Some(vec![5]),
            ..base.clone()
        }
        .validate_for_host(&[0, 1])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--vcpu-affinity 5: host CPU 5 is not available to ringvisor (allowed: 0-1)"
        );
        let e = VmConfig {
            vcpu_affinity: Some(vec![0, 2, 3]),
            ..base.clone()
        }
        .validate_for_host(&[0, 1, 3])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--vcpu-affinity 0,2-3: host CPU 2 is not available to ringvisor (allowed: 0-1,3)"
        );
        let e = base.validate_for_host(&[0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--uring sq-cpu=1: host CPU 1 is not available to ringvisor (allowed: 0)"
        );
    }

    #[test]
    fn disk_specs_parse() {
        let d: DiskConfig = "path=/tmp/a.img".parse().unwrap();
        assert_eq!(
            d,
            DiskConfig {
                path: "/tmp/a.img".into(),
                readonly: false,
                direct: false
            }
        );
        let d: DiskConfig = "path=x,readonly=on,direct=on".parse().unwrap();
        assert!(d.readonly && d.direct);
        let d: DiskConfig = "direct=off,path=x,readonly=off".parse().unwrap();
        assert!(!d.readonly && !d.direct);
        for bad in [
            "",
            "x.img",
            "path=",
            "readonly=on",
            "path=x,readonly=maybe",
            "path=x,direct",
            "path=x,color=red",
            "path=x,path=y",
        ] {
            assert!(
                matches!(bad.parse::<DiskConfig>(), Err(ConfigError::InvalidDisk(_))),
                "{bad:?} parsed"
            );
        }
    }
}
