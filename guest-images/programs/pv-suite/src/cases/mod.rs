//! The case table.

mod arena;
mod clone;
pub mod control;
mod data;
mod hostile;
mod table;

use crate::ctx::Case;

macro_rules! case {
    ($name:literal, $f:path) => {
        Case {
            name: $name,
            run: $f,
        }
    };
}

/// Every case, in run order (the ENOSPC case last: it fills the device;
/// the write case first after the basics so the host finds its data even
/// if later cases crash the guest). The `hostile-` cases are contiguous:
/// with `--pause` the suite stops before and after them for the host to
/// measure its memory (tests/pv.rs).
pub static CASES: &[Case] = &[
    case!("create-layout", control::create_layout),
    case!("nop", data::nop),
    case!("read-host-pattern", data::read_host_pattern),
    case!("write-guest-pattern", data::write_guest_pattern),
    case!("fsync", data::fsync),
    case!("concurrent-rings", data::concurrent_rings),
    case!(
        "destroy-with-reads-in-flight",
        data::destroy_with_reads_in_flight
    ),
    case!("commands-beside-destroy", data::commands_beside_destroy),
    case!("create-errors", control::create_errors),
    case!("slot-reuse-fresh-state", control::slot_reuse_fresh_state),
    case!("register-errors", control::register_errors),
    case!("clone-all-to-empty", clone::clone_all_to_empty),
    case!("ebusy-dst-has-buffers", clone::ebusy_dst_has_buffers),
    case!("enxio-src-empty", clone::enxio_src_empty),
    case!("einval-unknown-flags", clone::einval_unknown_flags),
    case!("einval-nonzero-resv", clone::einval_nonzero_resv),
    case!(
        "einval-offsets-without-nr",
        clone::einval_offsets_without_nr
    ),
    case!("einval-nr-exceeds-src", clone::einval_nr_exceeds_src),
    case!("einval-dst-beyond-max", clone::einval_dst_beyond_max),
    case!("eoverflow-src-wrap", clone::eoverflow_src_wrap),
    case!("eoverflow-dst-wrap", clone::eoverflow_dst_wrap),
    case!("eoverflow-src-range", clone::eoverflow_src_range),
    case!("ebadf-src-not-a-ring", clone::ebadf_src_not_a_ring),
    case!(
        "enoent-unknown-table-token",
        clone::enoent_unknown_table_token
    ),
    case!("clone-into-self", clone::clone_into_self),
    case!(
        "replace-keeps-outside-range",
        clone::replace_keeps_outside_range
    ),
    case!(
        "einval-replace-short-of-end",
        clone::einval_replace_short_of_end
    ),
    case!("partial-range-maps", clone::partial_range_maps),
    case!("after-src-unregister", clone::after_src_unregister),
    case!("after-src-close", clone::after_src_close),
    case!("polled-dst", clone::polled_dst),
    case!("pool-of-64-rings", clone::pool_of_rings),
    case!("table-publish-clone", table::table_publish_clone),
    case!(
        "table-unpublish-while-clones-live",
        table::table_unpublish_while_clones_live
    ),
    case!(
        "table-unpublished-with-publisher",
        table::table_unpublished_with_publisher
    ),
    case!("table-publish-errors", table::table_publish_errors),
    case!("hostile-forbidden-opcodes", hostile::forbidden_opcodes),
    case!("hostile-missing-fixed-file", hostile::missing_fixed_file),
    case!("hostile-forbidden-sqe-flags", hostile::forbidden_sqe_flags),
    case!(
        "hostile-backend-out-of-range",
        hostile::backend_out_of_range
    ),
    case!(
        "hostile-range-outside-buffer",
        hostile::range_outside_buffer
    ),
    case!(
        "hostile-buf-index-out-of-range",
        hostile::buf_index_out_of_range
    ),
    case!("hostile-pi-attr", hostile::pi_attr),
    case!("hostile-reserved-bytes", hostile::reserved_bytes),
    case!("hostile-rt-ioprio", hostile::rt_ioprio),
    case!(
        "hostile-doorbell-unknown-ring",
        hostile::doorbell_unknown_ring
    ),
    case!("hostile-bogus-ring-indices", hostile::bogus_ring_indices),
    case!("hostile-link-after-refused", hostile::link_after_refused),
    case!("hostile-cq-never-reaped", hostile::cq_never_reaped),
    case!("hostile-overlapping-extents", hostile::overlapping_extents),
    case!(
        "hostile-registered-beyond-max",
        hostile::registered_beyond_max
    ),
    case!("hostile-too-many-polled", hostile::too_many_polled),
    case!("hostile-clone-guessed-token", hostile::clone_guessed_token),
    case!(
        "hostile-unpublish-by-another",
        hostile::unpublish_by_another
    ),
    case!("hostile-cq-slot-read-only", hostile::cq_slot_read_only),
    case!("create-until-enospc", control::create_until_enospc),
];

/// The buffer arena's cases (`pv-suite --arena`, a VM with `--uring
/// arena=`), in run order; the lifecycle cycles last.
pub static ARENA_CASES: &[Case] = &[
    case!("arena-info", arena::info),
    case!("arena-write-guest-pattern", arena::write_guest_pattern),
    case!("arena-read-host-pattern", arena::read_host_pattern),
    case!("arena-runs-and-clone", arena::runs_and_clone),
    case!("arena-errors", arena::errors),
    case!("arena-chunk-of-another-file", arena::chunk_of_another_file),
    case!(
        "arena-chunk-beyond-the-arena",
        arena::chunk_beyond_the_arena
    ),
    case!("arena-double-free", arena::double_free),
    case!("arena-register-rings", arena::register_rings),
    case!("arena-register-rings-errors", arena::register_rings_errors),
    case!(
        "arena-unmap-and-free-while-held",
        arena::unmap_and_free_while_held
    ),
    case!(
        "arena-close-with-io-in-flight",
        arena::close_with_io_in_flight
    ),
    case!("arena-lifecycle", arena::lifecycle),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unique() {
        let mut n: Vec<_> = CASES.iter().map(|c| c.name).collect();
        n.sort_unstable();
        let len = n.len();
        n.dedup();
        assert_eq!(n.len(), len);
    }

    #[test]
    fn hostile_cases_are_contiguous() {
        let first = CASES.iter().position(|c| c.name.starts_with("hostile-"));
        let last = CASES.iter().rposition(|c| c.name.starts_with("hostile-"));
        let (Some(a), Some(b)) = (first, last) else {
            panic!("no hostile cases")
        };
        assert!(CASES[a..=b].iter().all(|c| c.name.starts_with("hostile-")));
    }
}
