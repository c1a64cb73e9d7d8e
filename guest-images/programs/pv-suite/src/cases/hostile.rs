//! Hostile requests, one case per finding of issue 14 a guest program can
//! reach (docs/pv-uring.md, "What a guest SQE may say", "Budgets"). Each
//! expects the exact errno the spec gives, in the CQE or the ioctl's
//! return, and then that the ring and the device keep working: a good
//! request on another ring and on the same ring.

use crate::ctx::{Ctx, Mapping, BUF, ENTRIES, NBUF, POOL};
use crate::harness::{expect_errno, expect_res, step, CaseError, CaseResult};
use crate::{ensure, fail, skip};
use io_uring::{opcode, squeue, types};
use pv_uring::pattern::BLOCK;
use pv_uring::uring_abi::uring::{
    sqe, IORING_OP_FSYNC, IORING_OP_NOP, IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED, IOSQE_ASYNC,
    IOSQE_BUFFER_SELECT, IOSQE_CQE_SKIP_SUCCESS, IOSQE_FIXED_FILE,
};
use pv_uring::uring_abi::vuring::{
    VuringCreate, VuringPublish, VURING_IOC_CREATE, VURING_IOC_UNPUBLISH, VURING_MMAP_CQ,
};
use pv_uring::{sqe_bytes, CloneSrc, Error, Extent, InfoExt, PvRing, Sqe, VURING_RING_POLLED};
use std::ffi::CStr;
use std::time::{Duration, Instant};

/// `IORING_RW_ATTR_FLAG_PI` (Linux 6.14): `attr_ptr` points at a
/// `struct io_uring_attr_pi` in the submitter's memory.
const IORING_RW_ATTR_FLAG_PI: u64 = 1;
/// `IOPRIO_CLASS_SHIFT` and the classes.
const IOPRIO_CLASS_SHIFT: u16 = 13;
const IOPRIO_CLASS_RT: u16 = 1;
const IOPRIO_CLASS_BE: u16 = 2;
const IOPRIO_CLASS_IDLE: u16 = 3;

type Rings = (PvRing, Vec<Extent>, PvRing);

/// A ring with pool A registered, and a second, independent ring.
fn rings(ctx: &Ctx) -> Result<Rings, CaseError> {
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let b = ctx.ring()?;
    Ok((a, sa, b))
}

/// Runs one hostile SQE on `a`, expects exactly `-want` in its CQE, then a
/// good request on `b` and on `a`.
fn hostile(
    ctx: &Ctx,
    a: &mut PvRing,
    b: &mut PvRing,
    what: &str,
    sqe: [u8; 64],
    want: i32,
) -> CaseResult {
    let res = ctx.run1_raw(a, sqe)?;
    expect_res(what, res, &[want])?;
    if let Err(e) = ctx.good_io(b, 1) {
        fail!("after {what}: another ring: {e}");
    }
    if let Err(e) = ctx.good_io(a, 2) {
        fail!("after {what}: same ring: {e}");
    }
    Ok(())
}

/// A valid READ_FIXED of one block into buffer 0 as plain fields.
fn good_read(ctx: &Ctx) -> Sqe {
    Sqe {
        opcode: IORING_OP_READ_FIXED,
        flags: IOSQE_FIXED_FILE,
        fd: ctx.p.backend as i32,
        len: BLOCK as u32,
        ..Sqe::default()
    }
}

fn with_flags(sqe: squeue::Entry, f: squeue::Flags) -> [u8; 64] {
    sqe_bytes(&sqe.flags(f))
}

pub fn forbidden_opcodes(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    // A raw address: the guest's own buffer (what v1 guests named), which
    // the host must never take from an SQE.
    let user = sa[0].user_addr as *mut u8;
    let fixed = types::Fixed(ctx.p.backend);
    let iov = libc::iovec {
        iov_base: user.cast(),
        iov_len: BLOCK,
    };
    let path: &CStr = c"/etc/passwd";
    let cases: Vec<(&str, [u8; 64])> = vec![
        (
            "READ with a raw address",
            sqe_bytes(&opcode::Read::new(fixed, user, BLOCK as u32).build()),
        ),
        (
            "WRITE with a raw address",
            sqe_bytes(&opcode::Write::new(fixed, user, BLOCK as u32).build()),
        ),
        (
            "READV",
            sqe_bytes(&opcode::Readv::new(fixed, &iov, 1).build()),
        ),
        (
            "OPENAT",
            with_flags(
                opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr()).build(),
                squeue::Flags::FIXED_FILE,
            ),
        ),
        (
            "CLOSE",
            with_flags(opcode::Close::new(fixed).build(), squeue::Flags::FIXED_FILE),
        ),
        (
            "PROVIDE_BUFFERS",
            with_flags(
                opcode::ProvideBuffers::new(user, BLOCK as i32, 1, 0, 0).build(),
                squeue::Flags::FIXED_FILE,
            ),
        ),
        (
            "opcode 254",
            Sqe {
                opcode: 254,
                ..good_read(ctx)
            }
            .to_bytes(),
        ),
    ];
    for (what, sqe) in cases {
        hostile(ctx, &mut a, &mut b, what, sqe, libc::EACCES)?;
    }
    Ok(())
}

pub fn missing_fixed_file(ctx: &Ctx) -> CaseResult {
    let (mut a, _sa, mut b) = rings(ctx)?;
    let sqe = opcode::ReadFixed::new(types::Fd(0), std::ptr::null_mut(), BLOCK as u32, 0).build();
    // SAFETY: the library refuses the SQE before queueing anything.
    let pushed = unsafe { a.push(&sqe) };
    ensure!(
        matches!(pushed, Err(Error::NotFixedFile)),
        "the library accepted an SQE without FIXED_FILE: {pushed:?}"
    );
    hostile(
        ctx,
        &mut a,
        &mut b,
        "READ_FIXED without IOSQE_FIXED_FILE",
        sqe_bytes(&sqe),
        libc::EACCES,
    )?;
    let nop = Sqe {
        opcode: IORING_OP_NOP,
        ..Sqe::default()
    };
    hostile(
        ctx,
        &mut a,
        &mut b,
        "NOP without IOSQE_FIXED_FILE",
        nop.to_bytes(),
        libc::EACCES,
    )
}

pub fn forbidden_sqe_flags(ctx: &Ctx) -> CaseResult {
    let (mut a, _sa, mut b) = rings(ctx)?;
    // Allowed: IO_DRAIN completes normally.
    let res = ctx.run1(
        &mut a,
        ctx.read_fixed(0, 0, BLOCK as u32, 0)
            .flags(squeue::Flags::IO_DRAIN),
    )?;
    ensure!(
        res == BLOCK as i32,
        "READ_FIXED with IO_DRAIN: res {}",
        pv_uring::Errno::res(res)
    );
    for (what, f) in [
        ("IOSQE_ASYNC", IOSQE_ASYNC),
        ("IOSQE_BUFFER_SELECT", IOSQE_BUFFER_SELECT),
        ("IOSQE_CQE_SKIP_SUCCESS", IOSQE_CQE_SKIP_SUCCESS),
        ("flag bit 7", 1 << 7),
    ] {
        let s = Sqe {
            flags: IOSQE_FIXED_FILE | f,
            ..good_read(ctx)
        };
        hostile(
            ctx,
            &mut a,
            &mut b,
            &format!("READ_FIXED with {what}"),
            s.to_bytes(),
            libc::EACCES,
        )?;
    }
    Ok(())
}

pub fn backend_out_of_range(ctx: &Ctx) -> CaseResult {
    let (mut a, _sa, mut b) = rings(ctx)?;
    let n = ctx.dev.info().nr_backends as i32;
    for fd in [n, n + 1, 15, 1 << 20, i32::MAX, -1, i32::MIN] {
        let s = Sqe {
            fd,
            ..good_read(ctx)
        };
        hostile(
            ctx,
            &mut a,
            &mut b,
            &format!("READ_FIXED of backend {fd} of {n}"),
            s.to_bytes(),
            libc::EBADF,
        )?;
    }
    let cases = [
        (
            "WRITE_FIXED of the teardown sentinel (16)",
            Sqe {
                opcode: IORING_OP_WRITE_FIXED,
                fd: 16,
                ..good_read(ctx)
            },
            libc::EBADF,
        ),
        (
            "FSYNC of backend nr_backends",
            Sqe {
                opcode: IORING_OP_FSYNC,
                flags: IOSQE_FIXED_FILE,
                fd: n,
                ..Sqe::default()
            },
            libc::EBADF,
        ),
        (
            "NOP with fd 1",
            Sqe {
                opcode: IORING_OP_NOP,
                flags: IOSQE_FIXED_FILE,
                fd: 1,
                ..Sqe::default()
            },
            libc::EINVAL,
        ),
    ];
    for (what, s, want) in cases {
        hostile(ctx, &mut a, &mut b, what, s.to_bytes(), want)?;
    }
    Ok(())
}

pub fn range_outside_buffer(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    let len = sa[0].len;
    let blk = BLOCK as u64;
    let cases = [
        ("offset = buffer length", len, BLOCK as u32),
        ("last block straddling the end", len - blk / 2, BLOCK as u32),
        ("longer than the buffer", 0, (len + blk) as u32),
        ("offset near u64::MAX (wraps)", u64::MAX - 8, BLOCK as u32),
        ("a v1-style host address", 0x7f00_0000_0000, BLOCK as u32),
        ("non-canonical offset", 0x8000_0000_0000_0000, BLOCK as u32),
    ];
    for (what, addr, l) in cases {
        for op in [IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED] {
            let s = Sqe {
                opcode: op,
                addr,
                len: l,
                ..good_read(ctx)
            };
            hostile(
                ctx,
                &mut a,
                &mut b,
                &format!("opcode {op}: {what} ({addr:#x}+{l:#x})"),
                s.to_bytes(),
                libc::EFAULT,
            )?;
        }
    }
    Ok(())
}

pub fn buf_index_out_of_range(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    let n = sa.len();
    for idx in [n, n + 1, ctx.dev.info().max_buffers as usize, 0xffff] {
        let s = Sqe {
            buf_index: idx as u16,
            ..good_read(ctx)
        };
        hostile(
            ctx,
            &mut a,
            &mut b,
            &format!("buf_index {idx} of {n}"),
            s.to_bytes(),
            libc::EFAULT,
        )?;
    }
    // A ring with no buffers at all.
    let mut e = ctx.ring()?;
    let res = ctx.run1_raw(&mut e, good_read(ctx).to_bytes())?;
    expect_res("READ_FIXED on a ring without buffers", res, &[libc::EFAULT])?;
    // Opcodes without a buffer must say 0.
    let nop = Sqe {
        opcode: IORING_OP_NOP,
        flags: IOSQE_FIXED_FILE,
        buf_index: 1,
        ..Sqe::default()
    };
    hostile(
        ctx,
        &mut a,
        &mut b,
        "NOP with buf_index 1",
        nop.to_bytes(),
        libc::EINVAL,
    )
}

/// Finding 1: the PI attribute (`attr_type_mask` = PI, `attr_ptr` a
/// pointer the host kernel would read in the VMM's address space).
pub fn pi_attr(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    // Any plausible pointer: the guest's own buffer, and a typical
    // x86-64 user address of a VMM.
    for ptr in [sa[0].user_addr, 0x7f00_0000_1000] {
        for op in [IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED] {
            for (what, p, mask) in [
                ("attr_ptr + PI", ptr, IORING_RW_ATTR_FLAG_PI),
                ("attr_type_mask PI alone", 0, IORING_RW_ATTR_FLAG_PI),
                ("attr_ptr alone", ptr, 0),
            ] {
                let s = Sqe {
                    opcode: op,
                    attr_ptr: p,
                    attr_type_mask: mask,
                    ..good_read(ctx)
                };
                hostile(
                    ctx,
                    &mut a,
                    &mut b,
                    &format!("opcode {op}: {what} ({p:#x})"),
                    s.to_bytes(),
                    libc::EINVAL,
                )?;
            }
        }
    }
    Ok(())
}

/// Any non-zero byte in a field no allowed opcode uses: `ioprio`,
/// `personality`, `file_index`, `addr3`/`attr_ptr`, `attr_type_mask`,
/// and `rw_flags` of a read.
pub fn reserved_bytes(ctx: &Ctx) -> CaseResult {
    let (mut a, _sa, mut b) = rings(ctx)?;
    let mut offsets: Vec<usize> = vec![sqe::IOPRIO, sqe::IOPRIO + 1];
    offsets.extend(sqe::PERSONALITY..sqe::PERSONALITY + 2);
    offsets.extend(sqe::FILE_INDEX..sqe::FILE_INDEX + 4);
    offsets.extend(sqe::ATTR_PTR..64);
    offsets.extend(sqe::OP_FLAGS..sqe::OP_FLAGS + 4);
    for at in offsets {
        for v in [0x01u8, 0x80] {
            let mut raw = good_read(ctx).to_bytes();
            raw[at] = v;
            hostile(
                ctx,
                &mut a,
                &mut b,
                &format!("byte {at} = {v:#x}"),
                raw,
                libc::EINVAL,
            )?;
        }
    }
    Ok(())
}

/// Finding 6: the guest picks no host I/O priority, RT least of all.
pub fn rt_ioprio(ctx: &Ctx) -> CaseResult {
    let (mut a, _sa, mut b) = rings(ctx)?;
    for (what, class, level) in [
        ("RT level 0", IOPRIO_CLASS_RT, 0u16),
        ("RT level 7", IOPRIO_CLASS_RT, 7),
        ("BE level 0", IOPRIO_CLASS_BE, 0),
        ("IDLE", IOPRIO_CLASS_IDLE, 0),
    ] {
        for op in [IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED] {
            let s = Sqe {
                opcode: op,
                ioprio: (class << IOPRIO_CLASS_SHIFT) | level,
                ..good_read(ctx)
            };
            hostile(
                ctx,
                &mut a,
                &mut b,
                &format!("opcode {op}: ioprio {what}"),
                s.to_bytes(),
                libc::EINVAL,
            )?;
        }
    }
    Ok(())
}

pub fn doorbell_unknown_ring(ctx: &Ctx) -> CaseResult {
    let (mut a, _sa, mut b) = rings(ctx)?;
    let gone = {
        let r = ctx.ring()?;
        r.id()
    };
    let max = ctx.dev.info().max_rings;
    for id in [max, max + 1, 0xffff, u32::MAX, gone, 0x8000_0000] {
        if id == a.id() || id == b.id() {
            continue;
        }
        ctx.dev.ring_doorbell(id);
    }
    // Doorbell without anything queued, and twice in a row.
    a.ring_doorbell();
    a.ring_doorbell();
    ensure!(
        ctx.no_cqe(&mut a, 50).is_none(),
        "CQE from an empty doorbell"
    );
    step("good I/O on another ring", ctx.good_io(&mut b, 3))?;
    step("good I/O on the ring", ctx.good_io(&mut a, 4))
}

/// The device trusts neither index the guest writes: a SQ tail more than
/// sq_entries ahead of its head, and a CQ head past what it posted, are
/// ignored; the ring works once they are sane again.
pub fn bogus_ring_indices(ctx: &Ctx) -> CaseResult {
    let (mut a, _sa, mut b) = rings(ctx)?;
    ctx.good_io(&mut a, 5)?;
    let ud = ctx.next_ud();
    // SAFETY: a NOP touches no memory.
    step("push", unsafe { a.push(&pv_uring::nop().user_data(ud)) })?;
    let (head, _, cq_head, _) = a.ring_indices();
    for tail in [
        head.wrapping_add(a.sq_entries() + 1),
        head.wrapping_add(1 << 20),
        head.wrapping_sub(1),
    ] {
        a.store_raw_indices(Some(tail), None);
        a.ring_doorbell();
        if let Some(c) = ctx.no_cqe(&mut a, 50) {
            fail!("SQ tail {tail} (head {head}) ran an SQE: {c:?}");
        }
        let (now, ..) = a.ring_indices();
        ensure!(
            now == head,
            "SQ tail {tail}: the head moved {head} -> {now}"
        );
    }
    // A CQ head past the CQ tail.
    a.store_raw_indices(None, Some(cq_head.wrapping_add(1000)));
    a.ring_doorbell();
    std::thread::sleep(Duration::from_millis(20));
    a.restore_indices();
    a.submit();
    step("wait for the queued NOP", a.wait(1))?;
    let c = a.completion().next();
    ensure!(
        c.is_some_and(|c| c.user_data == ud && c.res == 0),
        "the NOP queued before the bogus indices: {c:?}"
    );
    step("good I/O on another ring", ctx.good_io(&mut b, 6))?;
    step("good I/O on the ring", ctx.good_io(&mut a, 7))
}

pub fn link_after_refused(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    // READ (forbidden) linked to a good READ_FIXED: the device answers the
    // head -EACCES with a NOP that keeps the link flag, so the linked
    // request is cancelled, as the kernel would have done.
    let head = opcode::Read::new(
        types::Fixed(ctx.p.backend),
        sa[0].user_addr as *mut u8,
        BLOCK as u32,
    )
    .build()
    .flags(squeue::Flags::IO_LINK)
    .user_data(1_000_001);
    let next = ctx.read_fixed(0, 0, BLOCK as u32, 0).user_data(1_000_002);
    // SAFETY: both target pool A, which outlives the ring.
    unsafe {
        step("push", a.push_raw(&sqe_bytes(&head)))?;
        step("push", a.push(&next))?;
    }
    a.submit();
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < 2 && t0.elapsed() < Duration::from_secs(5) {
        if a.wait(1).is_ok() {
            got.extend(a.completion());
        }
    }
    let res = |ud| got.iter().find(|c| c.user_data == ud).map(|c| c.res);
    match res(1_000_001) {
        Some(r) => expect_res("link head READ", r, &[libc::EACCES])?,
        None => fail!("no CQE for the refused link head"),
    }
    match res(1_000_002) {
        Some(r) => expect_res("request linked to a refused one", r, &[libc::ECANCELED])?,
        None => fail!("no CQE for the request linked to the refused head"),
    }
    step("good I/O on another ring", ctx.good_io(&mut b, 7))?;
    step("good I/O on the ring", ctx.good_io(&mut a, 8))
}

/// Finding 2: a guest that never reaps and keeps submitting NOPs. The
/// device consumes SQEs only while fewer than cq_entries are consumed and
/// not reaped, so it stops at exactly cq_entries however often the
/// doorbell rings (the host kernel's CQ never overflows); once reaped,
/// the rest completes in order.
pub fn cq_never_reaped(ctx: &Ctx) -> CaseResult {
    let mut r = ctx.ring()?;
    let (sq, cq) = (r.sq_entries(), r.cq_entries());
    let base = ctx.next_ud() << 20;
    let mut pushed = 0u64;
    let mut doorbells = 0u32;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        loop {
            // SAFETY: a NOP touches no memory.
            match unsafe { r.push(&pv_uring::nop().user_data(base + pushed)) } {
                Ok(()) => pushed += 1,
                Err(Error::SqFull) => break,
                Err(e) => fail!("push NOP {pushed}: {e}"),
            }
        }
        r.submit();
        r.ring_doorbell();
        doorbells += 1;
        if pushed >= u64::from(cq + sq) && doorbells >= 10_000 {
            break;
        }
    }
    // Whatever the device would still take, it has taken by now.
    std::thread::sleep(Duration::from_millis(100));
    let (sq_head, ..) = r.ring_indices();
    ensure!(
        sq_head == cq,
        "with {cq} CQ entries and nothing reaped the device consumed {sq_head} SQEs ({doorbells} doorbells)"
    );
    ensure!(
        pushed == u64::from(cq + sq),
        "pushed {pushed} NOPs, want {} (the SQ full behind a full CQ)",
        cq + sq
    );
    ensure!(
        r.cq_ready() == cq as usize,
        "{} CQEs ready, want {cq}",
        r.cq_ready()
    );
    let mut seen = 0u64;
    while seen < pushed {
        step("wait", r.wait(1))?;
        for c in r.completion() {
            ensure!(
                c.user_data == base + seen && c.res == 0,
                "CQE {seen}: {c:?}, want user_data {} res 0",
                base + seen
            );
            seen += 1;
        }
    }
    step("good I/O on the ring", ctx.good_io(&mut r, 9))
}

/// Finding 3: extents of one REGISTER may not overlap (each would pin the
/// same pages again).
pub fn overlapping_extents(ctx: &Ctx) -> CaseResult {
    let mut r = ctx.ring()?;
    let at = |off: usize, len: usize| libc::iovec {
        iov_base: ctx.pool_a.at(off).cast(),
        iov_len: len,
    };
    let page = BLOCK;
    let mut cases: Vec<(String, Vec<libc::iovec>)> = vec![
        ("the same iovec twice".into(), vec![at(0, BUF), at(0, BUF)]),
        (
            "one iovec inside another".into(),
            vec![at(0, 2 * BUF), at(BUF, page)],
        ),
        (
            "two iovecs sharing one page".into(),
            vec![at(0, BUF), at(BUF - page, BUF)],
        ),
        (
            "the later iovec first".into(),
            vec![at(BUF, BUF), at(0, BUF + page)],
        ),
    ];
    let many = ctx.dev.info().max_buffers as usize;
    cases.push((
        format!("{many} iovecs of the same page"),
        vec![at(0, page); many],
    ));
    for (what, iovs) in cases {
        expect_errno(&what, r.register_buffers(&iovs), &[libc::EINVAL])?;
        ensure!(r.extents().is_empty(), "{what}: left extents");
    }
    // Adjacent, not overlapping: fine.
    let t = step(
        "register adjacent iovecs",
        r.register_buffers(&[at(0, BUF), at(BUF, BUF)]),
    )?;
    ensure!(!t.is_empty(), "adjacent iovecs: no extents");
    ctx.good_io(&mut r, 10)
}

/// Finding 3, the budget: registered bytes of the VM at most
/// `max_registered`; REGISTER past it is `-ENOSPC`; freed with the rings.
/// The same memory registered on k rings counts k times (that is what
/// the host pins), so the case registers one chunk on ring after ring.
pub fn registered_beyond_max(ctx: &Ctx) -> CaseResult {
    let info = *ctx.dev.info();
    let max = info.max_registered;
    let slots = u64::from(info.max_rings).saturating_sub(4).max(2);
    // Pool A (4 iovecs of 64 KiB) if that needs few enough rings; else a
    // larger mapping (hugepages keep it to few extents).
    let big;
    let (chunk, iovs) = if max / (POOL as u64) < slots {
        (POOL as u64, ctx.pool_a.iovecs(NBUF, BUF))
    } else {
        let len = (max / (slots - 1)).next_multiple_of(2 << 20) as usize;
        big = Mapping::new(len).map_err(|e| CaseError::Fail(format!("mmap {len}: {e}")))?;
        // On 4 KiB pages the driver may make an extent of every page, and
        // a ring holds at most max_buffers of them.
        let pages = (len / BLOCK) as u32;
        ensure!(
            big.huge || pages <= info.max_buffers,
            "max_registered {max} needs {len}-byte registrations on {slots} rings: no guest \
             hugepages for them (boot with hugepages=N) or a smaller --uring max-registered"
        );
        (len as u64, big.iovecs(1, len))
    };
    let fit = max / chunk;
    let mut held = Vec::new();
    for k in 0..=fit {
        let mut r = ctx.ring()?;
        let got = r.register_buffers(&iovs);
        if k < fit {
            if let Err(e) = got {
                fail!("REGISTER {k} of {fit} x {chunk} bytes (max_registered {max}): {e}");
            }
            held.push(r);
        } else {
            expect_errno(
                &format!(
                    "REGISTER {} x {chunk} bytes past max_registered {max}",
                    k + 1
                ),
                got,
                &[libc::ENOSPC],
            )?;
            // The refused ring still works (a clone costs nothing).
            let t = step(
                "clone into the refused ring",
                r.clone_buffers_from(CloneSrc::Ring(&held[0]), 0, 0, 0, 0),
            )?;
            ctx.check_clone(&mut r, &t, 0, &held[0].extents()[0], 11)?;
        }
    }
    // The budget comes back with the rings.
    drop(held);
    let mut r = ctx.ring()?;
    step("register after freeing", r.register_buffers(&iovs))?;
    ctx.good_io(&mut r, 12)
}

/// Finding 4: polled submitters (each may spin a host CPU) are bounded by
/// `max_polled`; one more is `-EBUSY`, and the slot comes back at close.
pub fn too_many_polled(ctx: &Ctx) -> CaseResult {
    let info = *ctx.dev.info();
    if !info.has_polled() {
        return expect_errno(
            "polled ring without PVU_F_POLLED",
            PvRing::new(&ctx.dev, ENTRIES, VURING_RING_POLLED),
            &[libc::EOPNOTSUPP],
        );
    }
    let mut polled = Vec::new();
    for k in 0..info.max_polled {
        let r = step(
            &format!("polled ring {k} of {}", info.max_polled),
            PvRing::new(&ctx.dev, ENTRIES, VURING_RING_POLLED),
        )?;
        ensure!(r.is_polled(), "polled ring {k} is not polled");
        polled.push(r);
    }
    expect_errno(
        &format!(
            "polled ring {} of max_polled {}",
            info.max_polled + 1,
            info.max_polled
        ),
        PvRing::new(&ctx.dev, ENTRIES, VURING_RING_POLLED),
        &[libc::EBUSY],
    )?;
    // Doorbell rings are not limited by it.
    let mut d = ctx.ring()?;
    ctx.good_io(&mut d, 13)?;
    polled.pop();
    let mut p = step(
        "polled ring after closing one",
        PvRing::new(&ctx.dev, ENTRIES, VURING_RING_POLLED),
    )?;
    ctx.good_io(&mut p, 14)
}

fn need_table(ctx: &Ctx) -> CaseResult {
    if !ctx.dev.info().has_table() {
        skip!("device without PVU_F_TABLE");
    }
    Ok(())
}

/// A published table is a capability: v1's table ids (0..63) and tokens
/// near the real one name nothing.
pub fn clone_guessed_token(ctx: &Ctx) -> CaseResult {
    need_table(ctx)?;
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let token = step("publish", a.publish())?;
    let mut guesses: Vec<u64> = (0..=64).collect();
    guesses.extend([
        token ^ 1,
        token.wrapping_add(1),
        token.wrapping_sub(1),
        token.rotate_left(32),
        !token,
        u64::MAX,
    ]);
    let mut r = ctx.ring()?;
    for g in guesses.into_iter().filter(|&g| g != token) {
        expect_errno(
            &format!("clone from guessed token {g:#x}"),
            r.clone_buffers_from(CloneSrc::Table(g), 0, 0, 0, 0),
            &[libc::ENOENT],
        )?;
    }
    let t = step(
        "clone with the real token",
        r.clone_buffers_from(CloneSrc::Table(token), 0, 0, 0, 0),
    )?;
    ctx.check_clone(&mut r, &t, 0, &sa[0], 15)?;
    step("unpublish", a.unpublish(token))
}

/// Only the publishing file may unpublish: another ring of this process
/// and a ring of another process are `-EPERM`; the table stays.
pub fn unpublish_by_another(ctx: &Ctx) -> CaseResult {
    need_table(ctx)?;
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let token = step("publish", a.publish())?;
    // A file without a ring may do nothing but INFO and CREATE.
    expect_errno(
        "unpublish through the device fd (no ring)",
        ctx.dev.unpublish(token),
        &[libc::ENOENT],
    )?;
    let b = ctx.ring()?;
    expect_errno(
        "unpublish from another ring",
        b.unpublish(token),
        &[libc::EPERM],
    )?;
    let path = std::ffi::CString::new(ctx.p.dev.clone())
        .map_err(|_| CaseError::Fail("device path with NUL".into()))?;
    // SAFETY: the suite is single-threaded here; the child makes only
    // system calls (open, ioctl) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: a NUL-terminated path; the ioctls read and write one
        // struct vuring_create / read one struct vuring_publish; _exit
        // ends the child without running the parent's destructors (its
        // exit closes the fd, destroying the child's ring).
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            let mut c = VuringCreate {
                entries: 1,
                ..Default::default()
            };
            let code = if fd < 0
                || libc::ioctl(
                    fd,
                    VURING_IOC_CREATE as libc::Ioctl,
                    &mut c as *mut VuringCreate,
                ) < 0
            {
                3
            } else {
                let v = VuringPublish { token };
                let r = libc::ioctl(
                    fd,
                    VURING_IOC_UNPUBLISH as libc::Ioctl,
                    &v as *const VuringPublish,
                );
                match (r, *libc::__errno_location()) {
                    (0, _) => 1,
                    (_, libc::EPERM) => 0,
                    _ => 2,
                }
            };
            libc::_exit(code)
        }
    }
    ensure!(pid > 0, "fork: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: waits for our own child.
    let w = unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(w == pid, "waitpid: {}", std::io::Error::last_os_error());
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    match code {
        Some(0) => {}
        Some(1) => fail!("another process unpublished the table"),
        Some(2) => fail!("another process's UNPUBLISH failed, but not with -EPERM"),
        Some(3) => fail!("the child could not open {} and create a ring", ctx.p.dev),
        _ => fail!("the child ended with status {status:#x}"),
    }
    // The table is still there.
    let mut c = ctx.ring()?;
    let t = step(
        "clone after the refused unpublishes",
        c.clone_buffers_from(CloneSrc::Table(token), 0, 0, 0, 0),
    )?;
    ctx.check_clone(&mut c, &t, 0, &sa[0], 16)?;
    step("unpublish by the publisher", a.unpublish(token))
}

/// The completion slot holds the host kernel's ring words: the guest may
/// not map it writable, nor make its mapping writable.
pub fn cq_slot_read_only(ctx: &Ctx) -> CaseResult {
    let mut r = ctx.ring()?;
    let len = ctx.dev.info().cq_slot_size as usize;
    // SAFETY: a new mapping at a kernel-chosen address (unmapped below if
    // the driver wrongly grants it).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            r.fd(),
            VURING_MMAP_CQ as libc::off_t,
        )
    };
    if p != libc::MAP_FAILED {
        // SAFETY: the mapping just made.
        unsafe { libc::munmap(p, len) };
        fail!("a writable mapping of the completion slot was granted");
    }
    let e = std::io::Error::last_os_error().raw_os_error();
    ensure!(
        e == Some(libc::EACCES),
        "writable mmap of the completion slot: errno {e:?}, want EACCES"
    );
    // SAFETY: changes the protection of the library's own read-only
    // mapping of the slot; put back at once if it succeeds.
    let m = unsafe {
        libc::mprotect(
            r.cq_slot_ptr() as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    if m == 0 {
        // SAFETY: as above.
        unsafe { libc::mprotect(r.cq_slot_ptr() as *mut libc::c_void, len, libc::PROT_READ) };
        fail!("mprotect made the completion slot writable");
    }
    let e = std::io::Error::last_os_error().raw_os_error();
    ensure!(
        e == Some(libc::EACCES),
        "mprotect of the completion slot: errno {e:?}, want EACCES"
    );
    ctx.good_io(&mut r, 17)
}
