//! `--guest-profile`: where the guest's vCPUs spend their time. The VMM
//! samples each vCPU's instruction pointer at a fixed rate (a kick out of
//! KVM_RUN, then KVM_GET_REGS on the vCPU's own thread) and names the
//! samples with the guest kernel's symbol table.
//!
//! On nested PVM every guest kernel instruction is emulated, about 3,000
//! times slower than native, so a guest command's latency is mostly the
//! guest kernel instructions on its path; this says which functions they
//! are, with nothing added to the guest. Each sample is one exit of the
//! vCPU it lands on (tens of microseconds on nested PVM, about 1% of a
//! vCPU at the default rate).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

/// Samples per second per vCPU unless `hz=` says otherwise: prime, so
/// that sampling does not run in step with the guest's 100 Hz tick.
pub const DEFAULT_HZ: u32 = 997;
/// The highest rate `hz=` takes: above it the exits themselves would be a
/// large share of the vCPU's time on nested PVM.
pub const MAX_HZ: u32 = 10_000;
/// Functions the report lists (the rest are summed in one line).
const TOP_FUNCTIONS: usize = 40;
/// Single instruction addresses the report lists.
const TOP_ADDRESSES: usize = 20;
/// Guest-virtual addresses from here up are the guest kernel's (x86-64
/// Linux: the upper half of the canonical address space).
const KERNEL_HALF: u64 = 1 << 63;

/// `--guest-profile FILE[,hz=N][,symbols=VMLINUX][,from=workload]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileConfig {
    /// Where the report is written when the run ends.
    pub out: PathBuf,
    /// Samples per second per vCPU.
    pub hz: u32,
    /// The ELF vmlinux whose symbols name the samples (default: --kernel;
    /// on a restore, none unless given: the report lists addresses).
    pub symbols: Option<PathBuf>,
    /// Sample only from the moment the guest's /init starts the workload
    /// (`from=workload`), leaving the boot out.
    pub from_workload: bool,
}

/// Errors of the guest profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A bad `--guest-profile` value.
    #[error(
        "--guest-profile {0:?}: expected FILE[,hz=N][,symbols=VMLINUX][,from=workload] with N \
         from 1 to {MAX_HZ}"
    )]
    Spec(String),
    /// The symbol file could not be read.
    #[error("reading the guest kernel symbols from {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The symbol file is not an ELF file with symbols.
    #[error("{path} is not an ELF vmlinux with a symbol table ({why}): name one with symbols=")]
    NoSymbols {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The report could not be written.
    #[error("writing the guest profile to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl ProfileConfig {
    /// Parses `FILE[,hz=N][,symbols=VMLINUX][,from=workload]`.
    pub fn parse(spec: &str) -> Result<Self, ProfileError> {
        let bad = || ProfileError::Spec(spec.to_string());
        let mut parts = spec.split(',');
        let out = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
        let mut config = Self {
            out: PathBuf::from(out),
            hz: DEFAULT_HZ,
            symbols: None,
            from_workload: false,
        };
        for part in parts {
            match part.split_once('=') {
                Some(("hz", n)) => {
                    config.hz = n
                        .parse()
                        .ok()
                        .filter(|hz| (1..=MAX_HZ).contains(hz))
                        .ok_or_else(bad)?
                }
                Some(("symbols", path)) if !path.is_empty() => {
                    config.symbols = Some(PathBuf::from(path))
                }
                Some(("from", "workload")) => config.from_workload = true,
                Some(("from", "start")) => config.from_workload = false,
                _ => return Err(bad()),
            }
        }
        Ok(config)
    }
}

/// The guest kernel's functions, sorted by address.
#[derive(Debug, Default)]
pub struct Symbols {
    /// (start, size, name); a size of 0 reaches to the next symbol.
    functions: Vec<(u64, u64, String)>,
}

impl Symbols {
    /// The function and text symbols of the ELF file at `path`.
    pub fn from_elf(path: &Path) -> Result<Self, ProfileError> {
        let data = std::fs::read(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let no_symbols = |why: String| ProfileError::NoSymbols {
            path: path.to_path_buf(),
            why,
        };
        let file = object::File::parse(&*data).map_err(|e| no_symbols(e.to_string()))?;
        // Every named symbol in a code section: the assembly entry points
        // (entry_SYSCALL_64, the interrupt stubs) have no function type.
        let in_code = |s: &object::Symbol<'_, '_>| {
            s.section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .is_some_and(|sec| sec.kind() == SectionKind::Text)
        };
        let functions = file
            .symbols()
            .filter(|s| {
                matches!(
                    s.kind(),
                    SymbolKind::Text | SymbolKind::Unknown | SymbolKind::Label
                )
            })
            .filter(|s| s.address() != 0 && in_code(s))
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
            .filter(|f| !f.2.is_empty())
            .collect();
        let symbols = Self::new(functions);
        if symbols.functions.is_empty() {
            return Err(no_symbols("no function symbols".into()));
        }
        Ok(symbols)
    }

    /// Symbols from (start, size, name) triples, in any order. Of several
    /// at one address, a function (with a size) wins over a label (a
    /// section's start or end marker).
    pub fn new(mut functions: Vec<(u64, u64, String)>) -> Self {
        functions.sort_unstable_by(|a, b| (a.0, a.1 == 0, &a.2).cmp(&(b.0, b.1 == 0, &b.2)));
        functions.dedup_by_key(|f| f.0);
        Self { functions }
    }

    /// The function `addr` is in, and its offset there.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self
            .functions
            .partition_point(|f| f.0 <= addr)
            .checked_sub(1)?;
        let (start, size, name) = &self.functions[i];
        let offset = addr - start;
        let next = self.functions.get(i + 1).map_or(u64::MAX, |f| f.0);
        let inside = if *size > 0 {
            offset < *size
        } else {
            addr < next
        };
        inside.then_some((name.as_str(), offset))
    }
}

/// The samples of one run, and where their report goes.
pub struct GuestProfile {
    /// The report's file, created at start (a bad path fails the run
    /// before the guest starts, not after it ran).
    out: Mutex<Option<(PathBuf, std::fs::File)>>,
    /// The symbols that name guest kernel addresses, and their file.
    symbols: Option<(PathBuf, Symbols)>,
    /// Per vCPU: a sample is asked for (set by the sampler, taken by the
    /// vCPU's thread when the kick gets it out of KVM_RUN).
    requested: Vec<AtomicBool>,
    /// Guest instruction pointer -> samples.
    samples: Mutex<HashMap<u64, u64>>,
    /// Kicks whose registers could not be read.
    unread: AtomicU64,
    hz: u32,
    /// The first request: what the samples cover starts there.
    first: std::sync::OnceLock<Instant>,
}

impl GuestProfile {
    /// Starts the profile `config` asks for, of `vcpus` vCPUs: creates its
    /// report file and reads the symbols of `config.symbols` (an error if
    /// they cannot be read) or else of `kernel` (addresses only, with a
    /// warning, when it has none: a bzImage, a stripped vmlinux, or none
    /// at all on a restore).
    pub fn start(
        config: &ProfileConfig,
        kernel: &Path,
        vcpus: usize,
    ) -> Result<Self, ProfileError> {
        let symbols = match &config.symbols {
            Some(p) => Some((p.clone(), Symbols::from_elf(p)?)),
            None if kernel.as_os_str().is_empty() => {
                log::warn!("guest profile: no symbols= on a restore: the report lists addresses");
                None
            }
            None => match Symbols::from_elf(kernel) {
                Ok(s) => Some((kernel.to_path_buf(), s)),
                Err(e) => {
                    log::warn!("guest profile: {e}; the report lists addresses");
                    None
                }
            },
        };
        let file = std::fs::File::create(&config.out).map_err(|source| ProfileError::Write {
            path: config.out.clone(),
            source,
        })?;
        let mut profile = Self::new(vcpus, config.hz);
        profile.out = Mutex::new(Some((config.out.clone(), file)));
        profile.symbols = symbols;
        Ok(profile)
    }

    /// A profile of `vcpus` vCPUs sampled `hz` times a second each, with
    /// no file and no symbols.
    pub fn new(vcpus: usize, hz: u32) -> Self {
        Self {
            out: Mutex::new(None),
            symbols: None,
            requested: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            samples: Mutex::new(HashMap::new()),
            unread: AtomicU64::new(0),
            hz,
            first: std::sync::OnceLock::new(),
        }
    }

    /// Time between two samples of a vCPU.
    pub fn period(&self) -> Duration {
        Duration::from_secs(1) / self.hz.max(1)
    }

    /// Asks every vCPU for a sample; the caller then kicks them.
    pub fn request_all(&self) {
        self.first.get_or_init(Instant::now);
        for r in &self.requested {
            r.store(true, Ordering::SeqCst);
        }
    }

    /// Whether vCPU `cpu` owes a sample (and clears the request).
    pub fn take_request(&self, cpu: usize) -> bool {
        self.requested
            .get(cpu)
            .is_some_and(|r| r.swap(false, Ordering::SeqCst))
    }

    /// Counts a sample at guest address `rip` (`None`: unreadable).
    pub fn record(&self, rip: Option<u64>) {
        let Some(rip) = rip else {
            self.unread.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        *samples.entry(rip).or_default() += 1;
    }

    /// Samples taken so far.
    pub fn total(&self) -> u64 {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.values().sum()
    }

    /// The report: samples by function, then the busiest addresses,
    /// guest kernel addresses named by the profile's symbols, if any.
    pub fn report(&self) -> String {
        let symbols = self.symbols.as_ref().map(|(p, s)| (p.as_path(), s));
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let total: u64 = samples.values().sum();
        let name = |rip: u64| -> String {
            if rip < KERNEL_HALF {
                return "[guest user mode]".into();
            }
            match symbols.and_then(|(_, s)| s.lookup(rip)) {
                Some((f, _)) => f.to_string(),
                None => "[guest kernel, no symbol]".into(),
            }
        };
        let mut by_function: HashMap<String, u64> = HashMap::new();
        for (&rip, &n) in samples.iter() {
            *by_function.entry(name(rip)).or_default() += n;
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# ringvisor guest profile: {total} samples of {} vCPU(s) at {} Hz over {:.2} s \
             ({} kicks without registers); symbols: {}",
            self.requested.len(),
            self.hz,
            self.first.get().map_or(0.0, |t| t.elapsed().as_secs_f64()),
            self.unread.load(Ordering::Relaxed),
            symbols.map_or("none (addresses only)".into(), |(p, _)| p
                .display()
                .to_string()),
        );
        let _ = writeln!(out, "# samples  share  function");
        write_top(&mut out, sorted(by_function), total, TOP_FUNCTIONS);
        let _ = writeln!(out, "# samples  share  address");
        let addresses = samples.iter().map(|(&rip, &n)| {
            let at = match symbols.and_then(|(_, s)| s.lookup(rip)) {
                Some((f, off)) if rip >= KERNEL_HALF => format!("{rip:#x} {f}+{off:#x}"),
                _ => format!("{rip:#x} {}", name(rip)),
            };
            (at, n)
        });
        write_top(&mut out, sorted(addresses), total, TOP_ADDRESSES);
        out
    }

    /// Writes the report to the file [`GuestProfile::start`] created
    /// (once; later calls do nothing). Returns the samples and the file.
    pub fn finish(&self) -> Result<Option<(u64, PathBuf)>, ProfileError> {
        use std::io::Write;
        let out = self.out.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some((path, mut file)) = out else {
            return Ok(None);
        };
        let report = self.report();
        file.write_all(report.as_bytes())
            .map_err(|source| ProfileError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(Some((self.total(), path)))
    }
}

fn sorted(counts: impl IntoIterator<Item = (String, u64)>) -> Vec<(String, u64)> {
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

fn write_top(out: &mut String, rows: Vec<(String, u64)>, total: u64, top: usize) {
    let share = |n: u64| 100.0 * n as f64 / total.max(1) as f64;
    for (what, n) in rows.iter().take(top) {
        let _ = writeln!(out, "{n:9}  {:5.1}%  {what}", share(*n));
    }
    let rest: u64 = rows.iter().skip(top).map(|r| r.1).sum();
    if rest > 0 {
        let _ = writeln!(
            out,
            "{rest:9}  {:5.1}%  ({} more)",
            share(rest),
            rows.len() - top
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 0xffff_ffff_8100_0000;

    fn symbols() -> Symbols {
        Symbols::new(vec![
            (K + 0x100, 0x40, "clear_user".into()),
            (K, 0x100, "_text_start".into()),
            (K + 0x200, 0, "sized_by_the_next".into()),
            (K + 0x300, 0x10, "last".into()),
            (K + 0x300, 0, "__section_end".into()),
        ])
    }

    #[test]
    fn lookup_finds_the_function_and_its_offset() {
        let s = symbols();
        assert_eq!(s.lookup(K + 0x123), Some(("clear_user", 0x23)));
        assert_eq!(s.lookup(K), Some(("_text_start", 0)));
        // Past clear_user's size, before the next symbol: in no function.
        assert_eq!(s.lookup(K + 0x140), None);
        assert_eq!(s.lookup(K + 0x2ff), Some(("sized_by_the_next", 0xff)));
        assert_eq!(s.lookup(K + 0x310), None);
        assert_eq!(s.lookup(K + 0x301), Some(("last", 1)));
        assert_eq!(s.lookup(K - 1), None);
    }

    #[test]
    fn the_report_sums_samples_by_function_and_marks_user_mode() {
        let mut p = GuestProfile::new(2, DEFAULT_HZ);
        for rip in [K + 0x101, K + 0x102, K + 0x101, 0x40_1000, K + 0x150] {
            p.record(Some(rip));
        }
        p.record(None);
        assert_eq!(p.total(), 5);
        let bare = p.report();
        assert!(
            bare.contains("        4   80.0%  [guest kernel, no symbol]"),
            "{bare}"
        );
        p.symbols = Some((PathBuf::from("vmlinux"), symbols()));
        let r = p.report();
        assert!(r.contains("5 samples of 2 vCPU(s) at 997 Hz"), "{r}");
        assert!(r.contains("(1 kicks without registers)"), "{r}");
        assert!(r.contains("        3   60.0%  clear_user\n"), "{r}");
        assert!(r.contains("        1   20.0%  [guest user mode]\n"), "{r}");
        assert!(
            r.contains("        1   20.0%  [guest kernel, no symbol]\n"),
            "{r}"
        );
        assert!(
            r.contains(&format!(
                "        2   40.0%  {:#x} clear_user+0x1\n",
                K + 0x101
            )),
            "{r}"
        );
    }

    #[test]
    fn requests_are_taken_once_per_vcpu() {
        let p = GuestProfile::new(2, 100);
        assert_eq!(p.period(), Duration::from_millis(10));
        assert!(!p.take_request(0));
        p.request_all();
        assert!(p.take_request(0));
        assert!(!p.take_request(0));
        assert!(p.take_request(1));
        assert!(!p.take_request(7));
    }

    #[test]
    fn the_spec_parses_and_refuses_what_it_cannot_use() {
        let c = ProfileConfig::parse("out.txt").unwrap();
        assert_eq!(
            (c.out.to_str(), c.hz, c.symbols),
            (Some("out.txt"), 997, None)
        );
        assert!(!c.from_workload);
        let c = ProfileConfig::parse("p,hz=5000,symbols=/k/vmlinux,from=workload").unwrap();
        assert_eq!(c.hz, 5000);
        assert!(c.from_workload);
        assert_eq!(c.symbols, Some(PathBuf::from("/k/vmlinux")));
        for bad in [
            "",
            ",hz=10",
            "p,hz=0",
            "p,hz=10001",
            "p,hz=x",
            "p,symbols=",
            "p,rate=5",
            "p,from=boot",
        ] {
            let e = ProfileConfig::parse(bad).unwrap_err().to_string();
            assert!(e.contains("FILE[,hz=N][,symbols=VMLINUX]"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_file_without_symbols_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("rv-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("not-elf");
        std::fs::write(&f, b"not an ELF file").unwrap();
        let e = Symbols::from_elf(&f).unwrap_err().to_string();
        assert!(e.contains("not-elf is not an ELF vmlinux"), "{e}");
        let e = Symbols::from_elf(&dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("reading the guest kernel symbols"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
