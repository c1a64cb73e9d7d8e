// SPDX-License-Identifier: Apache-2.0
/*
 * Host test of the C API without a device (tests/c_api.rs builds and runs
 * it): every function refuses NULL handles and pointers with -EINVAL (or
 * NULL / 0 / nothing, as documented), opening a missing or wrong node gives
 * its errno, and the inline SQE helpers' bytes are printed ("sqe NAME
 * HEX...") for the Rust side to compare with pv-uring's own SQE builders.
 * Exits 0 when every check passed; prints "FAIL ..." lines otherwise.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pv_uring.h"

static int failed;

#define CHECK(cond)							\
	do {								\
		if (!(cond)) {						\
			printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			failed = 1;					\
		}							\
	} while (0)

static void dump(const char *name, const struct pvu_sqe *sqe)
{
	const unsigned char *b = (const unsigned char *)sqe;
	unsigned i;

	printf("sqe %s ", name);
	for (i = 0; i < sizeof(*sqe); i++)
		printf("%02x", b[i]);
	printf("\n");
}

int main(void)
{
	struct pvu_device *dev = NULL;
	struct pvu_ring *ring = NULL;
	struct pvu_info info;
	struct pvu_ring_params rp;
	struct pvu_cqe *cqe = NULL;
	struct pvu_buf buf;
	struct pvu_sqe sqe;
	struct iovec iov = { 0 };
	uint64_t token = 0, off = 0;
	unsigned idx = 0;
	char data[8];

	CHECK(pvu_open("/nonexistent/vuring", &dev) == -ENOENT);
	CHECK(dev == NULL);
	CHECK(pvu_open("/dev/null", &dev) == -ENOTTY);
	CHECK(dev == NULL);
	CHECK(pvu_open(NULL, NULL) == -EINVAL);
	CHECK(pvu_device_info(NULL, &info) == -EINVAL);
	CHECK(pvu_queue_init(NULL, 8, &ring, 0) == -EINVAL);
	CHECK(ring == NULL);
	CHECK(pvu_ring_params(NULL, &rp) == -EINVAL);
	CHECK(pvu_ring_set_cq_interrupt(NULL, 0) == -EINVAL);
	CHECK(pvu_register_buffers(NULL, &iov, 1) == -EINVAL);
	CHECK(pvu_unregister_buffers(NULL) == -EINVAL);
	CHECK(pvu_clone_buffers(NULL, NULL) == -EINVAL);
	CHECK(pvu_clone_buffers_offset(NULL, NULL, 0, 0, 0, 0) == -EINVAL);
	CHECK(pvu_clone_buffers_from_table(NULL, 1, 0, 0, 0, 0) == -EINVAL);
	CHECK(pvu_publish_buffers(NULL, &token) == -EINVAL);
	CHECK(pvu_unpublish_buffers(NULL, 1) == -EINVAL);
	CHECK(pvu_buffer_table(NULL, &buf, 1) == -EINVAL);
	CHECK(pvu_translate(NULL, data, sizeof(data), &idx, &off) == -EINVAL);
	CHECK(pvu_get_sqe(NULL) == NULL);
	CHECK(pvu_sq_space_left(NULL) == 0);
	CHECK(pvu_submit(NULL) == -EINVAL);
	CHECK(pvu_submit_and_wait(NULL, 1) == -EINVAL);
	CHECK(pvu_cq_ready(NULL) == 0);
	CHECK(pvu_peek_cqe(NULL, &cqe) == -EINVAL);
	CHECK(pvu_wait_cqe(NULL, &cqe) == -EINVAL);
	CHECK(pvu_wait_cqe_timeout(NULL, &cqe, 1000) == -EINVAL);
	CHECK(cqe == NULL);
	pvu_cqe_seen(NULL, NULL);
	pvu_cq_advance(NULL, 1);
	pvu_queue_exit(NULL);
	pvu_close(NULL);

	memset(&sqe, 0xff, sizeof(sqe));
	pvu_prep_nop(&sqe);
	pvu_sqe_set_data64(&sqe, 9);
	dump("nop", &sqe);
	pvu_prep_read_fixed(&sqe, 3, 7, 0x1000, 4096, 0x2000);
	pvu_sqe_set_data64(&sqe, 0xabcd);
	dump("read_fixed", &sqe);
	pvu_prep_write_fixed(&sqe, 1, 2, 0x200, 512, 0x4000);
	pvu_sqe_set_data64(&sqe, 5);
	pvu_sqe_set_flags(&sqe, PVU_SQE_IO_LINK);
	dump("write_fixed_link", &sqe);
	pvu_prep_fsync(&sqe, 2, PVU_FSYNC_DATASYNC);
	dump("fsync_datasync", &sqe);
	CHECK(pvu_cqe_get_data64(&(struct pvu_cqe){ .user_data = 42 }) == 42);

	printf("%s\n", failed ? "FAILED" : "OK");
	return failed;
}
