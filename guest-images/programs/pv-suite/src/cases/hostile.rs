//! Malformed requests: the host kernel must answer each with an error CQE
//! (restrictions, fixed files, buffer bounds) and keep serving; after each,
//! a good request works on another ring and on the same ring.

use crate::ctx::Ctx;
use crate::harness::{expect_res, step, CaseResult};
use crate::{ensure, fail};
use io_uring::{opcode, squeue, types};
use pv_uring::pattern::BLOCK;
use pv_uring::{sqe_bytes, Errno, Extent, PvRing};
use std::ffi::CStr;

/// A ring with pool A registered, and a second, independent ring.
fn rings(ctx: &Ctx) -> Result<(PvRing, Vec<Extent>, PvRing), crate::harness::CaseError> {
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let b = ctx.ring()?;
    Ok((a, sa, b))
}

/// Runs one hostile SQE on `a`, expects one of `want` in its CQE, then a
/// good request on `b` and on `a`.
fn hostile(
    ctx: &Ctx,
    a: &mut PvRing,
    b: &mut PvRing,
    what: &str,
    sqe: [u8; 64],
    want: &[i32],
) -> CaseResult {
    let res = ctx.run1_raw(a, sqe)?;
    expect_res(what, res, want)?;
    if let Err(e) = ctx.good_io(b, 1) {
        fail!("after {what}: another ring: {e}");
    }
    if let Err(e) = ctx.good_io(a, 2) {
        fail!("after {what}: same ring: {e}");
    }
    Ok(())
}

fn with_flags(sqe: squeue::Entry, f: squeue::Flags) -> [u8; 64] {
    sqe_bytes(&sqe.flags(f))
}

pub fn forbidden_opcodes(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    let host = sa[0].host_addr as *mut u8;
    let fixed = types::Fixed(ctx.p.backend);
    let iov = libc::iovec {
        iov_base: host.cast(),
        iov_len: BLOCK,
    };
    let path: &CStr = c"/etc/passwd";
    let cases: Vec<(&str, [u8; 64])> = vec![
        (
            "READ with a raw host address",
            sqe_bytes(&opcode::Read::new(fixed, host, BLOCK as u32).build()),
        ),
        (
            "WRITE with a raw host address",
            sqe_bytes(&opcode::Write::new(fixed, host, BLOCK as u32).build()),
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
                opcode::ProvideBuffers::new(host, BLOCK as i32, 1, 0, 0).build(),
                squeue::Flags::FIXED_FILE,
            ),
        ),
    ];
    for (what, sqe) in cases {
        hostile(ctx, &mut a, &mut b, what, sqe, &[libc::EACCES])?;
    }
    // An opcode number past the kernel's last.
    let mut raw = [0u8; 64];
    raw[0] = 0xfe;
    raw[1] = pv_uring::abi::IOSQE_FIXED_FILE;
    hostile(
        ctx,
        &mut a,
        &mut b,
        "opcode 254",
        raw,
        &[libc::EACCES, libc::EINVAL],
    )
}

pub fn missing_fixed_file(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    let sqe =
        opcode::ReadFixed::new(types::Fd(0), sa[0].host_addr as *mut u8, BLOCK as u32, 0).build();
    ensure!(
        matches!(
            unsafe_push_refused(&mut a, &sqe),
            Some(pv_uring::Error::NotFixedFile)
        ),
        "the library accepted an SQE without FIXED_FILE"
    );
    hostile(
        ctx,
        &mut a,
        &mut b,
        "READ_FIXED without IOSQE_FIXED_FILE",
        sqe_bytes(&sqe),
        &[libc::EACCES],
    )?;
    let nop = opcode::Nop::new().build();
    hostile(
        ctx,
        &mut a,
        &mut b,
        "NOP without IOSQE_FIXED_FILE",
        sqe_bytes(&nop),
        &[libc::EACCES],
    )
}

fn unsafe_push_refused(r: &mut PvRing, sqe: &squeue::Entry) -> Option<pv_uring::Error> {
    // SAFETY: the SQE is refused before anything is queued (checked by the
    // caller); if it were queued it targets pool A, which outlives the ring.
    unsafe { r.push(sqe) }.err()
}

pub fn forbidden_sqe_flags(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    let rf = || ctx.read_fixed(0, sa[0].host_addr, BLOCK as u32, 0);
    // Allowed: IO_DRAIN completes normally. (Checked first: after a refused
    // CQE_SKIP_SUCCESS SQE the host kernel refuses DRAIN on that ring with
    // -EOPNOTSUPP, as the hostsim test of pv-uring shows.)
    let res = ctx.run1(&mut a, rf().flags(squeue::Flags::IO_DRAIN))?;
    ensure!(
        res == BLOCK as i32,
        "READ_FIXED with IO_DRAIN: res {}",
        Errno::res(res)
    );
    let cases: [(&str, squeue::Flags, &[i32]); 3] = [
        ("IOSQE_ASYNC", squeue::Flags::ASYNC, &[libc::EACCES]),
        // Checked by the kernel before the restrictions: an opcode without
        // buffer selection gives -EOPNOTSUPP.
        (
            "IOSQE_BUFFER_SELECT",
            squeue::Flags::BUFFER_SELECT,
            &[libc::EACCES, libc::EOPNOTSUPP],
        ),
        (
            "IOSQE_CQE_SKIP_SUCCESS",
            squeue::Flags::SKIP_SUCCESS,
            &[libc::EACCES],
        ),
    ];
    for (what, f, want) in cases {
        hostile(
            ctx,
            &mut a,
            &mut b,
            &format!("READ_FIXED with {what}"),
            with_flags(rf(), f),
            want,
        )?;
    }
    Ok(())
}

pub fn backend_out_of_range(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    let n = ctx.dev.info().nr_backends;
    for idx in [n, n + 1, 1 << 20, i32::MAX as u32] {
        let sqe = opcode::ReadFixed::new(
            types::Fixed(idx),
            sa[0].host_addr as *mut u8,
            BLOCK as u32,
            0,
        )
        .build();
        hostile(
            ctx,
            &mut a,
            &mut b,
            &format!("backend index {idx} of {n}"),
            sqe_bytes(&sqe),
            &[libc::EBADF],
        )?;
    }
    let sqe = opcode::Fsync::new(types::Fixed(n)).build();
    hostile(
        ctx,
        &mut a,
        &mut b,
        "FSYNC of backend index nr_backends",
        sqe_bytes(&sqe),
        &[libc::EBADF],
    )
}

pub fn fixed_addr_outside_buffer(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    let e = sa[0];
    let len = BLOCK as u32;
    let cases = [
        ("address = buffer end", e.host_addr + e.len),
        (
            "last block straddling the end",
            e.host_addr + e.len - len as u64 / 2,
        ),
        (
            "address below the buffer",
            e.host_addr.wrapping_sub(len as u64),
        ),
        ("address 0", 0),
        ("address of another buffer", sa[sa.len() - 1].host_addr),
        ("non-canonical address", 0x8000_0000_0000_0000),
        ("address near u64::MAX", u64::MAX - 8),
    ];
    for (what, host) in cases {
        if host == sa[0].host_addr {
            continue;
        }
        let sqe = ctx.read_fixed(0, host, len, 0);
        hostile(
            ctx,
            &mut a,
            &mut b,
            &format!("READ_FIXED {what} ({host:#x})"),
            sqe_bytes(&sqe),
            &[libc::EFAULT],
        )?;
        let sqe = ctx.write_fixed(0, host, len, 0);
        hostile(
            ctx,
            &mut a,
            &mut b,
            &format!("WRITE_FIXED {what} ({host:#x})"),
            sqe_bytes(&sqe),
            &[libc::EFAULT],
        )?;
    }
    // A length larger than the whole buffer, from its start.
    let sqe = ctx.read_fixed(
        0,
        e.host_addr,
        (e.len as u32).saturating_add(BLOCK as u32),
        0,
    );
    hostile(
        ctx,
        &mut a,
        &mut b,
        "READ_FIXED longer than the buffer",
        sqe_bytes(&sqe),
        &[libc::EFAULT],
    )
}

pub fn buf_index_out_of_range(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    let n = sa.len();
    for idx in [n, n + 1, ctx.dev.info().max_buffers as usize, 0xffff] {
        let sqe = ctx.read_fixed(idx as u16, sa[0].host_addr, BLOCK as u32, 0);
        hostile(
            ctx,
            &mut a,
            &mut b,
            &format!("buf_index {idx} of {n}"),
            sqe_bytes(&sqe),
            &[libc::EFAULT, libc::EINVAL],
        )?;
    }
    // A ring with no buffers at all.
    let mut e = ctx.ring()?;
    let sqe = ctx.read_fixed(0, sa[0].host_addr, BLOCK as u32, 0);
    let res = ctx.run1_raw(&mut e, sqe_bytes(&sqe))?;
    expect_res(
        "READ_FIXED on a ring without buffers",
        res,
        &[libc::EFAULT, libc::EINVAL],
    )?;
    // Another ring's host address through this ring's index 0: refused
    // (each ring's buffers are its own).
    let mut c = ctx.ring()?;
    let sc = ctx.reg_b(&mut c)?;
    let sqe = ctx.read_fixed(0, sc[0].host_addr, BLOCK as u32, 0);
    hostile(
        ctx,
        &mut a,
        &mut b,
        "another ring's host address",
        sqe_bytes(&sqe),
        &[libc::EFAULT],
    )
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

pub fn bad_sq_array_index(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    let before = a.sq_dropped();
    let sqe = sqe_bytes(
        &ctx.read_fixed(0, sa[0].host_addr, BLOCK as u32, 0)
            .user_data(0xdead),
    );
    // SAFETY: targets pool A, which outlives the ring; the host drops it.
    step("push", unsafe { a.push_raw(&sqe, Some(0xffff)) })?;
    a.submit();
    if let Some(c) = ctx.no_cqe(&mut a, 200) {
        fail!("SQE with SQ array index 0xffff completed: {c:?}");
    }
    let after = a.sq_dropped();
    ensure!(after != before, "sq dropped counter unchanged ({before})");
    step("good I/O on another ring", ctx.good_io(&mut b, 5))?;
    step("good I/O on the ring", ctx.good_io(&mut a, 6))
}

pub fn link_after_refused(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b) = rings(ctx)?;
    // READ (forbidden) linked to a good READ_FIXED: the head fails with
    // -EACCES; the linked request does not run (-ECANCELED) or fails too.
    let head = opcode::Read::new(
        types::Fixed(ctx.p.backend),
        sa[0].host_addr as *mut u8,
        BLOCK as u32,
    )
    .build()
    .flags(squeue::Flags::IO_LINK)
    .user_data(1_000_001);
    let next = ctx
        .read_fixed(0, sa[0].host_addr, BLOCK as u32, 0)
        .user_data(1_000_002);
    // SAFETY: both target pool A, which outlives the ring.
    unsafe {
        step("push", a.push_raw(&sqe_bytes(&head), None))?;
        step("push", a.push(&next))?;
    }
    a.submit();
    let mut got = Vec::new();
    while got.len() < 2 {
        match a.wait_with(
            1,
            &pv_uring::WaitOpts {
                timeout: Some(std::time::Duration::from_secs(5)),
                ..Default::default()
            },
        ) {
            Ok(_) => got.extend(a.completion()),
            Err(_) => break,
        }
    }
    let res = |ud| got.iter().find(|c| c.user_data == ud).map(|c| c.res);
    match res(1_000_001) {
        Some(r) => expect_res("link head READ", r, &[libc::EACCES])?,
        None => fail!("no CQE for the refused link head"),
    }
    if let Some(r) = res(1_000_002) {
        ensure!(r < 0, "request linked to a refused one ran: res {r}");
    }
    step("good I/O on another ring", ctx.good_io(&mut b, 7))?;
    step("good I/O on the ring", ctx.good_io(&mut a, 8))
}
