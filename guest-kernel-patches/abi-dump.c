// SPDX-License-Identifier: GPL-2.0
/*
 * Prints every size, offset and constant of the /dev/vuring uAPI as
 * "NAME VALUE" lines (decimal), from the patched tree's
 * include/uapi/linux/vuring.h. check.sh compares the output with
 * `cargo run -q -p uring-abi --example abi-dump` (uring_abi::vuring::dump):
 * same names, same order. Built by check.sh against the headers that
 * `make headers_install` exports.
 */
#include <stddef.h>
#include <stdio.h>
#include <linux/vuring.h>

#define LINE(name, value) \
	printf("%s %llu\n", name, (unsigned long long)(value))
#define CONST(c)		LINE(#c, c)
#define SIZE(s)			LINE("sizeof(struct " #s ")", sizeof(struct s))
#define OFFSET(s, f)		LINE("offsetof(" #s ", " #f ")", \
				     offsetof(struct s, f))

int main(void)
{
	CONST(VURING_IOC_MAGIC);
	SIZE(vuring_info);
	OFFSET(vuring_info, features);
	OFFSET(vuring_info, abi_version);
	OFFSET(vuring_info, max_polled);
	OFFSET(vuring_info, max_registered);
	SIZE(vuring_create);
	OFFSET(vuring_create, ring_id);
	OFFSET(vuring_create, cq_tail);
	OFFSET(vuring_create, ring_flags);
	SIZE(vuring_extent);
	SIZE(vuring_register);
	OFFSET(vuring_register, extents);
	OFFSET(vuring_register, nr_extents);
	SIZE(vuring_clone);
	OFFSET(vuring_clone, extents);
	OFFSET(vuring_clone, nr_extents);
	OFFSET(vuring_clone, token);
	SIZE(vuring_publish);
	CONST(VURING_RING_POLLED);
	CONST(VURING_CLONE_SRC_TABLE);
	CONST(VURING_CLONE_DST_REPLACE);
	CONST(VURING_IOC_INFO);
	CONST(VURING_IOC_CREATE);
	CONST(VURING_IOC_REGISTER);
	CONST(VURING_IOC_UNREGISTER);
	CONST(VURING_IOC_CLONE);
	CONST(VURING_IOC_PUBLISH);
	CONST(VURING_IOC_UNPUBLISH);
	CONST(VURING_MMAP_SQ);
	CONST(VURING_MMAP_DOORBELL);
	CONST(VURING_MMAP_CQ);
	CONST(PVU_ABI_VERSION);
	CONST(PVU_SLOT_SQ_TAIL);
	CONST(PVU_SLOT_CQ_HEAD);
	CONST(PVU_SLOT_CQ_FLAGS);
	CONST(PVU_SLOT_SQ_HEAD);
	CONST(PVU_SLOT_SQ_FLAGS);
	CONST(PVU_SLOT_SQES);
	CONST(PVU_SQ_NEED_WAKEUP);
	CONST(PVU_CQ_EVENTFD_DISABLED);
	/* the arena */
	SIZE(vuring_arena_info);
	OFFSET(vuring_arena_info, nr_chunks);
	SIZE(vuring_arena_alloc);
	OFFSET(vuring_arena_alloc, offset);
	SIZE(vuring_arena_free);
	SIZE(vuring_arena_run);
	SIZE(vuring_arena_register);
	OFFSET(vuring_arena_register, nr_buffers);
	OFFSET(vuring_arena_register, owner_fd);
	CONST(VURING_IOC_ARENA_INFO);
	CONST(VURING_IOC_ARENA_ALLOC);
	CONST(VURING_IOC_ARENA_FREE);
	CONST(VURING_IOC_ARENA_REGISTER);
	CONST(VURING_MMAP_ARENA);
	CONST(VURING_MAX_ARENA_RUNS);
	SIZE(vuring_arena_register_rings);
	OFFSET(vuring_arena_register_rings, ring_fds);
	OFFSET(vuring_arena_register_rings, nr_rings);
	OFFSET(vuring_arena_register_rings, owner_fd);
	CONST(VURING_IOC_ARENA_REGISTER_RINGS);
	CONST(VURING_MAX_ARENA_RINGS);
	return 0;
}
