// SPDX-License-Identifier: Apache-2.0
/*
 * capi-suite: the C API of pv rings against the real device, in a guest
 * (tests/capi.rs runs it after ring-pool-c in the same boot). Each case
 * prints "PASS <name>" or "FAIL <name>: <what>", then "N passed, M failed";
 * the exit status is 1 if any case failed.
 *
 * usage: capi-suite --scratch BACKEND   (a backend it may write at 4 MiB+)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "pv_uring.h"

#define BLOCK 4096u
/* Where the suite writes in the scratch backend: past ring-pool-c's MiB
 * and the file the boot test checks. */
#define FILE_OFF (4ull << 20)

static struct pvu_device *dev;
static struct pvu_info info;
static unsigned scratch;
static int passed, failed;
static const char *cur;
static int cur_failed;

static void fail(const char *fmt, ...)
{
	va_list ap;

	if (cur_failed)
		return;
	cur_failed = 1;
	printf("FAIL %s: ", cur);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* Expects `got` == `want` (a return value); names the call on failure. */
#define EXPECT(call, want)						\
	({								\
		long long _g = (long long)(call), _w = (long long)(want); \
		if (_g != _w)						\
			fail("%s: %lld, want %lld (line %d)", #call, _g, _w, \
			     __LINE__);					\
		_g == _w;						\
	})

#define CHECK(cond)							\
	({								\
		int _c = !!(cond);					\
		if (!_c)						\
			fail("%s (line %d)", #cond, __LINE__);		\
		_c;							\
	})

static struct pvu_ring *ring(unsigned entries, unsigned flags)
{
	struct pvu_ring *r = NULL;
	int ret = pvu_queue_init(dev, entries, &r, flags);

	if (ret) {
		fail("pvu_queue_init(%u, %#x): %d", entries, flags, ret);
		return NULL;
	}
	return r;
}

static void *pages(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (p == MAP_FAILED) {
		fail("mmap %zu: %s", len, strerror(errno));
		return NULL;
	}
	return p;
}

/* Submits what is queued and reaps one CQE; returns its res (or a
 * library error as -errno after a FAIL). */
static int32_t one(struct pvu_ring *r, uint64_t tag)
{
	struct pvu_cqe *cqe;
	int32_t res;
	int ret;

	ret = pvu_submit(r);
	if (ret < 0) {
		fail("pvu_submit: %d", ret);
		return ret;
	}
	ret = pvu_wait_cqe_timeout(r, &cqe, 10ull * 1000000000u);
	if (ret) {
		fail("pvu_wait_cqe_timeout: %d", ret);
		return ret;
	}
	if (cqe->user_data != tag)
		fail("user_data %" PRIu64 ", want %" PRIu64, cqe->user_data, tag);
	res = cqe->res;
	pvu_cqe_seen(r, cqe);
	return res;
}

static int32_t nop(struct pvu_ring *r, uint64_t tag)
{
	struct pvu_sqe *sqe = pvu_get_sqe(r);

	if (!sqe) {
		fail("pvu_get_sqe: NULL");
		return -EBUSY;
	}
	pvu_prep_nop(sqe);
	pvu_sqe_set_data64(sqe, tag);
	return one(r, tag);
}

static void case_ring_params(void)
{
	struct pvu_ring *r = NULL;
	struct pvu_ring_params p;

	CHECK(info.abi_version == 2 && info.max_rings > 0 &&
	      info.max_entries >= 8 && info.nr_backends > scratch);
	r = ring(5, 0);
	if (!r)
		return;
	if (EXPECT(pvu_ring_params(r, &p), 0)) {
		CHECK(p.sq_entries == 8);
		CHECK(p.cq_entries >= p.sq_entries);
		CHECK(p.flags == 0 && p.fd >= 0);
	}
	EXPECT(pvu_sq_space_left(r), 8);
	pvu_queue_exit(r);
	r = NULL;
	EXPECT(pvu_queue_init(dev, 8, &r, 1u << 7), -EINVAL);
	EXPECT(pvu_queue_init(dev, 0, &r, 0), -EINVAL);
	EXPECT(pvu_queue_init(dev, info.max_entries + 1, &r, 0), -EINVAL);
	CHECK(r == NULL);
}

/* A full SQ of NOPs at once; reaped with peek / cq_ready / cq_advance. */
static void case_nop_batch(void)
{
	struct pvu_ring *r = ring(8, 0);
	struct pvu_sqe *sqe;
	struct pvu_cqe *cqe;
	unsigned i, n = 0, seen = 0;

	if (!r)
		return;
	while ((sqe = pvu_get_sqe(r))) {
		pvu_prep_nop(sqe);
		pvu_sqe_set_data64(sqe, 100 + n++);
	}
	EXPECT(n, 8);
	EXPECT(pvu_sq_space_left(r), 0);
	EXPECT(pvu_submit_and_wait(r, n), (int)n);
	CHECK(pvu_cq_ready(r) == n);
	for (i = 0; i < n; i++) {
		if (!EXPECT(pvu_peek_cqe(r, &cqe), 0))
			break;
		if (cqe->res == 0 && cqe->user_data >= 100 && cqe->user_data < 100 + n)
			seen |= 1u << (cqe->user_data - 100);
		if (i % 2)
			pvu_cqe_seen(r, cqe);
		else
			pvu_cq_advance(r, 1);
	}
	EXPECT(seen, (1u << n) - 1);
	EXPECT(pvu_peek_cqe(r, &cqe), -EAGAIN);
	EXPECT(pvu_cq_ready(r), 0);
	EXPECT(pvu_sq_space_left(r), 8);
	pvu_queue_exit(r);
}

/* Many more NOPs than the CQ holds, reaped in batches: each CQE once. */
static void case_flow_control(void)
{
	struct pvu_ring *r = ring(8, 0);
	struct pvu_ring_params p;
	struct pvu_sqe *sqe;
	struct pvu_cqe *cqe;
	enum { TOTAL = 512 };
	static unsigned char got[TOTAL];
	unsigned sent = 0, reaped = 0, dup = 0, spins = 0;

	if (!r || pvu_ring_params(r, &p))
		return;
	memset(got, 0, sizeof(got));
	while (reaped < TOTAL && spins < 1000000) {
		while (sent < TOTAL && (sqe = pvu_get_sqe(r))) {
			pvu_prep_nop(sqe);
			pvu_sqe_set_data64(sqe, sent++);
		}
		if (pvu_submit(r) < 0) {
			fail("pvu_submit");
			break;
		}
		if (pvu_wait_cqe_timeout(r, &cqe, 10ull * 1000000000u)) {
			fail("no CQE after %u of %u", reaped, TOTAL);
			break;
		}
		/* Take every ready one. */
		while (!pvu_peek_cqe(r, &cqe)) {
			if (cqe->user_data >= TOTAL || cqe->res)
				fail("cqe %" PRIu64 " res %d", cqe->user_data, cqe->res);
			else if (got[cqe->user_data]++)
				dup++;
			pvu_cqe_seen(r, cqe);
			reaped++;
		}
		spins++;
	}
	EXPECT(reaped, TOTAL);
	EXPECT(dup, 0);
	pvu_queue_exit(r);
}

static void case_wait_timeout(void)
{
	struct pvu_ring *r = ring(8, 0);
	struct pvu_cqe *cqe = NULL;

	if (!r)
		return;
	EXPECT(pvu_wait_cqe_timeout(r, &cqe, 1000000), -ETIME);
	EXPECT(pvu_peek_cqe(r, &cqe), -EAGAIN);
	CHECK(cqe == NULL);
	EXPECT(nop(r, 7), 0);
	pvu_queue_exit(r);
}

/* What the device refuses comes back as a CQE; the ring goes on. */
static void case_refused_sqes(void)
{
	struct pvu_ring *r = ring(8, 0);
	uint8_t *buf = pages(BLOCK);
	struct iovec iov = { buf, BLOCK };
	struct pvu_sqe *sqe;

	if (!r || !buf)
		return;
	if (pvu_register_buffers(r, &iov, 1) != 1) {
		fail("register");
		return;
	}
	sqe = pvu_get_sqe(r);
	pvu_prep_nop(sqe);
	sqe->opcode = 22;	/* IORING_OP_READ: a raw address */
	sqe->addr = (uintptr_t)buf;
	sqe->len = BLOCK;
	sqe->user_data = 1;
	EXPECT(one(r, 1), -EACCES);
	sqe = pvu_get_sqe(r);
	pvu_prep_nop(sqe);
	sqe->flags = 0;		/* no FIXED_FILE */
	sqe->user_data = 2;
	EXPECT(one(r, 2), -EACCES);
	sqe = pvu_get_sqe(r);
	pvu_prep_read_fixed(sqe, scratch, 0, BLOCK / 2, BLOCK, FILE_OFF);
	sqe->user_data = 3;
	EXPECT(one(r, 3), -EFAULT);	/* past the buffer's end */
	sqe = pvu_get_sqe(r);
	pvu_prep_read_fixed(sqe, info.nr_backends, 0, 0, BLOCK, 0);
	sqe->user_data = 4;
	EXPECT(one(r, 4), -EBADF);
	EXPECT(nop(r, 5), 0);
	pvu_queue_exit(r);
	munmap(buf, BLOCK);
}

static void case_register_translate(void)
{
	struct pvu_ring *r = ring(8, 0);
	uint8_t *mem = pages(4 * BLOCK);
	struct iovec iov[2] = { { mem, 2 * BLOCK }, { mem + 2 * BLOCK, 2 * BLOCK } };
	struct pvu_buf t[8];
	unsigned idx = 99;
	uint64_t off = 99;
	int n, i;
	uint64_t total = 0;

	if (!r || !mem)
		return;
	n = pvu_register_buffers(r, iov, 2);
	if (!CHECK(n >= 2 && n <= 4))
		return;
	EXPECT(pvu_buffer_table(r, t, 8), n);
	for (i = 0; i < n; i++)
		total += t[i].len;
	EXPECT(total, 4 * BLOCK);
	EXPECT(pvu_buffer_table(r, NULL, 0), n);
	CHECK(t[0].addr == (uintptr_t)mem);
	if (EXPECT(pvu_translate(r, mem + 3 * BLOCK + 16, 32, &idx, &off), 0))
		CHECK(t[idx].addr + off == (uintptr_t)(mem + 3 * BLOCK + 16));
	EXPECT(pvu_translate(r, mem + 4 * BLOCK, 1, &idx, &off), -EFAULT);
	EXPECT(pvu_translate(r, mem - 1, 2, &idx, &off), -EFAULT);
	EXPECT(pvu_register_buffers(r, iov, 2), -EBUSY);
	EXPECT(pvu_unregister_buffers(r), 0);
	EXPECT(pvu_unregister_buffers(r), -ENXIO);
	EXPECT(pvu_buffer_table(r, t, 8), 0);
	EXPECT(pvu_register_buffers(r, iov, 0), -EINVAL);
	pvu_queue_exit(r);
	munmap(mem, 4 * BLOCK);
}

/*
 * Fills the block at p with a pattern, writes it at file_off through r,
 * zeroes the block at q (which may be p) and reads it back there through
 * s; the block read must be the block written.
 */
static void write_read(struct pvu_ring *r, struct pvu_ring *s, uint8_t *p,
		       uint8_t *q, uint64_t file_off)
{
	static uint8_t want[BLOCK];
	struct pvu_sqe *sqe;
	unsigned bi, i;
	uint64_t bo;

	for (i = 0; i < BLOCK; i++)
		want[i] = (uint8_t)(i ^ (file_off >> 12) ^ 0x5a);
	memcpy(p, want, BLOCK);
	if (!EXPECT(pvu_translate(r, p, BLOCK, &bi, &bo), 0))
		return;
	sqe = pvu_get_sqe(r);
	pvu_prep_write_fixed(sqe, scratch, bi, bo, BLOCK, file_off);
	pvu_sqe_set_data64(sqe, 11);
	EXPECT(one(r, 11), BLOCK);
	memset(q, 0, BLOCK);
	if (!EXPECT(pvu_translate(s, q, BLOCK, &bi, &bo), 0))
		return;
	sqe = pvu_get_sqe(s);
	pvu_prep_read_fixed(sqe, scratch, bi, bo, BLOCK, file_off);
	pvu_sqe_set_data64(sqe, 12);
	EXPECT(one(s, 12), BLOCK);
	CHECK(!memcmp(q, want, BLOCK));
}

static void case_clone_offset_replace(void)
{
	struct pvu_ring *a = ring(8, 0), *b = ring(8, 0), *e = ring(8, 0);
	uint8_t *mem = pages(4 * BLOCK);
	struct iovec iov[4];
	struct pvu_buf ta[8], tb[8];
	int n, i;

	if (!a || !b || !e || !mem)
		return;
	for (i = 0; i < 4; i++)
		iov[i] = (struct iovec){ mem + i * BLOCK, BLOCK };
	n = pvu_register_buffers(a, iov, 4);
	if (!EXPECT(n, 4))
		return;
	pvu_buffer_table(a, ta, 8);
	EXPECT(pvu_clone_buffers(b, e), -ENXIO);
	EXPECT(pvu_clone_buffers_offset(b, a, 0, 1, 2, 0), 2);
	if (EXPECT(pvu_buffer_table(b, tb, 8), 2))
		CHECK(!memcmp(tb, ta + 1, 2 * sizeof(tb[0])));
	EXPECT(pvu_clone_buffers_offset(b, a, 0, 0, 1, 0), -EBUSY);
	/* A replacing clone must reach the end of b's table (docs/pv-uring.md). */
	EXPECT(pvu_clone_buffers_offset(b, a, 0, 3, 1, PVU_CLONE_DST_REPLACE), -EINVAL);
	EXPECT(pvu_clone_buffers_offset(b, a, 1, 3, 1, PVU_CLONE_DST_REPLACE), 2);
	if (EXPECT(pvu_buffer_table(b, tb, 8), 2))
		CHECK(tb[0].addr == ta[1].addr && tb[1].addr == ta[3].addr);
	EXPECT(pvu_clone_buffers_offset(b, a, 1, 5, 1, PVU_CLONE_DST_REPLACE), -EOVERFLOW);
	EXPECT(pvu_clone_buffers_offset(b, a, 0, 0, 0, 1u << 0), -EINVAL);
	/* Into itself: entry 1 becomes a second copy of entry 0. */
	EXPECT(pvu_clone_buffers_offset(b, b, 1, 0, 1, PVU_CLONE_DST_REPLACE), 2);
	if (EXPECT(pvu_buffer_table(b, tb, 8), 2))
		CHECK(tb[1].addr == ta[1].addr);
	/* Data through the clone: a's block 1, read back into block 0. */
	write_read(b, a, mem + BLOCK, mem, FILE_OFF);
	pvu_queue_exit(a);
	/* b keeps its buffers after a is gone. */
	write_read(b, b, mem + BLOCK, mem + BLOCK, FILE_OFF + BLOCK);
	pvu_queue_exit(b);
	pvu_queue_exit(e);
	munmap(mem, 4 * BLOCK);
}

static void case_table(void)
{
	struct pvu_ring *a = ring(8, 0), *b = ring(8, 0);
	uint8_t *mem = pages(2 * BLOCK);
	struct iovec iov = { mem, 2 * BLOCK };
	struct pvu_buf t[4];
	struct pvu_sqe *sqe;
	uint64_t token = 0, bo;
	unsigned i, bi;
	int n;

	if (!a || !b || !mem)
		return;
	if (!(info.features & PVU_FEAT_TABLE)) {
		fail("the device has no host table (PVU_FEAT_TABLE)");
		return;
	}
	EXPECT(pvu_publish_buffers(a, &token), -ENXIO);
	n = pvu_register_buffers(a, &iov, 1);
	if (!CHECK(n >= 1))
		return;
	if (!EXPECT(pvu_publish_buffers(a, &token), 0))
		return;
	EXPECT(pvu_clone_buffers_from_table(b, token ^ 1, 0, 0, 0, 0), -ENOENT);
	EXPECT(pvu_clone_buffers_from_table(b, token, 0, 0, 0, 0), n);
	if (EXPECT(pvu_buffer_table(b, t, 4), n))
		CHECK(t[0].len != 0);
	/* By index: b does not know where the buffer is, the device does. */
	for (i = 0; i < BLOCK; i++)
		mem[i] = (uint8_t)(i * 3 + 1);
	sqe = pvu_get_sqe(b);
	pvu_prep_write_fixed(sqe, scratch, 0, 0, BLOCK, FILE_OFF + 2 * BLOCK);
	pvu_sqe_set_data64(sqe, 21);
	EXPECT(one(b, 21), BLOCK);
	/* a reads it back by address into its second block. */
	memset(mem + BLOCK, 0, BLOCK);
	if (EXPECT(pvu_translate(a, mem + BLOCK, BLOCK, &bi, &bo), 0)) {
		sqe = pvu_get_sqe(a);
		pvu_prep_read_fixed(sqe, scratch, bi, bo, BLOCK,
				    FILE_OFF + 2 * BLOCK);
		pvu_sqe_set_data64(sqe, 22);
		EXPECT(one(a, 22), BLOCK);
		CHECK(!memcmp(mem, mem + BLOCK, BLOCK));
	}
	EXPECT(pvu_unpublish_buffers(b, token), -EPERM);
	EXPECT(pvu_unpublish_buffers(a, token), 0);
	EXPECT(pvu_clone_buffers_from_table(b, token, 0, 0, 0,
					    PVU_CLONE_DST_REPLACE), -ENOENT);
	pvu_queue_exit(a);
	pvu_queue_exit(b);
	munmap(mem, 2 * BLOCK);
}

/* WRITE_FIXED linked to FSYNC: both complete, in order. */
static void case_link_fsync(void)
{
	struct pvu_ring *r = ring(8, 0);
	uint8_t *buf = pages(BLOCK);
	struct iovec iov = { buf, BLOCK };
	struct pvu_sqe *sqe;
	struct pvu_cqe *cqe;
	unsigned bi;
	uint64_t bo;

	if (!r || !buf || pvu_register_buffers(r, &iov, 1) != 1 ||
	    pvu_translate(r, buf, BLOCK, &bi, &bo))
		return;
	memset(buf, 0x77, BLOCK);
	sqe = pvu_get_sqe(r);
	pvu_prep_write_fixed(sqe, scratch, bi, bo, BLOCK, FILE_OFF + 4 * BLOCK);
	pvu_sqe_set_flags(sqe, PVU_SQE_IO_LINK);
	pvu_sqe_set_data64(sqe, 31);
	sqe = pvu_get_sqe(r);
	pvu_prep_fsync(sqe, scratch, PVU_FSYNC_DATASYNC);
	pvu_sqe_set_data64(sqe, 32);
	EXPECT(pvu_submit_and_wait(r, 2), 2);
	if (EXPECT(pvu_peek_cqe(r, &cqe), 0)) {
		CHECK(cqe->user_data == 31 && cqe->res == (int32_t)BLOCK);
		pvu_cqe_seen(r, cqe);
	}
	if (EXPECT(pvu_peek_cqe(r, &cqe), 0)) {
		CHECK(cqe->user_data == 32 && cqe->res == 0);
		pvu_cqe_seen(r, cqe);
	}
	pvu_queue_exit(r);
	munmap(buf, BLOCK);
}

static void case_polled(void)
{
	struct pvu_ring *r, *more[8] = { 0 };
	struct pvu_ring_params p;
	unsigned i, made = 0;
	int ret = 0;

	if (!(info.features & PVU_FEAT_POLLED)) {
		fail("the device offers no polled rings (--uring polled=N)");
		return;
	}
	r = ring(8, PVU_RING_POLLED);
	if (!r)
		return;
	if (EXPECT(pvu_ring_params(r, &p), 0))
		CHECK(p.flags & PVU_RING_POLLED);
	for (i = 0; i < 100; i++)
		if (!EXPECT(nop(r, 40 + i), 0))
			break;
	/* Beyond max_polled: -EBUSY. */
	for (i = 0; i + 1 < info.max_polled && i < 8; i++)
		if (!pvu_queue_init(dev, 8, &more[i], PVU_RING_POLLED))
			made++;
	if (info.max_polled <= 8) {
		struct pvu_ring *x = NULL;

		ret = pvu_queue_init(dev, 8, &x, PVU_RING_POLLED);
		EXPECT(ret, -EBUSY);
		pvu_queue_exit(x);
	}
	for (i = 0; i < 8; i++)
		pvu_queue_exit(more[i]);
	(void)made;
	pvu_queue_exit(r);
}

static void case_interrupt_off(void)
{
	struct pvu_ring *r = ring(8, 0);
	unsigned i;

	if (!r)
		return;
	EXPECT(pvu_ring_set_cq_interrupt(r, 0), 0);
	for (i = 0; i < 20; i++)
		if (!EXPECT(nop(r, 60 + i), 0))
			break;
	EXPECT(pvu_ring_set_cq_interrupt(r, 1), 0);
	EXPECT(nop(r, 99), 0);
	pvu_queue_exit(r);
}

/*
 * The buffer arena: a pool of chunks on three rings with one command and
 * on a fourth alone, data through them, the refusals, and the chunks
 * held by the rings after pvu_arena_free until the last ring goes.
 */
static void case_arena(void)
{
	struct pvu_ring *r[4] = { ring(8, 0), ring(8, 0), ring(8, 0), ring(8, 0) };
	struct pvu_ring *dup[2];
	struct pvu_arena_info ai;
	struct pvu_arena *a = NULL, *b = NULL;
	struct pvu_buf t[4];
	uint64_t len = 0;
	uint8_t *p;
	unsigned i;

	if (!CHECK(info.features & PVU_FEAT_ARENA))
		goto out;	/* run the VM with --uring arena=SIZE */
	if (!EXPECT(pvu_arena_info(dev, &ai), 0) || !r[0] || !r[1] || !r[2] ||
	    !r[3])
		goto out;
	CHECK(ai.nr_chunks >= 2 && ai.free_chunks == ai.nr_chunks);
	CHECK(ai.len == ai.nr_chunks * ai.chunk_size);
	EXPECT(pvu_arena_alloc(dev, 0, &a), -EINVAL);
	EXPECT(pvu_arena_alloc(dev, ai.len + 1, &a), -ENOSPC);
	if (!EXPECT(pvu_arena_alloc(dev, ai.chunk_size + 1, &a), 0))
		goto out;
	p = pvu_arena_addr(a, &len);
	if (!CHECK(p && len == 2 * ai.chunk_size))
		goto out;
	EXPECT(pvu_arena_info(dev, &ai), 0);
	EXPECT(ai.free_chunks, ai.nr_chunks - 2);
	EXPECT(pvu_register_arena_rings(r, 0, a), -EINVAL);
	dup[0] = r[0];
	dup[1] = r[0];
	EXPECT(pvu_register_arena_rings(dup, 2, a), -EINVAL);
	dup[1] = NULL;
	EXPECT(pvu_register_arena_rings(dup, 2, a), -EINVAL);
	if (!EXPECT(pvu_register_arena_rings(r, 3, a), 2))
		goto out;
	EXPECT(pvu_register_arena_rings(r + 2, 2, a), -EBUSY);
	EXPECT(pvu_buffer_table(r[3], t, 4), 0);	/* all or none */
	EXPECT(pvu_register_arena(r[3], a), 2);
	EXPECT(pvu_register_arena(r[3], a), -EBUSY);
	for (i = 0; i < 4; i++) {
		if (EXPECT(pvu_buffer_table(r[i], t, 4), 2))
			CHECK(t[0].addr == (uintptr_t)p &&
			      t[1].addr == (uintptr_t)p + ai.chunk_size &&
			      t[1].len == ai.chunk_size);
	}
	/* Written through one ring, read back through the next. */
	for (i = 0; i < 4; i++)
		write_read(r[i], r[(i + 1) % 4], p + i * BLOCK,
			   p + ai.chunk_size + i * BLOCK,
			   FILE_OFF + (16 + i) * BLOCK);
	EXPECT(pvu_arena_free(a), 0);
	a = NULL;
	EXPECT(pvu_arena_info(dev, &ai), 0);
	EXPECT(ai.free_chunks, ai.nr_chunks - 2);	/* the rings hold them */
	for (i = 0; i < 4; i++) {
		pvu_queue_exit(r[i]);
		r[i] = NULL;
	}
	EXPECT(pvu_arena_info(dev, &ai), 0);
	EXPECT(ai.free_chunks, ai.nr_chunks);
	/* The whole arena, then one chunk more. */
	if (EXPECT(pvu_arena_alloc(dev, ai.len, &b), 0))
		EXPECT(pvu_arena_alloc(dev, 1, &a), -ENOSPC);
out:
	pvu_arena_free(a);
	pvu_arena_free(b);
	for (i = 0; i < 4; i++)
		pvu_queue_exit(r[i]);
}

static const struct {
	const char *name;
	void (*fn)(void);
} cases[] = {
	{ "ring-params", case_ring_params },
	{ "nop-batch", case_nop_batch },
	{ "flow-control", case_flow_control },
	{ "wait-timeout", case_wait_timeout },
	{ "refused-sqes", case_refused_sqes },
	{ "register-translate", case_register_translate },
	{ "clone-offset-replace", case_clone_offset_replace },
	{ "table", case_table },
	{ "link-fsync", case_link_fsync },
	{ "polled", case_polled },
	{ "interrupt-off", case_interrupt_off },
	{ "arena", case_arena },
};

int main(int argc, char **argv)
{
	unsigned i;
	int ret;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 3 || strcmp(argv[1], "--scratch")) {
		fprintf(stderr, "usage: capi-suite --scratch BACKEND\n");
		return 2;
	}
	scratch = (unsigned)strtoul(argv[2], NULL, 0);
	ret = pvu_open(NULL, &dev);
	if (ret || pvu_device_info(dev, &info)) {
		printf("FAIL open: pvu_open: %d\n0 passed, 1 failed\n", ret);
		return 1;
	}
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cur = cases[i].name;
		cur_failed = 0;
		cases[i].fn();
		if (cur_failed) {
			failed++;
		} else {
			passed++;
			printf("PASS %s\n", cur);
		}
	}
	pvu_close(dev);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
