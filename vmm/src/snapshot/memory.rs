//! Guest RAM in a snapshot: one file, RAM region by region at the file
//! offsets of `layout::ram_regions`. Pages that are all zeros are left as
//! holes, so the file takes the space of the RAM the guest used. A restore
//! maps it copy-on-write (`memory::map_snapshot_ram`) after checking its
//! [`MemoryDigest`]: only the file's data extents are read (`SEEK_DATA`),
//! so the check costs the RAM the guest used, not the RAM it has.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::state::MemoryDigest;
use super::SnapshotError;
use crate::layout::ram_regions;

/// The unit of the zero-page scan.
const PAGE: usize = 4096;

/// How much of the memory file a check reads at once.
const CHECK_CHUNK: usize = 1 << 20;

/// Builds a [`MemoryDigest`] page by page.
#[derive(Default)]
struct DigestBuilder {
    data_bytes: u64,
    crc: crc32fast::Hasher,
}

impl DigestBuilder {
    /// Adds the pages of `bytes` (at file offset `at`) that are not all
    /// zeros.
    fn pages(&mut self, at: u64, bytes: &[u8]) {
        for (i, page) in bytes.chunks(PAGE).enumerate() {
            if page.iter().any(|&b| b != 0) {
                self.crc.update(&(at + (i * PAGE) as u64).to_le_bytes());
                self.crc.update(page);
                self.data_bytes += page.len() as u64;
            }
        }
    }

    fn finish(self) -> MemoryDigest {
        MemoryDigest {
            data_bytes: self.data_bytes,
            crc32: self.crc.finalize(),
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { what, path, source }
}

/// Writes every non-zero page of `mem` (of `size` bytes) to a new file at
/// `path`. Returns the file's digest (its `data_bytes` are the bytes
/// written). The vCPUs must be paused and the devices idle.
pub fn write(mem: &GuestMemoryMmap, size: u64, path: &Path) -> Result<MemoryDigest, SnapshotError> {
    let file = File::create(path).map_err(io("creating", path))?;
    file.set_len(size).map_err(io("sizing", path))?;
    let layout = ram_regions(size);
    let mut digest = DigestBuilder::default();
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
                let at = r.file_offset + start as u64;
                file.write_all_at(&bytes[start..end], at)
                    .map_err(io("writing", path))?;
                digest.pages(at, &bytes[start..end]);
            }
        }
    }
    file.sync_all().map_err(io("syncing", path))?;
    Ok(digest.finish())
}

/// `lseek(2)` with `SEEK_DATA` or `SEEK_HOLE`.
fn seek(file: &File, from: u64, whence: libc::c_int) -> std::io::Result<u64> {
    let from = libc::off_t::try_from(from).unwrap_or(libc::off_t::MAX);
    // SAFETY: lseek on a descriptor we own; it moves only the file offset.
    let at = unsafe { libc::lseek(file.as_raw_fd(), from, whence) };
    u64::try_from(at).map_err(|_| std::io::Error::last_os_error())
}

/// The next data extent of `file` at or after `from`, widened to whole
/// pages: `(start, end)`, or `None` past the last one.
fn next_data(
    file: &File,
    from: u64,
    len: u64,
    path: &Path,
) -> Result<Option<(u64, u64)>, SnapshotError> {
    let start = match seek(file, from, libc::SEEK_DATA) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
        Err(e) => return Err(io("seeking data in", path)(e)),
    };
    let end = seek(file, start, libc::SEEK_HOLE).map_err(io("seeking a hole in", path))?;
    let page = PAGE as u64;
    Ok(Some((
        start - start % page,
        end.div_ceil(page).saturating_mul(page).min(len),
    )))
}

/// Checks that the memory file at `path` holds what `want` says: reads its
/// data extents only (holes read as zeros, which the digest leaves out).
pub fn check(path: &Path, want: &MemoryDigest) -> Result<(), SnapshotError> {
    let file = File::open(path).map_err(io("opening", path))?;
    let len = file.metadata().map_err(io("reading", path))?.len();
    let mut digest = DigestBuilder::default();
    let mut buf = vec![0u8; CHECK_CHUNK];
    let mut at = 0;
    while let Some((start, end)) = next_data(&file, at, len, path)? {
        let mut pos = start.max(at);
        while pos < end {
            let len = ((end - pos) as usize).min(CHECK_CHUNK);
            let chunk = &mut buf[..len];
            file.read_exact_at(chunk, pos)
                .map_err(io("reading", path))?;
            digest.pages(pos, chunk);
            pos += len as u64;
        }
        at = end;
        if digest.data_bytes > want.data_bytes {
            break;
        }
    }
    let found = digest.finish();
    if found != *want {
        return Err(SnapshotError::MemoryCorrupted {
            path: path.to_path_buf(),
            found,
            want: *want,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    /// Guest RAM of `size` bytes on ordinary pages.
    fn ram(size: u64) -> crate::memory::GuestRam {
        crate::memory::create_guest_ram(&crate::config::MemoryConfig {
            size,
            hugepages: crate::config::HugepagePolicy::Off,
        })
        .unwrap()
    }

    #[test]
    fn written_ram_maps_back_with_holes_for_zero_pages() {
        let size = 32 << 20;
        let ram = ram(size);
        ram.memory
            .write_slice(b"first page", GuestAddress(0))
            .unwrap();
        ram.memory
            .write_slice(b"far away", GuestAddress((20 << 20) + 123))
            .unwrap();
        let dir = std::env::temp_dir().join(format!("rv-snap-mem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory");
        let digest = write(&ram.memory, size, &path).unwrap();
        assert_eq!(digest.data_bytes, 2 * PAGE as u64);
        check(&path, &digest).unwrap();
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

    #[test]
    fn the_digest_catches_any_changed_byte_and_reads_only_data() {
        let size = 16 << 20;
        let ram = ram(size);
        for at in [0u64, 5 << 20, (5 << 20) + PAGE as u64, size - 8] {
            ram.memory
                .write_slice(b"snapshot", GuestAddress(at))
                .unwrap();
        }
        let dir = std::env::temp_dir().join(format!("rv-snap-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory");
        let want = write(&ram.memory, size, &path).unwrap();
        assert_eq!(want.data_bytes, 4 * PAGE as u64);
        check(&path, &want).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let corrupted = |at: u64, byte: u8| {
            let mut old = [0u8];
            File::open(&path)
                .unwrap()
                .read_exact_at(&mut old, at)
                .unwrap();
            file.write_all_at(&[byte], at).unwrap();
            let result = check(&path, &want);
            file.write_all_at(&old, at).unwrap();
            check(&path, &want).unwrap();
            result
        };
        // A flipped byte in a page in use, in the last page, and a byte
        // written into a hole are each caught, and the message names both.
        for at in [(5 << 20) + 3, size - 1, 9 << 20] {
            let err = corrupted(at, 0x5a).unwrap_err();
            assert!(
                matches!(err, SnapshotError::MemoryCorrupted { .. }),
                "{at:#x}: {err}"
            );
            assert!(err.to_string().contains("is corrupted"), "{err}");
        }
        // Zeros written into a hole make a data extent of zeros: the
        // contents are the same, and so is the digest.
        file.write_all_at(&[0u8; 3 * PAGE], 10 << 20).unwrap();
        check(&path, &want).unwrap();
        // A page dropped (turned into zeros) is caught too.
        file.write_all_at(&[0u8; PAGE], 0).unwrap();
        assert!(check(&path, &want).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
