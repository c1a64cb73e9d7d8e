//! The buffer arena (docs/pv-uring.md, "The buffer arena"): data both ways
//! through arena chunks (the host checks the file), runs and whole clones,
//! every refusal of the driver (ownership, bounds, frees, order), chunks a
//! ring holds never handed out again (after munmap, free or close),
//! ARENA_REGISTER_RINGS (one pool on many rings with one command) and its
//! refusals, and `--arena-cycles` allocate/register/destroy/free cycles.

use crate::ctx::Ctx;
use crate::harness::{expect_errno, step, CaseError, CaseResult};
use crate::{ensure, fail};
use io_uring::{opcode, types};
use pv_uring::arena::{self, ArenaInfo, ArenaRun, VURING_MMAP_ARENA};
use pv_uring::pattern::{self, BLOCK};
use pv_uring::uring_abi::vuring::VuringArenaFree;
use pv_uring::uring_abi::wire::SENTINEL_FILE;
use pv_uring::{FixedBuf, InfoExt, PvRing};
use std::time::{Duration, Instant};

const EINVAL: i32 = libc::EINVAL;

/// The arena, which this VM must have (`--uring arena=SIZE`).
fn need_arena(ctx: &Ctx) -> Result<ArenaInfo, CaseError> {
    let i = step("ARENA_INFO", ctx.dev.arena_info())?;
    if !ctx.dev.info().has_arena() || i.nr_chunks == 0 {
        fail!(
            "the device has no arena (features {:#x}, {i:?}): run the VM with --uring arena=SIZE",
            ctx.dev.info().features
        );
    }
    Ok(i)
}

fn free_chunks(ctx: &Ctx) -> Result<u32, CaseError> {
    Ok(step("ARENA_INFO", ctx.dev.arena_info())?.free_chunks)
}

fn run(chunk: u32, nr: u32, dst_off: u32) -> ArenaRun {
    ArenaRun {
        chunk,
        nr,
        dst_off,
        resv: 0,
    }
}

/// Reads `blocks` host-pattern blocks from block `first` into buffer
/// `idx` at `offset`; checks the bytes at `at` (where they must land).
fn read_and_check(
    ctx: &Ctx,
    r: &mut PvRing,
    idx: u16,
    offset: u64,
    first: u64,
    blocks: u64,
    at: *const u8,
) -> CaseResult {
    let len = (blocks as usize) * BLOCK;
    // SAFETY: `at` is `len` bytes of a live arena mapping no request uses.
    unsafe { std::ptr::write_bytes(at.cast_mut(), 0, len) };
    let res = ctx.run1(
        r,
        ctx.read_fixed(idx, offset, len as u32, first * BLOCK as u64),
    )?;
    ensure!(
        res == len as i32,
        "READ_FIXED into buffer {idx}+{offset:#x}: {res}"
    );
    // SAFETY: as above; the request completed.
    let got = unsafe { std::slice::from_raw_parts(at, len) };
    if let Some(o) = pattern::check(got, first, |b, j| pattern::host_word(ctx.p.seed, b, j)) {
        fail!("buffer {idx}+{offset:#x}: byte {o} differs from host block {first}'s pattern");
    }
    Ok(())
}

pub fn info(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    ensure!(
        i.chunk_size.is_power_of_two() && i.chunk_size >= 4096,
        "chunk size {:#x}",
        i.chunk_size
    );
    ensure!(
        i.len == u64::from(i.nr_chunks) * i.chunk_size,
        "arena of {} bytes is not {} chunks of {}",
        i.len,
        i.nr_chunks,
        i.chunk_size
    );
    ensure!(
        i.nr_chunks <= ctx.dev.info().max_buffers,
        "{} chunks do not fit one table of {}",
        i.nr_chunks,
        ctx.dev.info().max_buffers
    );
    ensure!(
        i.free_chunks == i.nr_chunks,
        "{} of {} chunks free at start",
        i.free_chunks,
        i.nr_chunks
    );
    Ok(())
}

/// The guest pattern written into an arena chunk, WRITE_FIXED to the
/// backend and FSYNCed: the host test checks the file.
pub fn write_guest_pattern(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    let len = ctx.p.write_blocks as usize * BLOCK;
    ensure!(len as u64 <= i.chunk_size, "{len} bytes do not fit a chunk");
    let mut r = ctx.ring()?;
    let a = step("alloc", r.arena_alloc(len as u64))?;
    ensure!(a.nr == 1, "{len} bytes took {} chunks", a.nr);
    let m = step("map", r.arena_map(&a))?;
    // SAFETY: no request uses the chunk yet.
    let bytes = unsafe { m.bytes_mut() };
    pattern::fill(&mut bytes[..len], ctx.p.write_block, |b, j| {
        pattern::guest_word(ctx.p.seed, b, j)
    });
    let n = step(
        "register",
        r.register_arena(&[a.run(0)], &[&m], i.chunk_size),
    )?;
    ensure!(n == 1, "register: {n} buffers");
    let at = step("translate", r.translate(m.ptr(), len))?;
    ensure!(
        at == FixedBuf {
            buf_index: 0,
            offset: 0
        },
        "translate: {at:?}"
    );
    let res = ctx.run1(
        &mut r,
        ctx.write_fixed(0, 0, len as u32, ctx.p.write_block * BLOCK as u64),
    )?;
    ensure!(res == len as i32, "WRITE_FIXED: {res}");
    let res = ctx.run1(
        &mut r,
        opcode::Fsync::new(types::Fixed(ctx.p.backend)).build(),
    )?;
    ensure!(res == 0, "FSYNC: {res}");
    Ok(())
}

/// READ_FIXED of the host pattern into an arena chunk, read back through
/// the mapping, up to the last byte of a two-chunk allocation.
pub fn read_host_pattern(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    let mut r = ctx.ring()?;
    let a = step("alloc", r.arena_alloc(i.chunk_size + 1))?;
    ensure!(a.nr == 2, "chunk + 1 bytes took {} chunks", a.nr);
    let m = step("map", r.arena_map(&a))?;
    let n = step(
        "register",
        r.register_arena(&[a.run(0)], &[&m], i.chunk_size),
    )?;
    ensure!(n == 2, "register: {n} buffers");
    let blocks = 16.min(ctx.p.read_blocks);
    let tail = i.chunk_size - blocks * BLOCK as u64;
    // SAFETY: inside the mapping (2 chunks).
    let at = unsafe { m.ptr().add((i.chunk_size + tail) as usize) };
    read_and_check(ctx, &mut r, 1, tail, 0, blocks, at)?;
    read_and_check(ctx, &mut r, 0, 0, ctx.block(1), 1, m.ptr())?;
    Ok(())
}

/// Two runs with a gap (an empty entry), data through both, a whole clone
/// to another ring (by reference) with data through it; a partial clone of
/// an arena table is EOPNOTSUPP.
pub fn runs_and_clone(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    let cs = i.chunk_size;
    let mut r = ctx.ring()?;
    let a = step("alloc a", r.arena_alloc(2 * cs))?;
    let b = step("alloc b", r.arena_alloc(2 * cs))?;
    let (ma, mb) = (
        step("map a", r.arena_map(&a))?,
        step("map b", r.arena_map(&b))?,
    );
    let n = step(
        "register two runs",
        r.register_arena(&[a.run(0), b.run(3)], &[&ma, &mb], cs),
    )?;
    ensure!(n == 5, "register: {n} buffers, want 5");
    // SAFETY: inside the mappings.
    let (a1, b1) = unsafe { (ma.ptr().add(cs as usize), mb.ptr().add(cs as usize)) };
    read_and_check(ctx, &mut r, 1, 0, ctx.block(2), 1, a1)?;
    // SAFETY: inside mapping b. (O_DIRECT backends want 512-byte aligned
    // memory: the offset is a block's.)
    let b_off = unsafe { mb.ptr().add(BLOCK) };
    read_and_check(ctx, &mut r, 3, BLOCK as u64, ctx.block(3), 1, b_off)?;
    let res = ctx.run1(&mut r, ctx.read_fixed(2, 0, BLOCK as u32, 0))?;
    ensure!(
        res == -libc::EFAULT,
        "READ_FIXED into the gap (buffer 2): {res}"
    );
    let res = ctx.run1(&mut r, ctx.read_fixed(4, cs - 8, 16, 0))?;
    ensure!(res == -libc::EFAULT, "READ_FIXED past chunk 4's end: {res}");
    let mut c = ctx.ring()?;
    let t = step(
        "clone whole",
        c.clone_buffers_from(pv_uring::CloneSrc::Ring(&r), 0, 0, 0, 0),
    )?;
    ensure!(t.len() == 5, "clone: {} buffers", t.len());
    ensure!(t[2].len == 0 && t[4].len == cs, "clone's table {t:x?}");
    read_and_check(ctx, &mut c, 4, 0, ctx.block(4), 1, b1)?;
    let mut p = ctx.ring()?;
    expect_errno(
        "partial clone of an arena table",
        p.clone_buffers_from(pv_uring::CloneSrc::Ring(&r), 0, 1, 0, 2),
        &[libc::EOPNOTSUPP],
    )?;
    // The source goes; the clone keeps the chunks and works.
    drop(r);
    read_and_check(ctx, &mut c, 1, 0, ctx.block(5), 1, a1)?;
    Ok(())
}

pub fn errors(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    let cs = i.chunk_size;
    let max = ctx.dev.info().max_buffers;
    let mut r = ctx.ring()?;
    let a = step("alloc", r.arena_alloc(3 * cs))?;
    let fd = r.fd();
    expect_errno("0 runs", arena::register(fd, &[]), &[EINVAL])?;
    let many: Vec<ArenaRun> = (0..65).map(|k| run(a.chunk, 1, k)).collect();
    expect_errno("65 runs", arena::register(fd, &many), &[EINVAL])?;
    let bad: [(&str, Vec<ArenaRun>); 5] = [
        ("an empty run", vec![run(a.chunk, 0, 0)]),
        (
            "runs out of order",
            vec![run(a.chunk, 1, 4), run(a.chunk + 1, 1, 2)],
        ),
        (
            "overlapping runs",
            vec![run(a.chunk, 2, 0), run(a.chunk + 2, 1, 1)],
        ),
        ("a run past max_buffers", vec![run(a.chunk, 2, max - 1)]),
        (
            "reserved bits",
            vec![ArenaRun {
                resv: 1,
                ..run(a.chunk, 1, 0)
            }],
        ),
    ];
    for (what, runs) in &bad {
        expect_errno(what, arena::register(fd, runs), &[EINVAL])?;
    }
    expect_errno(
        "ARENA_REGISTER on a file without a ring",
        arena::register(ctx.dev.fd(), &[run(a.chunk, 1, 0)]),
        &[libc::ENOENT],
    )?;
    expect_errno("alloc of 0 bytes", r.arena_alloc(0), &[EINVAL])?;
    expect_errno(
        "alloc past the arena",
        r.arena_alloc(i.len + 1),
        &[libc::ENOSPC],
    )?;
    expect_errno("alloc of u64::MAX", r.arena_alloc(u64::MAX), &[EINVAL])?;
    expect_errno(
        "free with resv set",
        arena::free_raw(
            fd,
            &VuringArenaFree {
                chunk: a.chunk,
                resv: 1,
            },
        ),
        &[EINVAL],
    )?;
    expect_errno(
        "a mapping longer than the allocation",
        arena::map_with(fd, &pv_uring::arena::ArenaAlloc { nr: a.nr + 1, ..a }, cs),
        &[libc::EACCES],
    )?;
    // Nothing above changed the ring: a good registration works, a second
    // one is EBUSY.
    let m = step("map", r.arena_map(&a))?;
    let n = step("register", r.register_arena(&[a.run(0)], &[&m], cs))?;
    ensure!(n == 3, "register: {n} buffers");
    expect_errno(
        "register on a ring with buffers",
        arena::register(fd, &[run(a.chunk, 1, 0)]),
        &[libc::EBUSY],
    )?;
    // SAFETY: the third chunk of the mapping of three.
    let third = unsafe { m.ptr().add(2 * cs as usize) };
    read_and_check(ctx, &mut r, 2, 0, ctx.block(6), 1, third)
}

/// Another file's chunks: not registrable, not mappable, not freeable.
pub fn chunk_of_another_file(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    let a_ring = ctx.ring()?;
    let a = step("alloc on file A", a_ring.arena_alloc(i.chunk_size))?;
    let mut b = ctx.ring()?;
    expect_errno(
        "B registers A's chunk",
        arena::register(b.fd(), &[run(a.chunk, 1, 0)]),
        &[libc::EACCES],
    )?;
    expect_errno(
        "B maps A's chunk",
        arena::map_with(b.fd(), &a, i.chunk_size),
        &[libc::EACCES],
    )?;
    expect_errno("B frees A's chunk", b.arena_free(a.chunk), &[libc::ENOENT])?;
    // B's own chunk, then A's: B's registration works and holds only B's.
    let own = step("alloc on file B", b.arena_alloc(i.chunk_size))?;
    ensure!(own.chunk != a.chunk, "B got A's chunk {}", a.chunk);
    let m = step("map", b.arena_map(&own))?;
    step(
        "register",
        b.register_arena(&[own.run(0)], &[&m], i.chunk_size),
    )?;
    read_and_check(ctx, &mut b, 0, 0, ctx.block(7), 1, m.ptr())?;
    // Holding A's fd is the capability: a third ring registers A's chunk
    // naming A as the owner; a fd that is not /dev/vuring, or none, is not.
    let mut c = ctx.ring()?;
    let n = step(
        "C registers A's chunk with A's fd",
        arena::register_owned(c.fd(), &[a.run(0)], a_ring.fd()),
    )?;
    ensure!(n == 1, "register with an owner fd: {n} buffers");
    let res = ctx.run1(&mut c, ctx.read_fixed(0, 0, BLOCK as u32, 0))?;
    ensure!(
        res == BLOCK as i32,
        "READ_FIXED into A's chunk through C: {res}"
    );
    let d = ctx.ring()?;
    expect_errno(
        "an owner fd of another device node",
        arena::register_owned(d.fd(), &[a.run(0)], 0),
        &[EINVAL, libc::EBADF],
    )?;
    expect_errno(
        "a closed owner fd",
        arena::register_owned(d.fd(), &[a.run(0)], 1 << 20),
        &[libc::EBADF],
    )?;
    expect_errno(
        "B as the owner of A's chunk",
        arena::register_owned(d.fd(), &[a.run(0)], b.fd()),
        &[libc::EACCES],
    )?;
    let runs = [a.run(0)];
    let mut raw = pv_uring::arena::VuringArenaRegister {
        runs: runs.as_ptr() as u64,
        nr_runs: 1,
        owner_fd: -1,
        resv: 1,
        ..Default::default()
    };
    expect_errno("resv set", arena::register_raw(d.fd(), &mut raw), &[EINVAL])?;
    // A gives up its chunk; C's ring still holds it.
    step("A frees its chunk", a_ring.arena_free(a.chunk))?;
    let res = ctx.run1(&mut c, ctx.read_fixed(0, 0, BLOCK as u32, 0))?;
    ensure!(res == BLOCK as i32, "READ_FIXED after A's free: {res}");
    Ok(())
}

pub fn chunk_beyond_the_arena(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    let r = ctx.ring()?;
    let fd = r.fd();
    for (what, run) in [
        ("the chunk after the last", run(i.nr_chunks, 1, 0)),
        ("a run past the end", run(i.nr_chunks - 1, 2, 0)),
        ("a chunk index that wraps", run(u32::MAX, 2, 0)),
    ] {
        expect_errno(what, arena::register(fd, &[run]), &[libc::EACCES])?;
    }
    let past = pv_uring::arena::ArenaAlloc {
        chunk: i.nr_chunks,
        nr: 1,
        offset: VURING_MMAP_ARENA + i.len,
    };
    expect_errno(
        "map past the arena",
        arena::map_with(fd, &past, i.chunk_size),
        &[EINVAL],
    )?;
    let wrap = pv_uring::arena::ArenaAlloc {
        offset: !0xfff_u64,
        ..past
    };
    expect_errno(
        "map at a wrapping offset",
        arena::map_with(fd, &wrap, i.chunk_size),
        &[EINVAL, libc::EOVERFLOW],
    )?;
    Ok(())
}

pub fn double_free(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    let free0 = free_chunks(ctx)?;
    let r = ctx.ring()?;
    let a = step("alloc", r.arena_alloc(2 * i.chunk_size))?;
    expect_errno(
        "free of a chunk inside the allocation",
        r.arena_free(a.chunk + 1),
        &[libc::ENOENT],
    )?;
    step("free", r.arena_free(a.chunk))?;
    expect_errno("second free", r.arena_free(a.chunk), &[libc::ENOENT])?;
    expect_errno(
        "register after free",
        arena::register(r.fd(), &[a.run(0)]),
        &[libc::EACCES],
    )?;
    let now = free_chunks(ctx)?;
    ensure!(
        now == free0,
        "{now} chunks free after the free, {free0} before"
    );
    Ok(())
}

/// munmap and FREE while a ring holds the chunk: the chunk is not given to
/// anybody (the whole rest of the arena is, and one more is ENOSPC), I/O
/// into it goes on, and it comes back once the ring drops it.
pub fn unmap_and_free_while_held(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    let cs = i.chunk_size;
    let free0 = free_chunks(ctx)?;
    let mut r = ctx.ring()?;
    let a = step("alloc", r.arena_alloc(cs))?;
    let m = step("map", r.arena_map(&a))?;
    step("register", r.register_arena(&[a.run(0)], &[&m], cs))?;
    drop(m);
    step("free while registered", r.arena_free(a.chunk))?;
    let held = free_chunks(ctx)?;
    ensure!(
        held == free0 - 1,
        "{held} chunks free, want {} (the ring holds one)",
        free0 - 1
    );
    let other = ctx.ring()?;
    let rest = step(
        "alloc the rest of the arena",
        other.arena_alloc(u64::from(held) * cs),
    )?;
    ensure!(
        a.chunk < rest.chunk || a.chunk >= rest.chunk + rest.nr,
        "chunk {} handed out again ({rest:?}) while a ring holds it",
        a.chunk
    );
    expect_errno("one chunk more", other.arena_alloc(cs), &[libc::ENOSPC])?;
    let res = ctx.run1(&mut r, ctx.read_fixed(0, 0, BLOCK as u32, 0))?;
    ensure!(
        res == BLOCK as i32,
        "READ_FIXED into the unmapped, freed chunk: {res}"
    );
    step("free the rest", other.arena_free(rest.chunk))?;
    step("unregister", r.unregister_buffers())?;
    let now = free_chunks(ctx)?;
    ensure!(
        now == free0,
        "{now} chunks free after UNREGISTER, {free0} before"
    );
    let again = step("alloc again", r.arena_alloc(cs))?;
    ensure!(
        again.chunk == a.chunk,
        "first fit gave chunk {}, want {}",
        again.chunk,
        a.chunk
    );
    step("free", r.arena_free(again.chunk))?;
    Ok(())
}

/// Closing a file whose ring has a request in flight into its arena
/// chunk: the close waits for the host to tear the ring down, then every
/// chunk is free again.
pub fn close_with_io_in_flight(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    let free0 = free_chunks(ctx)?;
    let mut r = ctx.ring()?;
    let a = step("alloc", r.arena_alloc(2 * i.chunk_size))?;
    let m = step("map", r.arena_map(&a))?;
    step(
        "register",
        r.register_arena(&[a.run(0)], &[&m], i.chunk_size),
    )?;
    let at = FixedBuf {
        buf_index: 1,
        offset: 0,
    };
    let stuck = pv_uring::read_fixed(SENTINEL_FILE, at, BLOCK as u32, 0).user_data(ctx.next_ud());
    // SAFETY: chunk 1 of the allocation, which the ring holds until the
    // host has torn it down; nothing reads it.
    step("push sentinel read", unsafe { r.push(&stuck) })?;
    r.submit();
    if let Some(c) = ctx.no_cqe(&mut r, 50) {
        fail!("the sentinel read completed: {c:?}");
    }
    drop(m);
    let held = free_chunks(ctx)?;
    ensure!(
        held == free0 - 2,
        "{held} chunks free with the ring live, want {}",
        free0 - 2
    );
    let t = Instant::now();
    drop(r);
    let took = t.elapsed();
    let now = free_chunks(ctx)?;
    ensure!(
        now == free0,
        "{now} chunks free after the close ({took:?}), {free0} before"
    );
    Ok(())
}

/// `--arena-cycles` cycles of allocate, register, destroy (UNREGISTER; the
/// ring itself every 500 cycles), free; every 1000th moves data and checks
/// it. The arena is whole again at the end.
pub fn lifecycle(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    let cs = i.chunk_size;
    let free0 = free_chunks(ctx)?;
    let n = ctx.p.arena_cycles;
    let mut r = ctx.ring()?;
    let t = Instant::now();
    let mut register = Duration::ZERO;
    for c in 0..n {
        let k = 1 + (c % 4) as u32;
        let a = step(
            &format!("cycle {c}: alloc"),
            r.arena_alloc(u64::from(k) * cs),
        )?;
        let t0 = Instant::now();
        let got = step(
            &format!("cycle {c}: register"),
            arena::register(r.fd(), &[a.run(0)]),
        )?;
        register += t0.elapsed();
        ensure!(got == k, "cycle {c}: {got} buffers, want {k}");
        if c % 1000 == 0 {
            let m = step("map", r.arena_map(&a))?;
            // SAFETY: chunk k - 1 of the mapping of k chunks.
            let last = unsafe { m.ptr().add(((k - 1) as u64 * cs) as usize) };
            read_and_check(ctx, &mut r, (k - 1) as u16, 0, ctx.block(c), 1, last)?;
        }
        step(&format!("cycle {c}: unregister"), r.unregister_buffers())?;
        step(&format!("cycle {c}: free"), r.arena_free(a.chunk))?;
        if c % 500 == 499 {
            r = ctx.ring()?;
        }
    }
    drop(r);
    let took = t.elapsed();
    eprintln!(
        "pv-suite: arena-lifecycle: {n} cycles in {:.1} s ({:.2} ms each; ARENA_REGISTER {:.3} ms mean)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e3 / n.max(1) as f64,
        register.as_secs_f64() * 1e3 / n.max(1) as f64
    );
    let now = free_chunks(ctx)?;
    ensure!(
        now == free0,
        "{now} chunks free after {n} cycles, {free0} before"
    );
    Ok(())
}

/// One ARENA_REGISTER_RINGS gives four rings the same pool (the device's
/// fd owns it): data through each ring into its own spot of the chunks,
/// checked through the owner's mapping; the chunks stay held until the
/// last ring goes, after the owner freed them.
pub fn register_rings(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    let cs = i.chunk_size;
    let free0 = free_chunks(ctx)?;
    let owner = ctx.dev.fd();
    let a = step("alloc on the device fd", arena::alloc(owner, 2 * cs))?;
    let m = step("map", arena::map_with(owner, &a, cs))?;
    let mut rings = Vec::new();
    for _ in 0..4 {
        rings.push(ctx.ring()?);
    }
    let n = step(
        "ARENA_REGISTER_RINGS on 4 rings",
        PvRing::register_arena_rings(&mut rings, owner, &[a.run(1)], &[&m], cs),
    )?;
    ensure!(n == 3, "register: {n} buffers, want 3 (a run at dst_off 1)");
    for (k, r) in rings.iter_mut().enumerate() {
        let t = r.extents();
        ensure!(
            t.len() == 3 && t[0].len == 0 && t[1].len == cs && t[2].len == cs,
            "ring {k}'s table {t:x?}"
        );
        // Ring k reads into chunk k % 2 at its own block; every ring sees
        // buffer 2 as the allocation's second chunk.
        let idx = 1 + (k % 2) as u16;
        let off = (k * BLOCK) as u64;
        // SAFETY: inside the mapping of two chunks.
        let at = unsafe { m.ptr().add((k % 2) * cs as usize + k * BLOCK) };
        read_and_check(ctx, r, idx, off, ctx.block(8 + k as u64), 1, at)?;
        let res = ctx.run1(r, ctx.read_fixed(0, 0, BLOCK as u32, 0))?;
        ensure!(
            res == -libc::EFAULT,
            "ring {k}: READ_FIXED into the empty buffer 0: {res}"
        );
    }
    expect_errno(
        "ARENA_REGISTER_RINGS again on a ring that holds the pool",
        arena::register_rings(owner, &[rings[0].fd()], &[a.run(0)], -1),
        &[libc::EBUSY],
    )?;
    drop(m);
    step("free", arena::free(owner, a.chunk))?;
    let last = rings.pop().expect("4 rings");
    drop(rings);
    let held = free_chunks(ctx)?;
    ensure!(
        held == free0 - 2,
        "{held} chunks free with one ring left, want {}",
        free0 - 2
    );
    drop(last);
    let now = free_chunks(ctx)?;
    ensure!(
        now == free0,
        "{now} chunks free after the rings, {free0} before"
    );
    Ok(())
}

/// ARENA_REGISTER_RINGS's refusals, each before any ring got a buffer
/// (all or none): a good call on the same rings works afterwards.
pub fn register_rings_errors(ctx: &Ctx) -> CaseResult {
    let i = need_arena(ctx)?;
    let cs = i.chunk_size;
    let max_rings = ctx.dev.info().max_rings;
    let owner = ctx.dev.fd();
    let free0 = free_chunks(ctx)?;
    let a = step("alloc", arena::alloc(owner, cs))?;
    let mut r0 = ctx.ring()?;
    let mut r1 = ctx.ring()?;
    let fds = [r0.fd(), r1.fd()];
    let good = [a.run(0)];
    let reg = |what: &str, fds: &[i32], runs: &[ArenaRun], owner_fd: i32, want: &[i32]| {
        expect_errno(
            what,
            arena::register_rings(owner, fds, runs, owner_fd),
            want,
        )
    };
    reg("0 rings", &[], &good, -1, &[EINVAL])?;
    let too_many = vec![r0.fd(); max_rings as usize + 1];
    reg("max_rings + 1 rings", &too_many, &good, -1, &[EINVAL])?;
    reg(
        "a ring named twice",
        &[r0.fd(), r1.fd(), r0.fd()],
        &good,
        -1,
        &[EINVAL],
    )?;
    // SAFETY: dup of our own fd; closed below.
    let dup = unsafe { libc::dup(r1.fd()) };
    ensure!(dup >= 0, "dup: {}", std::io::Error::last_os_error());
    let same_file = arena::register_rings(owner, &[r1.fd(), dup], &good, -1);
    // SAFETY: the fd dup() gave.
    unsafe { libc::close(dup) };
    expect_errno("one file under two fds", same_file, &[EINVAL])?;
    reg("fd -1", &[r0.fd(), -1], &good, -1, &[libc::EBADF])?;
    reg(
        "a closed fd",
        &[r0.fd(), 1 << 20],
        &good,
        -1,
        &[libc::EBADF],
    )?;
    reg(
        "stdin, not /dev/vuring",
        &[0, r0.fd()],
        &good,
        -1,
        &[EINVAL, libc::EBADF],
    )?;
    reg(
        "a file without a ring",
        &[r0.fd(), owner],
        &good,
        -1,
        &[libc::ENOENT],
    )?;
    reg("0 runs", &fds, &[], -1, &[EINVAL])?;
    let many: Vec<ArenaRun> = (0..65).map(|k| run(a.chunk, 1, k)).collect();
    reg("65 runs", &fds, &many, -1, &[EINVAL])?;
    reg(
        "runs out of order",
        &fds,
        &[run(a.chunk, 1, 4), run(a.chunk, 1, 2)],
        -1,
        &[EINVAL],
    )?;
    reg(
        "a chunk beyond the arena",
        &fds,
        &[run(i.nr_chunks, 1, 0)],
        -1,
        &[libc::EACCES],
    )?;
    let other = ctx.ring()?;
    let b = step("alloc on another file", other.arena_alloc(cs))?;
    reg(
        "another file's chunk",
        &fds,
        &[b.run(0)],
        -1,
        &[libc::EACCES],
    )?;
    reg(
        "another file's chunk, r0 as owner",
        &fds,
        &[b.run(0)],
        r0.fd(),
        &[libc::EACCES],
    )?;
    let fds_raw = fds;
    let mut raw = pv_uring::arena::VuringArenaRegisterRings {
        runs: good.as_ptr() as u64,
        nr_runs: 1,
        ring_fds: 8,
        nr_rings: 2,
        owner_fd: -1,
        ..Default::default()
    };
    expect_errno(
        "ring_fds at a bad address",
        arena::register_rings_raw(owner, &mut raw),
        &[libc::EFAULT],
    )?;
    raw.ring_fds = fds_raw.as_ptr() as u64;
    raw.runs = 8;
    expect_errno(
        "runs at a bad address",
        arena::register_rings_raw(owner, &mut raw),
        &[libc::EFAULT],
    )?;
    // A ring with buffers among them: EBUSY, and the other ring got none.
    let ob = step("map other's chunk", other.arena_map(&b))?;
    step(
        "register other's chunk on r1 alone",
        arena::register_owned(r1.fd(), &[b.run(0)], other.fd()),
    )?;
    reg("a ring that has buffers", &fds, &good, -1, &[libc::EBUSY])?;
    expect_errno(
        "UNREGISTER of r0 after the refused calls",
        r0.unregister_buffers(),
        &[libc::ENXIO],
    )?;
    step("unregister r1", r1.unregister_buffers())?;
    let n = step(
        "ARENA_REGISTER_RINGS after the refusals",
        arena::register_rings(owner, &fds, &good, -1),
    )?;
    ensure!(n == 1, "register: {n} buffers");
    let res = ctx.run1(&mut r0, ctx.read_fixed(0, 0, BLOCK as u32, 0))?;
    ensure!(res == BLOCK as i32, "READ_FIXED through r0: {res}");
    drop((r0, r1, ob));
    step("free", arena::free(owner, a.chunk))?;
    step("free other's", other.arena_free(b.chunk))?;
    let now = free_chunks(ctx)?;
    ensure!(now == free0, "{now} chunks free at the end, {free0} before");
    Ok(())
}
