//! The host buffer table: PUBLISH, clone from a table id, UNPUBLISH while
//! clones live.

use crate::ctx::Ctx;
use crate::harness::{expect_errno, step, CaseResult};
use crate::{ensure, fail, skip};
use pv_uring::CloneSrc;

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
    let id = step("publish", a.publish())?;
    ensure!(
        id < ctx.dev.info().max_table,
        "table id {id} >= max_table {}",
        ctx.dev.info().max_table
    );
    let mut rings = Vec::new();
    for k in 0..4 {
        let mut r = ctx.ring()?;
        let mut t = step(
            &format!("clone table {id} into ring {k}"),
            r.clone_buffers_from(CloneSrc::Table(id), 0, 0, 0, 0),
        )?;
        ensure!(
            t.len() == sa.len(),
            "ring {k}: {} buffers, want {}",
            t.len(),
            sa.len()
        );
        // The driver may not know user addresses of a table entry.
        pv_uring::extent::adopt_user_addrs(&mut t, &sa);
        r.adopt_user_addrs(&sa);
        rings.push((r, t));
    }
    for (k, (r, t)) in rings.iter_mut().enumerate() {
        let i = k % sa.len();
        ctx.check_clone(r, t, i, &sa[i], k as u64)?;
        // translate() works on the clone (user addresses known or adopted).
        let fb = step("translate", r.translate(sa[i].user_addr as *const u8, 8))?;
        ensure!(
            fb.host_addr == sa[i].host_addr,
            "translate: {fb:x?}, want host {:#x}",
            sa[i].host_addr
        );
    }
    // Partial clone from the table.
    let mut p = ctx.ring()?;
    let t = step(
        "clone table 1..3 -> 0..2",
        p.clone_buffers_from(CloneSrc::Table(id), 0, 1, 0, 2),
    )?;
    ensure!(t.len() == 2, "partial: {} buffers, want 2", t.len());
    ctx.check_clone(&mut p, &t, 0, &sa[1], 11)?;
    step("unpublish", a.unpublish(id))
}

pub fn table_unpublish_while_clones_live(ctx: &Ctx) -> CaseResult {
    need_table(ctx)?;
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let id = step("publish", a.publish())?;
    let mut b = ctx.ring()?;
    let tb = step(
        "clone B",
        b.clone_buffers_from(CloneSrc::Table(id), 0, 0, 0, 0),
    )?;
    let mut c = ctx.ring()?;
    let tc = step(
        "clone C",
        c.clone_buffers_from(CloneSrc::Table(id), 0, 0, 0, 0),
    )?;
    step("unpublish", a.unpublish(id))?;
    ctx.check_clone(&mut b, &tb, 0, &sa[0], 1)?;
    ctx.check_clone(&mut c, &tc, 1, &sa[1], 2)?;
    let mut d = ctx.ring()?;
    expect_errno(
        "clone from the unpublished id",
        d.clone_buffers_from(CloneSrc::Table(id), 0, 0, 0, 0),
        &[libc::ENOENT],
    )?;
    expect_errno("unpublish again", a.unpublish(id), &[libc::ENOENT])?;
    // Publisher gone too: the clones still work.
    drop(a);
    ctx.check_clone(&mut b, &tb, sa.len() - 1, &sa[sa.len() - 1], 3)
}

pub fn table_outlives_publisher(ctx: &Ctx) -> CaseResult {
    need_table(ctx)?;
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let id = step("publish", a.publish())?;
    drop(a);
    let mut d = ctx.ring()?;
    let t = step(
        "clone from the table after the publisher closed",
        d.clone_buffers_from(CloneSrc::Table(id), 0, 0, 0, 0),
    )?;
    ctx.check_clone(&mut d, &t, 0, &sa[0], 4)?;
    // Unpublish through the device fd (no ring on it).
    step("unpublish via the device fd", ctx.dev.unpublish(id))?;
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
        "unpublish an unknown id",
        e.unpublish(u32::MAX),
        &[libc::ENOENT],
    )?;
    // Fill the table: -ENOSPC one past max_table (entries published by
    // other cases were all unpublished).
    let mut a = ctx.ring()?;
    ctx.reg_a(&mut a)?;
    let max = ctx.dev.info().max_table;
    let mut ids = Vec::new();
    let r = (|| {
        for k in 0..max {
            match a.publish() {
                Ok(id) => ids.push(id),
                Err(e) => fail!("publish {k} of {max}: {e}"),
            }
        }
        expect_errno("publish into a full table", a.publish(), &[libc::ENOSPC])
    })();
    for id in &ids {
        if let Err(e) = a.unpublish(*id) {
            fail!("unpublish {id}: {e}");
        }
    }
    r?;
    let mut uniq = ids.clone();
    uniq.sort_unstable();
    uniq.dedup();
    ensure!(uniq.len() == ids.len(), "table ids repeat: {ids:?}");
    // Room again.
    let id = step("publish after emptying", a.publish())?;
    step("unpublish", a.unpublish(id))
}
