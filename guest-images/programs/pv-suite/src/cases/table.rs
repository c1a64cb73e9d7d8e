//! The host buffer table: PUBLISH (an unguessable token), clone from a
//! token, UNPUBLISH while clones live, the publisher's close.

use crate::ctx::Ctx;
use crate::harness::{expect_errno, step, CaseResult};
use crate::{ensure, fail, skip};
use pv_uring::{CloneSrc, InfoExt};

fn need_table(ctx: &Ctx) -> CaseResult {
    if !ctx.dev.info().has_table() {
        skip!("device without PVU_F_TABLE");
    }
    Ok(())
}

pub fn table_publish_clone(ctx: &Ctx) -> CaseResult {
    need_table(ctx)?;
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let token = step("publish", a.publish())?;
    let mut rings = Vec::new();
    for k in 0..4 {
        let mut r = ctx.ring()?;
        let t = step(
            &format!("clone the table into ring {k}"),
            r.clone_buffers_from(CloneSrc::Table(token), 0, 0, 0, 0),
        )?;
        ensure!(
            t.len() == sa.len(),
            "ring {k}: {} buffers, want {}",
            t.len(),
            sa.len()
        );
        // The driver may not know the user addresses of a table entry.
        r.adopt_user_addrs(&sa, 0, 0, 0);
        let t = r.extents().to_vec();
        rings.push((r, t));
    }
    for (k, (r, t)) in rings.iter_mut().enumerate() {
        let i = k % sa.len();
        ctx.check_clone(r, t, i, &sa[i], k as u64)?;
        // translate() works on the clone (user addresses known or adopted).
        let fb = step("translate", r.translate(sa[i].user_addr as *const u8, 8))?;
        ensure!(
            fb.buf_index as usize == i && fb.offset == 0,
            "translate: {fb:x?}, want buffer {i} offset 0"
        );
    }
    // Partial clone from the table.
    let mut p = ctx.ring()?;
    let t = step(
        "clone table 1..3 -> 0..2",
        p.clone_buffers_from(CloneSrc::Table(token), 0, 1, 0, 2),
    )?;
    ensure!(t.len() == 2, "partial: {} buffers, want 2", t.len());
    ctx.check_clone(&mut p, &t, 0, &sa[1], 11)?;
    // A second publish is another table with another token.
    let token2 = step("publish again", a.publish())?;
    ensure!(token2 != token, "two tables got the same token {token:#x}");
    step("unpublish the second", a.unpublish(token2))?;
    step("unpublish", a.unpublish(token))
}

pub fn table_unpublish_while_clones_live(ctx: &Ctx) -> CaseResult {
    need_table(ctx)?;
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let token = step("publish", a.publish())?;
    let mut b = ctx.ring()?;
    let tb = step(
        "clone B",
        b.clone_buffers_from(CloneSrc::Table(token), 0, 0, 0, 0),
    )?;
    let mut c = ctx.ring()?;
    let tc = step(
        "clone C",
        c.clone_buffers_from(CloneSrc::Table(token), 0, 0, 0, 0),
    )?;
    step("unpublish", a.unpublish(token))?;
    ctx.check_clone(&mut b, &tb, 0, &sa[0], 1)?;
    ctx.check_clone(&mut c, &tc, 1, &sa[1], 2)?;
    let mut d = ctx.ring()?;
    expect_errno(
        "clone from the unpublished token",
        d.clone_buffers_from(CloneSrc::Table(token), 0, 0, 0, 0),
        &[libc::ENOENT],
    )?;
    expect_errno("unpublish again", a.unpublish(token), &[libc::ENOENT])?;
    // Publisher gone too: the clones still work.
    drop(a);
    ctx.check_clone(&mut b, &tb, sa.len() - 1, &sa[sa.len() - 1], 3)
}

/// Closing the publishing file unpublishes its tables; rings that cloned
/// from them keep their buffers.
pub fn table_unpublished_with_publisher(ctx: &Ctx) -> CaseResult {
    need_table(ctx)?;
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let token = step("publish", a.publish())?;
    let mut d = ctx.ring()?;
    let t = step(
        "clone from the table",
        d.clone_buffers_from(CloneSrc::Table(token), 0, 0, 0, 0),
    )?;
    drop(a);
    ctx.check_clone(&mut d, &t, 0, &sa[0], 4)?;
    let mut e = ctx.ring()?;
    expect_errno(
        "clone from the table after the publisher closed",
        e.clone_buffers_from(CloneSrc::Table(token), 0, 0, 0, 0),
        &[libc::ENOENT],
    )?;
    ctx.check_clone(&mut d, &t, 1, &sa[1], 5)
}

pub fn table_publish_errors(ctx: &Ctx) -> CaseResult {
    if !ctx.dev.info().has_table() {
        // Without PVU_F_TABLE the commands are refused.
        let mut a = ctx.ring()?;
        ctx.reg_a(&mut a)?;
        expect_errno(
            "publish without PVU_F_TABLE",
            a.publish(),
            &[libc::EOPNOTSUPP],
        )?;
        let mut b = ctx.ring()?;
        return expect_errno(
            "clone from a table without PVU_F_TABLE",
            b.clone_buffers_from(CloneSrc::Table(0), 0, 0, 0, 0),
            &[libc::EOPNOTSUPP],
        );
    }
    let e = ctx.ring()?;
    expect_errno("publish without buffers", e.publish(), &[libc::ENXIO])?;
    expect_errno(
        "unpublish an unknown token",
        e.unpublish(u64::MAX),
        &[libc::ENOENT],
    )?;
    // Fill the table: -ENOSPC one past max_table (entries published by
    // other cases were all unpublished).
    let mut a = ctx.ring()?;
    ctx.reg_a(&mut a)?;
    let max = ctx.dev.info().max_table;
    let mut tokens = Vec::new();
    let r = (|| {
        for k in 0..max {
            match a.publish() {
                Ok(t) => tokens.push(t),
                Err(e) => fail!("publish {k} of {max}: {e}"),
            }
        }
        expect_errno("publish into a full table", a.publish(), &[libc::ENOSPC])
    })();
    for t in &tokens {
        if let Err(e) = a.unpublish(*t) {
            fail!("unpublish {t:#x}: {e}");
        }
    }
    r?;
    let mut uniq = tokens.clone();
    uniq.sort_unstable();
    uniq.dedup();
    ensure!(uniq.len() == tokens.len(), "tokens repeat: {tokens:x?}");
    // Room again.
    let t = step("publish after emptying", a.publish())?;
    step("unpublish", a.unpublish(t))
}
