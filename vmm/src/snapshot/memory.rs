//! Guest RAM in a snapshot: one file, RAM region by region at the file
//! offsets of `layout::ram_regions`. Pages that are all zeros are left as
//! holes, so the file takes the space of the RAM the guest used. A restore
//! maps it copy-on-write (`memory::map_snapshot_ram`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::SnapshotError;
use crate::layout::ram_regions;

/// The unit of the zero-page scan.
const PAGE: usize = 4096;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { what, path, source }
}

/// Writes every non-zero page of `mem` (of `size` bytes) to a new file at
/// `path`. Returns the bytes written. The vCPUs must be paused and the
/// devices idle.
pub fn write(mem: &GuestMemoryMmap, size: u64, path: &Path) -> Result<u64, SnapshotError> {
    let file = File::create(path).map_err(io("creating", path))?;
    file.set_len(size).map_err(io("sizing", path))?;
    let layout = ram_regions(size);
    let mut written = 0u64;
    for (region, r) in mem.iter().zip(layout) {
        let len = region.len() as usize;
        // SAFETY: the region is a live mapping of `len` bytes owned by
        // `mem`; nothing writes it while the vCPUs are paused and the
        // devices idle, and the slice does not outlive this loop.
        let bytes = unsafe { std::slice::from_raw_parts(region.as_ptr().cast_const(), len) };
        let mut at = 0;
        while at < len {
            // A run of non-zero pages, written at once.
            while at < len && bytes[at..(at + PAGE).min(len)].iter().all(|&b| b == 0) {
                at += PAGE;
            }
            let start = at;
            while at < len && !bytes[at..(at + PAGE).min(len)].iter().all(|&b| b == 0) {
                at += PAGE;
            }
            let end = at.min(len);
            if end > start {
                file.write_all_at(&bytes[start..end], r.file_offset + start as u64)
                    .map_err(io("writing", path))?;
                written += (end - start) as u64;
            }
        }
    }
    file.sync_all().map_err(io("syncing", path))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn written_ram_maps_back_with_holes_for_zero_pages() {
        let size = 32 << 20;
        let ram = crate::memory::create_guest_ram(&crate::config::MemoryConfig {
            size,
            hugepages: crate::config::HugepagePolicy::Off,
        })
        .unwrap();
        ram.memory
            .write_slice(b"first page", GuestAddress(0))
            .unwrap();
        ram.memory
            .write_slice(b"far away", GuestAddress((20 << 20) + 123))
            .unwrap();
        let dir = std::env::temp_dir().join(format!("rv-snap-mem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory");
        let written = write(&ram.memory, size, &path).unwrap();
        assert_eq!(written, 2 * PAGE as u64);
        let restored = crate::memory::map_snapshot_ram(&path, size).unwrap();
        let mut buf = [0u8; 8];
        restored
            .memory
            .read_slice(&mut buf, GuestAddress((20 << 20) + 123))
            .unwrap();
        assert_eq!(&buf, b"far away");
        // Copy-on-write: a write to the restored RAM never reaches the file.
        restored
            .memory
            .write_slice(b"changed!", GuestAddress(0))
            .unwrap();
        let again = crate::memory::map_snapshot_ram(&path, size).unwrap();
        again.memory.read_slice(&mut buf, GuestAddress(0)).unwrap();
        assert_eq!(&buf, b"first pa");
        // A file of another size is refused.
        assert!(crate::memory::map_snapshot_ram(&path, size * 2).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
