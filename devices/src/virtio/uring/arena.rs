//! The buffer arena (docs/pv-uring.md, "The buffer arena"): host memory
//! given to the guest as shared-memory region 1, outside guest RAM, that
//! the host registers once on a ring of its own, one buffer per chunk. A
//! guest ring's ARENA_REGISTER clones runs of that table
//! (`IORING_REGISTER_CLONE_BUFFERS` with `src_off`/`nr`): no page is pinned
//! again, and neither the host nor the guest does work per page.
//!
//! The memory is a hugetlb memfd of the asked page size, mapped populated
//! (a short pool is an error at start, never a SIGBUS later); without the
//! pages it falls back to ordinary shared memory with a warning, or fails
//! when the configuration requires hugepages. The chunk size is fixed by
//! [`uring_abi::wire::arena_chunk_size`] from the arena and page sizes, not
//! by what backs it, so the guest sees the same layout either way.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use uring_abi::wire::arena_chunk_size;

use super::control::ArenaRun;
use super::ring::{Buf, HostRing};

/// Most threads [`Arena::clone_runs_into`] clones on.
pub const MAX_CLONE_THREADS: usize = 4;

/// How to build the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaConfig {
    /// Bytes (a multiple of the chunk size).
    pub len: u64,
    /// Host page size asked for: 2 MiB or 1 GiB.
    pub page: u64,
    /// Fail instead of falling back to ordinary memory.
    pub required: bool,
    /// Guest-physical address of region 1 (chunk-aligned).
    pub gpa: u64,
}

/// Errors building the arena.
#[derive(Debug, thiserror::Error)]
pub enum ArenaError {
    /// A size that does not split into at most 1024 chunks of a power-of-two
    /// multiple of the page, each at most 1 GiB.
    #[error(
        "arena of {len} bytes on {page}-byte pages: the size must be a multiple of the chunk \
         (the page, doubled until the arena is at most 1024 chunks of at most 1 GiB)"
    )]
    Size {
        /// Bytes asked for.
        len: u64,
        /// The page size.
        page: u64,
    },
    /// A guest-physical address not aligned to the chunk.
    #[error("arena address {gpa:#x} is not aligned to its {chunk}-byte chunks")]
    Align {
        /// The address.
        gpa: u64,
        /// The chunk size.
        chunk: u64,
    },
    /// hugepages were required and the host has too few.
    #[error(
        "the arena needs {len} bytes of {page_kib} KiB hugepages ({source}); reserve them with \
         `echo N > /sys/kernel/mm/hugepages/hugepages-{page_kib}kB/nr_hugepages` or drop \
         page=required"
    )]
    Hugepages {
        /// Bytes.
        len: u64,
        /// The page size in KiB.
        page_kib: u64,
        /// What failed.
        source: io::Error,
    },
    /// The memory could not be created or mapped.
    #[error("creating the {len}-byte arena: {source}")]
    Create {
        /// Bytes.
        len: u64,
        /// What failed.
        source: io::Error,
    },
    /// The host ring refused the registration.
    #[error("registering the arena ({chunks} chunks of {chunk} bytes) on the host: {source}")]
    Register {
        /// Chunks.
        chunks: u32,
        /// Chunk size.
        chunk: u64,
        /// What failed.
        source: io::Error,
    },
}

/// What setting the arena up cost (`--timings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaSetup {
    /// Creating, mapping and populating the memory (the host's page
    /// allocation).
    pub allocate: Duration,
    /// Registering it on the host ring (`IORING_REGISTER_BUFFERS`).
    pub register: Duration,
}

/// The arena: its memory and the host ring that holds it as buffers.
pub struct Arena {
    // Dropped first: the host kernel lets go of its pins before the
    // mapping goes.
    ring: HostRing,
    ptr: *mut u8,
    len: u64,
    chunk: u64,
    gpa: u64,
    hugetlb: bool,
    setup: ArenaSetup,
    _file: File,
}

// SAFETY: the mapping is shared memory owned by this struct; the host
// reads and writes it only through the host kernel (registered buffers),
// never through `ptr` after set-up.
unsafe impl Send for Arena {}
// SAFETY: see Send; `&Arena` only hands out addresses and the ring fd.
unsafe impl Sync for Arena {}

fn map(len: u64, page: Option<u64>) -> io::Result<(File, *mut u8)> {
    let mut options = memfd::MemfdOptions::default().close_on_exec(true);
    if let Some(page) = page {
        options = options.hugetlb(Some(if page == 1 << 30 {
            memfd::HugetlbSize::Huge1GB
        } else {
            memfd::HugetlbSize::Huge2MB
        }));
    }
    let file = options
        .create("ringvisor-pv-uring-arena")
        .map_err(io::Error::other)?
        .into_file();
    file.set_len(len)?;
    let size = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a new shared mapping of a file we own; checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok((file, ptr.cast()))
}

impl Arena {
    /// Allocates the arena and registers it on a host ring of its own.
    pub fn new(config: &ArenaConfig) -> Result<Self, ArenaError> {
        let (len, page) = (config.len, config.page);
        let chunk = arena_chunk_size(len, page).ok_or(ArenaError::Size { len, page })?;
        if !config.gpa.is_multiple_of(chunk) {
            return Err(ArenaError::Align {
                gpa: config.gpa,
                chunk,
            });
        }
        let started = Instant::now();
        let (file, ptr, hugetlb) = match map(len, Some(page)) {
            Ok((f, p)) => (f, p, true),
            Err(source) if config.required => {
                return Err(ArenaError::Hugepages {
                    len,
                    page_kib: page >> 10,
                    source,
                })
            }
            Err(e) => {
                log::warn!(
                    "pv-uring: no {} MiB of {} KiB hugepages for the arena ({e}); using ordinary \
                     shared memory",
                    len >> 20,
                    page >> 10
                );
                let (f, p) = map(len, None).map_err(|source| ArenaError::Create { len, source })?;
                (f, p, false)
            }
        };
        let allocate = started.elapsed();
        let chunks = (len / chunk) as u32;
        let bufs: Vec<Buf> = (0..u64::from(chunks))
            .map(|i| Buf {
                addr: ptr as u64 + i * chunk,
                len: chunk,
                charge: None,
            })
            .collect();
        let registered = Instant::now();
        let ring = HostRing::create_hidden()
            .and_then(|mut ring| ring.register_buffers(&bufs).map(|()| ring))
            .map_err(|source| {
                // SAFETY: the mapping made above, not used by anything else.
                unsafe { libc::munmap(ptr.cast(), len as usize) };
                ArenaError::Register {
                    chunks,
                    chunk,
                    source,
                }
            })?;
        let setup = ArenaSetup {
            allocate,
            register: registered.elapsed(),
        };
        log::info!(
            "pv-uring: arena of {} MiB ({} chunks of {} KiB, {}) at {:#x}: allocated in {:.1} ms, \
             registered in {:.2} ms",
            len >> 20,
            chunks,
            chunk >> 10,
            if hugetlb { "hugetlb" } else { "shared memory" },
            config.gpa,
            allocate.as_secs_f64() * 1e3,
            setup.register.as_secs_f64() * 1e3
        );
        Ok(Self {
            ring,
            ptr,
            len,
            chunk,
            gpa: config.gpa,
            hugetlb,
            setup,
            _file: file,
        })
    }

    /// Bytes of the arena.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the arena has no bytes (never: [`Arena::new`] refuses).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of a chunk.
    pub fn chunk_size(&self) -> u64 {
        self.chunk
    }

    /// Chunks (at most 1024).
    pub fn chunks(&self) -> u32 {
        (self.len / self.chunk) as u32
    }

    /// Guest-physical address of region 1.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Host address of the arena's first byte.
    pub fn host_addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Whether hugetlb pages back it.
    pub fn is_hugetlb(&self) -> bool {
        self.hugetlb
    }

    /// What the set-up cost.
    pub fn setup(&self) -> ArenaSetup {
        self.setup
    }

    /// The host ring that holds the arena (the clone source).
    pub fn fd(&self) -> RawFd {
        self.ring.fd()
    }

    /// The host ring's table: chunk `i` is buffer `i`.
    pub fn bufs(&self) -> &[Option<Buf>] {
        self.ring.bufs()
    }

    /// `EFAULT` unless every run's chunks are chunks of this arena (the
    /// guest's chunk indices are never trusted).
    pub fn check_runs(&self, runs: &[ArenaRun]) -> Result<(), i32> {
        for r in runs {
            let end = r.chunk.checked_add(r.nr);
            if end.is_none_or(|end| end > self.chunks()) {
                log::debug!(
                    "pv-uring: arena run of chunks {}+{} is outside the {} chunks",
                    r.chunk,
                    r.nr,
                    self.chunks()
                );
                return Err(libc::EFAULT);
            }
        }
        Ok(())
    }

    /// [`Arena::clone_runs`] into every ring of `rings` (each with an
    /// empty table). The host kernel's clone costs about 0.5 us per buffer
    /// (a node per buffer and ring: 0.5 ms for a 1024-chunk pool), so the
    /// rings are shared among up to [`MAX_CLONE_THREADS`] threads (one per
    /// CPU), each with a source of its own so that their clones do not
    /// wait on one source ring's lock: the arena's ring for the first, a
    /// ring done before the threads start for each other. On a failure
    /// every ring that got buffers is emptied again (the caller holds all
    /// the rings' locks, so no request can have used them); returns the
    /// first error.
    pub fn clone_runs_into(
        &self,
        rings: &mut [&mut HostRing],
        runs: &[ArenaRun],
    ) -> io::Result<()> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cpus.min(MAX_CLONE_THREADS).min(rings.len() / 4).max(1);
        let result = self.clone_spread(rings, runs, threads);
        if result.is_err() {
            for r in rings.iter_mut().filter(|r| !r.bufs().is_empty()) {
                if let Err(e) = r.unregister_buffers() {
                    log::error!("pv-uring: taking back arena runs: {e}");
                }
            }
        }
        result
    }

    fn clone_spread(
        &self,
        rings: &mut [&mut HostRing],
        runs: &[ArenaRun],
        threads: usize,
    ) -> io::Result<()> {
        // Sources for threads 1..: the first rings, done here first.
        let (seeds, rest) = rings.split_at_mut(threads - 1);
        for r in seeds.iter_mut() {
            self.clone_runs(r, runs)?;
        }
        let per = rest.len().div_ceil(threads);
        std::thread::scope(|s| {
            let mut parts = rest.chunks_mut(per.max(1));
            let first = parts.next();
            let workers: Vec<_> = parts
                .zip(seeds.iter())
                .map(|(part, src)| {
                    let (fd, bufs) = (src.fd(), src.bufs());
                    s.spawn(move || {
                        part.iter_mut()
                            .try_for_each(|r| r.clone_buffers(fd, bufs, false, 0, 0, 0))
                    })
                })
                .collect();
            let mine = first.map_or(Ok(()), |part| {
                part.iter_mut().try_for_each(|r| self.clone_runs(r, runs))
            });
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(io::Error::other("clone thread panicked")))
                })
                .fold(mine, |acc, r| acc.and(r))
        })
    }

    /// Clones `runs` (checked by [`Arena::check_runs`], in increasing
    /// `dst_off` order) of this arena's table into `ring`'s empty table,
    /// one host clone per run: the first into the empty table, each later
    /// one with `DST_REPLACE`, which keeps the entries below its `dst_off`
    /// (all of them: the runs ascend). A failure takes back what the
    /// earlier runs cloned; the caller holds the ring's lock throughout,
    /// so no request can have used it.
    pub fn clone_runs(&self, ring: &mut HostRing, runs: &[ArenaRun]) -> io::Result<()> {
        for (i, r) in runs.iter().enumerate() {
            if let Err(e) =
                ring.clone_buffers(self.fd(), self.bufs(), i > 0, r.chunk, r.dst_off, r.nr)
            {
                log::warn!(
                    "pv-uring: cloning arena run {i} (chunks {}+{}): {e}",
                    r.chunk,
                    r.nr
                );
                if i > 0 {
                    if let Err(e) = ring.unregister_buffers() {
                        log::error!("pv-uring: taking back arena runs: {e}");
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // The ring (and with it the host kernel's pins) goes after this
        // body; unmapping first is fine: the pins hold the pages.
        // SAFETY: the mapping made in new(), unused from here on.
        unsafe { libc::munmap(self.ptr.cast(), self.len as usize) };
    }
}
