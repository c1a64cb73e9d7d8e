// SPDX-License-Identifier: Apache-2.0
/*
 * Prints every constant, size and offset of include/pv_uring.h as
 * "NAME VALUE" lines (decimal). guest-kernel-patches/check.sh and the
 * crate's tests compare the output with
 * `cargo run -q -p pv-uring-c --example abi-dump` (pv_uring_c::abi::dump,
 * from uring-abi): same names, same order.
 */
#include <stddef.h>
#include <stdio.h>
#include "pv_uring.h"

#define LINE(name, value) \
	printf("%s %llu\n", name, (unsigned long long)(value))
#define CONST(c)		LINE(#c, c)
#define SIZE(s)			LINE("sizeof(struct " #s ")", sizeof(struct s))
#define OFFSET(s, f)		LINE("offsetof(" #s ", " #f ")", \
				     offsetof(struct s, f))

int main(void)
{
	CONST(PVU_RING_POLLED);
	CONST(PVU_CLONE_DST_REPLACE);
	CONST(PVU_FEAT_POLLED);
	CONST(PVU_FEAT_TABLE);
	CONST(PVU_FEAT_ARENA);
	CONST(PVU_OP_NOP);
	CONST(PVU_OP_FSYNC);
	CONST(PVU_OP_READ_FIXED);
	CONST(PVU_OP_WRITE_FIXED);
	CONST(PVU_SQE_FIXED_FILE);
	CONST(PVU_SQE_IO_DRAIN);
	CONST(PVU_SQE_IO_LINK);
	CONST(PVU_SQE_IO_HARDLINK);
	CONST(PVU_FSYNC_DATASYNC);

	SIZE(pvu_info);
	OFFSET(pvu_info, max_rings);
	OFFSET(pvu_info, max_entries);
	OFFSET(pvu_info, max_buffers);
	OFFSET(pvu_info, nr_backends);
	OFFSET(pvu_info, sq_slot_size);
	OFFSET(pvu_info, max_table);
	OFFSET(pvu_info, features);
	OFFSET(pvu_info, abi_version);
	OFFSET(pvu_info, cq_slot_size);
	OFFSET(pvu_info, max_polled);
	OFFSET(pvu_info, resv);
	OFFSET(pvu_info, max_registered);

	SIZE(pvu_ring_params);
	OFFSET(pvu_ring_params, id);
	OFFSET(pvu_ring_params, sq_entries);
	OFFSET(pvu_ring_params, cq_entries);
	OFFSET(pvu_ring_params, flags);
	OFFSET(pvu_ring_params, fd);
	OFFSET(pvu_ring_params, resv);

	SIZE(pvu_buf);
	OFFSET(pvu_buf, addr);
	OFFSET(pvu_buf, len);

	SIZE(pvu_sqe);
	OFFSET(pvu_sqe, opcode);
	OFFSET(pvu_sqe, flags);
	OFFSET(pvu_sqe, ioprio);
	OFFSET(pvu_sqe, fd);
	OFFSET(pvu_sqe, off);
	OFFSET(pvu_sqe, addr);
	OFFSET(pvu_sqe, len);
	OFFSET(pvu_sqe, rw_flags);
	OFFSET(pvu_sqe, user_data);
	OFFSET(pvu_sqe, buf_index);
	OFFSET(pvu_sqe, personality);
	OFFSET(pvu_sqe, file_index);
	OFFSET(pvu_sqe, resv);

	SIZE(pvu_cqe);
	OFFSET(pvu_cqe, user_data);
	OFFSET(pvu_cqe, res);
	OFFSET(pvu_cqe, flags);

	SIZE(pvu_arena_info);
	OFFSET(pvu_arena_info, chunk_size);
	OFFSET(pvu_arena_info, len);
	OFFSET(pvu_arena_info, nr_chunks);
	OFFSET(pvu_arena_info, free_chunks);
	return 0;
}
