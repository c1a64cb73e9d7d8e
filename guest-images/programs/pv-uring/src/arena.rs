//! The buffer arena (docs/pv-uring.md, "The buffer arena"): host memory
//! outside guest RAM that the host registered once, in chunks. A file
//! allocates runs of chunks ([`alloc`]), maps them ([`map`]) and registers
//! them on its ring ([`register`]) with one control command that the host
//! turns into clones of its own table: no guest page is pinned, and the
//! cost does not grow with the pool. Data is named by (buffer index,
//! offset) as for any buffer.
//!
//! One pool on many rings: [`register_rings`] registers the same runs on
//! every ring it names with one command (the rings share one table), where
//! [`register_owned`] on each ring costs a control round trip per ring.
//!
//! Chunks belong to the file that allocated them: only that file can map
//! or register them (or a holder of its fd, as `owner`). They go back to the arena when nothing holds them:
//! not the file (after [`free`] or close), no ring's table, no mapping.

use crate::device::{ioctl, Map};
use crate::error::Result;
use std::os::fd::RawFd;
use uring_abi::vuring::{
    VuringArenaAlloc, VuringArenaFree, VURING_IOC_ARENA_ALLOC, VURING_IOC_ARENA_FREE,
    VURING_IOC_ARENA_INFO, VURING_IOC_ARENA_REGISTER, VURING_IOC_ARENA_REGISTER_RINGS,
};
pub use uring_abi::vuring::{
    VuringArenaInfo as ArenaInfo, VuringArenaRun as ArenaRun, VURING_MMAP_ARENA,
};
pub use uring_abi::vuring::{
    VuringArenaRegister, VuringArenaRegisterRings, VURING_MAX_ARENA_RINGS,
};
pub use uring_abi::wire::MAX_ARENA_RUNS;

use uring_abi::vuring::VuringExtent as Extent;

/// ARENA_INFO on any `/dev/vuring` fd.
pub fn info(fd: RawFd) -> Result<ArenaInfo> {
    let mut i = ArenaInfo::default();
    // SAFETY: _IOR(struct vuring_arena_info): the driver writes it.
    unsafe {
        ioctl(
            fd,
            VURING_IOC_ARENA_INFO,
            &mut i as *mut ArenaInfo as usize,
            "VURING_IOC_ARENA_INFO",
        )
    }?;
    Ok(i)
}

/// An allocation: chunks `chunk..chunk + nr` of the file's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaAlloc {
    /// First chunk.
    pub chunk: u32,
    /// Chunks.
    pub nr: u32,
    /// Its mmap offset.
    pub offset: u64,
}

impl ArenaAlloc {
    /// The run that makes this allocation buffers `dst_off..dst_off + nr`.
    pub fn run(&self, dst_off: u32) -> ArenaRun {
        ArenaRun {
            chunk: self.chunk,
            nr: self.nr,
            dst_off,
            resv: 0,
        }
    }
}

/// ARENA_ALLOC: chunks for at least `len` bytes, owned by `fd`'s file.
pub fn alloc(fd: RawFd, len: u64) -> Result<ArenaAlloc> {
    let mut a = VuringArenaAlloc {
        len,
        ..Default::default()
    };
    // SAFETY: _IOWR(struct vuring_arena_alloc): read and written back.
    unsafe {
        ioctl(
            fd,
            VURING_IOC_ARENA_ALLOC,
            &mut a as *mut VuringArenaAlloc as usize,
            "VURING_IOC_ARENA_ALLOC",
        )
    }?;
    Ok(ArenaAlloc {
        chunk: a.chunk,
        nr: a.nr,
        offset: a.offset,
    })
}

/// ARENA_FREE with a raw argument (error tests set `resv`).
pub fn free_raw(fd: RawFd, f: &VuringArenaFree) -> Result<()> {
    // SAFETY: _IOW(struct vuring_arena_free): the driver reads it.
    unsafe {
        ioctl(
            fd,
            VURING_IOC_ARENA_FREE,
            f as *const VuringArenaFree as usize,
            "VURING_IOC_ARENA_FREE",
        )
    }
    .map(drop)
}

/// ARENA_FREE: gives up the allocation starting at `chunk`.
pub fn free(fd: RawFd, chunk: u32) -> Result<()> {
    free_raw(fd, &VuringArenaFree { chunk, resv: 0 })
}

/// ARENA_REGISTER of `runs` of `fd`'s own chunks on `fd`'s ring; returns
/// its buffer count.
pub fn register(fd: RawFd, runs: &[ArenaRun]) -> Result<u32> {
    register_owned(fd, runs, -1)
}

/// ARENA_REGISTER of `runs` of the chunks the file `owner` (another
/// `/dev/vuring` fd; -1: `fd`'s own) owns, on `fd`'s ring: one pool, any
/// number of rings.
pub fn register_owned(fd: RawFd, runs: &[ArenaRun], owner: RawFd) -> Result<u32> {
    register_raw(
        fd,
        &mut VuringArenaRegister {
            runs: runs.as_ptr() as u64,
            nr_runs: runs.len() as u32,
            owner_fd: owner,
            ..Default::default()
        },
    )
}

/// ARENA_REGISTER with a caller-built argument (error tests set `resv`);
/// `r.runs` must point at `r.nr_runs` runs.
pub fn register_raw(fd: RawFd, r: &mut VuringArenaRegister) -> Result<u32> {
    // SAFETY: the driver reads `r` and nr_runs runs at `r.runs` with
    // copy_from_user (a bad pointer is EFAULT, nothing here is written)
    // and writes only `r.nr_buffers`.
    unsafe {
        ioctl(
            fd,
            VURING_IOC_ARENA_REGISTER,
            r as *mut VuringArenaRegister as usize,
            "VURING_IOC_ARENA_REGISTER",
        )
    }?;
    Ok(r.nr_buffers)
}

/// ARENA_REGISTER_RINGS: `runs` of the chunks `owner` owns (another
/// `/dev/vuring` fd; -1: `fd`'s file) on every ring `ring_fds` names, with
/// one control command: all of them or none. `fd` is any `/dev/vuring`
/// fd, usually the owner's. Each ring must have no buffers; a file named
/// twice is `-EINVAL`, more than `max_rings` fds `-EINVAL`. Returns each
/// ring's buffer count.
pub fn register_rings(
    fd: RawFd,
    ring_fds: &[RawFd],
    runs: &[ArenaRun],
    owner: RawFd,
) -> Result<u32> {
    register_rings_raw(
        fd,
        &mut VuringArenaRegisterRings {
            runs: runs.as_ptr() as u64,
            nr_runs: runs.len() as u32,
            ring_fds: ring_fds.as_ptr() as u64,
            nr_rings: ring_fds.len() as u32,
            owner_fd: owner,
            ..Default::default()
        },
    )
}

/// ARENA_REGISTER_RINGS with a caller-built argument (error tests);
/// `r.runs` must point at `r.nr_runs` runs and `r.ring_fds` at
/// `r.nr_rings` fds.
pub fn register_rings_raw(fd: RawFd, r: &mut VuringArenaRegisterRings) -> Result<u32> {
    // SAFETY: the driver reads `r`, nr_runs runs and nr_rings fds with
    // copy_from_user (a bad pointer is EFAULT, nothing here is written)
    // and writes only `r.nr_buffers`.
    unsafe {
        ioctl(
            fd,
            VURING_IOC_ARENA_REGISTER_RINGS,
            r as *mut VuringArenaRegisterRings as usize,
            "VURING_IOC_ARENA_REGISTER_RINGS",
        )
    }?;
    Ok(r.nr_buffers)
}

/// A mapping of an allocation's chunks (read-write, shared with the host),
/// unmapped on drop. The mapping holds the chunks: they are not given to
/// anybody else while it exists.
pub struct ArenaMap {
    map: Map,
    /// First chunk mapped.
    pub chunk: u32,
    /// Chunks mapped.
    pub nr: u32,
    /// Bytes per chunk.
    pub chunk_size: u64,
}

impl ArenaMap {
    /// Address of the first byte.
    pub fn ptr(&self) -> *mut u8 {
        self.map.ptr
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// Whether nothing is mapped (never).
    pub fn is_empty(&self) -> bool {
        self.map.len == 0
    }

    /// Address of chunk `chunk`'s first byte, if mapped here.
    pub fn chunk_addr(&self, chunk: u32) -> Option<u64> {
        (chunk >= self.chunk && chunk - self.chunk < self.nr)
            .then(|| self.map.ptr as u64 + u64::from(chunk - self.chunk) * self.chunk_size)
    }

    /// The mapped bytes.
    ///
    /// # Safety
    /// No request may write the chunks while the slice lives.
    pub unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is live for self's lifetime; the caller
        // keeps the host from writing meanwhile.
        unsafe { std::slice::from_raw_parts(self.map.ptr, self.map.len) }
    }

    /// The mapped bytes, writable.
    ///
    /// # Safety
    /// No request may read or write the chunks while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self) -> &mut [u8] {
        // SAFETY: as bytes(); the caller keeps everything else off them.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr, self.map.len) }
    }
}

/// Maps all of `a` (which `fd`'s file must own) with `chunk_size`-byte
/// chunks ([`ArenaInfo::chunk_size`]).
pub fn map_with(fd: RawFd, a: &ArenaAlloc, chunk_size: u64) -> Result<ArenaMap> {
    let len = u64::from(a.nr) * chunk_size;
    let map = Map::new(
        fd,
        len as usize,
        a.offset,
        libc::PROT_READ | libc::PROT_WRITE,
        "mmap arena",
    )?;
    Ok(ArenaMap {
        map,
        chunk: a.chunk,
        nr: a.nr,
        chunk_size,
    })
}

/// [`map_with`] with the chunk size ARENA_INFO reports.
pub fn map(fd: RawFd, a: &ArenaAlloc) -> Result<ArenaMap> {
    let i = info(fd)?;
    map_with(fd, a, i.chunk_size)
}

/// The table ARENA_REGISTER of `runs` gives a ring of `n` buffers of
/// `chunk_size` bytes, with the user addresses `maps` know.
pub fn table(runs: &[ArenaRun], maps: &[&ArenaMap], n: u32, chunk_size: u64) -> Vec<Extent> {
    let mut t = vec![Extent::default(); n as usize];
    for r in runs {
        for k in 0..r.nr {
            let Some(e) = t.get_mut((r.dst_off + k) as usize) else {
                continue;
            };
            let chunk = r.chunk + k;
            let addr = maps.iter().find_map(|m| m.chunk_addr(chunk));
            e.user_addr = addr.unwrap_or(0);
            e.len = chunk_size;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_runs_has_gaps_and_lengths() {
        let run = |chunk, nr, dst_off| ArenaRun {
            chunk,
            nr,
            dst_off,
            resv: 0,
        };
        let t = table(&[run(4, 2, 0), run(9, 1, 3)], &[], 4, 1 << 21);
        let lens: Vec<u64> = t.iter().map(|e| e.len).collect();
        assert_eq!(lens, [1 << 21, 1 << 21, 0, 1 << 21]);
        // No mapping known: no user address (translate() refuses them).
        assert!(t.iter().all(|e| e.user_addr == 0));
        assert!(crate::extent::translate(&t, 0x1000, 8).is_err());
    }
}
