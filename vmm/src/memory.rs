//! Guest RAM: one shared memfd (hugetlb-backed when the host has the pages),
//! mapped and populated up front, so that a short hugepage pool is an error
//! at start and never a SIGBUS later. Being a shared file mapping, the same
//! pages can later be handed to the host's io_uring.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use thiserror::Error;
use vm_memory::mmap::{MmapRegion, MmapRegionBuilder};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::config::{HugepagePolicy, MemoryConfig};
use crate::layout::ram_regions;

/// Errors creating guest RAM.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// `hugepages=required` and the host pool is too small.
    #[error(
        "guest RAM needs {needed} free {page_kib} KiB hugepages but the host pool has {free}; \
         reserve more with `echo {suggest} > {pool}` (as root) or use --memory hugepages=off"
    )]
    HugepagesShort {
        needed: u64,
        free: u64,
        page_kib: u64,
        suggest: u64,
        pool: String,
    },
    /// The memfd could not be created.
    #[error("creating the guest RAM memfd ({what}) failed: {source}")]
    Memfd {
        what: &'static str,
        source: std::io::Error,
    },
    /// The memfd could not be sized.
    #[error("sizing the guest RAM memfd to {size} bytes failed: {source}")]
    Truncate { size: u64, source: std::io::Error },
    /// Mapping and populating a region failed.
    #[error("mapping {len} bytes of guest RAM at guest address {addr:#x} failed: {source}")]
    Map {
        addr: u64,
        len: u64,
        source: vm_memory::mmap::MmapRegionError,
    },
    /// A snapshot's memory file cannot be opened or read.
    #[error("snapshot memory file {path}: cannot {what}: {source}")]
    SnapshotFile {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// A snapshot's memory file has the wrong size.
    #[error("snapshot memory file {path}: holds {len} bytes; the snapshot's guest has {size} bytes of RAM (truncated?)")]
    SnapshotFileSize { path: PathBuf, len: u64, size: u64 },
    /// The regions could not form a guest memory map.
    #[error("building the guest memory map failed: {0}")]
    Regions(#[from] vm_memory::GuestRegionCollectionError),
}

/// What backs guest RAM in the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// hugetlb pages of this many bytes.
    Hugetlb(u64),
    /// Ordinary shared memory, with transparent-hugepage advice.
    Shared,
    /// A snapshot's memory file, mapped private (copy-on-write).
    Snapshot,
}

/// The sysfs file that holds the free count of `page_size` hugepages.
pub fn hugepage_pool_dir(page_size: u64) -> PathBuf {
    PathBuf::from(format!(
        "/sys/kernel/mm/hugepages/hugepages-{}kB",
        page_size >> 10
    ))
}

/// Reads a number from a sysfs file.
fn read_sysfs_u64(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Decides the backing from the policy, the RAM size and the host's free
/// hugepages of the wanted size (`None`: the host has no such pool).
/// Returns the backing and, for a fallback, the warning to print.
pub fn choose_backing(
    config: &MemoryConfig,
    free_pages: Option<u64>,
) -> Result<(Backing, Option<String>), MemoryError> {
    let Some(page) = config.hugepages.page_size() else {
        return Ok((Backing::Shared, None));
    };
    let needed = config.size.div_ceil(page);
    let free = free_pages.unwrap_or(0);
    if free >= needed {
        return Ok((Backing::Hugetlb(page), None));
    }
    let pool_dir = hugepage_pool_dir(page);
    if config.hugepages == HugepagePolicy::Required {
        return Err(MemoryError::HugepagesShort {
            needed,
            free,
            page_kib: page >> 10,
            suggest: needed,
            pool: pool_dir.join("nr_hugepages").display().to_string(),
        });
    }
    let warning = format!(
        "only {free} free {} KiB hugepages for {needed} needed ({}): guest RAM falls back to \
         ordinary shared memory with transparent-hugepage advice",
        page >> 10,
        pool_dir.join("free_hugepages").display()
    );
    Ok((Backing::Shared, Some(warning)))
}

/// Guest RAM and what backs it.
pub struct GuestRam {
    /// The guest-physical memory map.
    pub memory: GuestMemoryMmap,
    /// The backing actually used.
    pub backing: Backing,
}

fn create_memfd(backing: Backing) -> Result<File, MemoryError> {
    let mut options = memfd::MemfdOptions::default().close_on_exec(true);
    if let Backing::Hugetlb(page) = backing {
        let size = if page == 1 << 30 {
            memfd::HugetlbSize::Huge1GB
        } else {
            memfd::HugetlbSize::Huge2MB
        };
        options = options.hugetlb(Some(size));
    }
    let memfd = options
        .create("ringvisor-guest-ram")
        .map_err(|e| MemoryError::Memfd {
            what: if matches!(backing, Backing::Shared) {
                "shared"
            } else {
                "hugetlb"
            },
            source: std::io::Error::other(e),
        })?;
    Ok(memfd.into_file())
}

/// Maps a snapshot's memory file (`size` bytes of guest RAM, laid out as
/// `ram_regions`) as guest RAM, private and copy-on-write: nothing is
/// copied or read up front (pages fault in as the guest touches them), and
/// no write of the guest reaches the file, so one snapshot serves any number
/// of VMs at once. The file is opened read-only.
pub fn map_snapshot_ram(path: &std::path::Path, size: u64) -> Result<GuestRam, MemoryError> {
    let bad = |what| {
        move |source| MemoryError::SnapshotFile {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    let file = File::open(path).map_err(bad("open"))?;
    let len = file.metadata().map_err(bad("stat"))?.len();
    if len != size {
        return Err(MemoryError::SnapshotFileSize {
            path: path.to_path_buf(),
            len,
            size,
        });
    }
    let regions = map_regions(
        &file,
        size,
        libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        false,
        |_| {},
    )?;
    Ok(GuestRam {
        memory: GuestMemoryMmap::from_regions(regions)?,
        backing: Backing::Snapshot,
    })
}

/// Creates and populates guest RAM per `config`.
pub fn create_guest_ram(config: &MemoryConfig) -> Result<GuestRam, MemoryError> {
    let free = config
        .hugepages
        .page_size()
        .and_then(|page| read_sysfs_u64(&hugepage_pool_dir(page).join("free_hugepages")));
    let (backing, warning) = choose_backing(config, free)?;
    if let Some(warning) = warning {
        log::warn!("{warning}");
    }
    match map_ram(config, backing) {
        // The pool shrank (or was taken) between the count and the
        // mapping: the same fallback as a short pool.
        Err(e @ MemoryError::Map { .. })
            if matches!(backing, Backing::Hugetlb(_))
                && config.hugepages != HugepagePolicy::Required =>
        {
            log::warn!("{e}: the host's hugepage pool changed; guest RAM falls back to ordinary shared memory");
            map_ram(config, Backing::Shared)
        }
        other => other,
    }
}

/// Creates the memfd of `backing` and maps and populates guest RAM in it.
fn map_ram(config: &MemoryConfig, backing: Backing) -> Result<GuestRam, MemoryError> {
    let file = create_memfd(backing)?;
    file.set_len(config.size)
        .map_err(|source| MemoryError::Truncate {
            size: config.size,
            source,
        })?;

    let regions = map_regions(
        &file,
        config.size,
        libc::MAP_SHARED | libc::MAP_POPULATE,
        matches!(backing, Backing::Hugetlb(_)),
        |mapping| {
            if backing == Backing::Shared {
                advise_hugepages(mapping);
            }
        },
    )?;
    log::debug!(
        "guest RAM: {} MiB, {:?}, memfd {}",
        config.size >> 20,
        backing,
        file.as_raw_fd()
    );
    Ok(GuestRam {
        memory: GuestMemoryMmap::from_regions(regions)?,
        backing,
    })
}

/// Maps `file` as guest RAM of `size` bytes, laid out as `ram_regions`,
/// with `flags` (read-write); `each` sees every mapping before it becomes a
/// region.
fn map_regions(
    file: &File,
    size: u64,
    flags: libc::c_int,
    hugetlbfs: bool,
    mut each: impl FnMut(&MmapRegion),
) -> Result<Vec<GuestRegionMmap>, MemoryError> {
    let mut regions = Vec::new();
    for r in ram_regions(size) {
        let file_offset = FileOffset::new(
            file.try_clone().map_err(|source| MemoryError::Memfd {
                what: "dup",
                source,
            })?,
            r.file_offset,
        );
        let mapping = MmapRegionBuilder::new(r.len as usize)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags)
            .with_file_offset(file_offset)
            .with_hugetlbfs(hugetlbfs)
            .build()
            .map_err(|source| MemoryError::Map {
                addr: r.guest_addr,
                len: r.len,
                source,
            })?;
        each(&mapping);
        let region = GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr))
            .expect("a region from ram_regions never wraps the address space");
        regions.push(region);
    }
    Ok(regions)
}

/// Asks for transparent hugepages on ordinary shared guest RAM; a failure
/// only costs speed, so it is logged.
fn advise_hugepages(mapping: &MmapRegion) {
    // SAFETY: the range is exactly the mapping `mapping` owns;
    // MADV_HUGEPAGE only changes paging policy.
    let ret =
        unsafe { libc::madvise(mapping.as_ptr().cast(), mapping.size(), libc::MADV_HUGEPAGE) };
    if ret != 0 {
        log::debug!(
            "madvise(MADV_HUGEPAGE) on guest RAM failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    fn config(size: u64, hugepages: HugepagePolicy) -> MemoryConfig {
        MemoryConfig { size, hugepages }
    }

    #[test]
    fn enough_free_hugepages_are_used() {
        let c = config(512 << 20, HugepagePolicy::Size2M);
        assert_eq!(
            choose_backing(&c, Some(256)).unwrap(),
            (Backing::Hugetlb(2 << 20), None)
        );
    }

    #[test]
    fn short_pool_falls_back_with_a_warning_naming_the_pool() {
        let c = config(512 << 20, HugepagePolicy::Size2M);
        let (backing, warning) = choose_backing(&c, Some(10)).unwrap();
        assert_eq!(backing, Backing::Shared);
        let warning = warning.unwrap();
        assert!(
            warning.contains("hugepages-2048kB/free_hugepages"),
            "{warning}"
        );
        assert!(warning.contains("only 10 free"), "{warning}");
    }

    #[test]
    fn short_pool_with_required_is_an_error_naming_the_sysfs_file() {
        let c = config(512 << 20, HugepagePolicy::Required);
        let err = choose_backing(&c, None).unwrap_err().to_string();
        assert!(
            err.contains("echo 256 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
            "{err}"
        );
    }

    #[test]
    fn hugepages_off_never_looks_at_the_pool() {
        let c = config(512 << 20, HugepagePolicy::Off);
        assert_eq!(choose_backing(&c, None).unwrap(), (Backing::Shared, None));
    }

    #[test]
    fn shared_ram_is_readable_and_writable_through_the_map() {
        let ram = create_guest_ram(&config(64 << 20, HugepagePolicy::Off)).unwrap();
        assert_eq!(ram.backing, Backing::Shared);
        assert_eq!(ram.memory.num_regions(), 1);
        ram.memory
            .write_obj(0xdead_beefu32, GuestAddress(0x100_0000))
            .unwrap();
        let v: u32 = ram.memory.read_obj(GuestAddress(0x100_0000)).unwrap();
        assert_eq!(v, 0xdead_beef);
        assert!(ram.memory.read_obj::<u8>(GuestAddress(64 << 20)).is_err());
    }
}
