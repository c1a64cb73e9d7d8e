// SPDX-License-Identifier: Apache-2.0
/*
 * ring-pool-c: a ring pool in C on the pv-uring C API (pv_uring.h).
 *
 * N pv rings share one buffer pool: ring 0 registers it, every other ring
 * gets it by cloning (pvu_clone_buffers), and I/O on any ring then names
 * the pool by (buffer index, offset). Like the Rust pv-bench registration
 * workload it times, per ring, registering the pool again against cloning
 * it (from ring 0 and, when the device has the host table, from a table
 * entry), and then one request at a time on every ring: a NOP, and with a
 * backend (--uring-backend) a 4 KiB WRITE_FIXED from the pool through one
 * ring and its READ_FIXED back through the next ring into another part of
 * the pool, compared byte for byte.
 *
 * stdout: one JSON line per method,
 *   {"kind":"ring-pool-c","method":"clone","rings":8,...,"samples":7,
 *    "min_us":..,"median_us":..,"p99_us":..,"max_us":..,"mean_us":..,
 *    "samples_us":[...]}
 * then {"kind":"ring-pool-c-summary",...} with the medians and the ratio of
 * median register to median clone. Any failure prints
 * {"kind":"ring-pool-c-error","call":...,"errno":...} and exits 1; bad
 * arguments exit 2. Progress goes to stderr.
 *
 * usage: ring-pool-c [--rings N] [--size BYTES] [--buf BYTES] [--ios N]
 *                    [--scratch BACKEND] [--polled] [--huge]
 * --scratch names a backend whose first MiB the program may overwrite (the
 * write/read check); without it only NOPs run. --polled makes ring 0 a
 * polled ring; --huge puts the pool on 2 MiB pages (4K if none are free).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <time.h>

#include "pv_uring.h"

#define BLOCK 4096u
#define MAX_RINGS 256u
#define MAX_SAMPLES 65536u
#define ENTRIES 32u
/* The blocks of the --scratch backend that are written: its first MiB. */
#define SCRATCH_BLOCKS 256u

struct params {
	unsigned rings;
	uint64_t size;
	uint64_t buf;
	unsigned ios;
	int polled;
	int huge;
	int scratch;	/* backend it may overwrite (first MiB), or -1 */
};

struct method {
	const char *name;
	uint64_t *ns;		/* MAX_SAMPLES, allocated at the first sample */
	unsigned n;
	double median_us;
};

static struct method m_first = { .name = "first-register" };
static struct method m_register = { .name = "register" };
static struct method m_clone = { .name = "clone" };
static struct method m_publish = { .name = "publish" };
static struct method m_table = { .name = "table-clone" };
static struct method m_nop = { .name = "nop" };
static struct method m_write = { .name = "write" };
static struct method m_read = { .name = "read" };

static struct pvu_ring *rings[MAX_RINGS];
static char desc[512];

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Prints the error line and exits 1. */
static void fail(const char *call, int ring, int err)
{
	struct utsname u;

	if (uname(&u) != 0)
		strcpy(u.release, "?");
	printf("{\"kind\":\"ring-pool-c-error\",\"call\":\"%s\",\"ring\":%d,"
	       "\"errno\":%d,\"error\":\"%s\",\"kernel\":\"%s\"}\n",
	       call, ring, err < 0 ? -err : err, strerror(err < 0 ? -err : err),
	       u.release);
	fflush(stdout);
	fprintf(stderr, "ring-pool-c: %s (ring %d): %s\n", call, ring,
		strerror(err < 0 ? -err : err));
	exit(1);
}

/* A check of the data or of a CQE: the error line with errno 0. */
static void fail_check(const char *what, int ring, const char *detail)
{
	printf("{\"kind\":\"ring-pool-c-error\",\"call\":\"%s\",\"ring\":%d,"
	       "\"errno\":0,\"error\":\"%s\"}\n", what, ring, detail);
	fflush(stdout);
	fprintf(stderr, "ring-pool-c: %s (ring %d): %s\n", what, ring, detail);
	exit(1);
}

static void add(struct method *m, uint64_t ns)
{
	if (!m->ns) {
		m->ns = calloc(MAX_SAMPLES, sizeof(*m->ns));
		if (!m->ns)
			fail("calloc", -1, -ENOMEM);
	}
	if (m->n < MAX_SAMPLES)
		m->ns[m->n++] = ns;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest sample with pct % of them at or below it. */
static uint64_t rank(const uint64_t *sorted, unsigned n, unsigned pct)
{
	unsigned r = (pct * n + 99) / 100;

	return sorted[(r ? r : 1) - 1];
}

/* One method's line (none without samples: no figure is made up). */
static void emit(struct method *m)
{
	unsigned __int128 sum = 0;
	uint64_t *s;
	unsigned i;

	if (!m->n)
		return;
	s = malloc(m->n * sizeof(s[0]));
	if (!s)
		fail("malloc", -1, -ENOMEM);
	memcpy(s, m->ns, m->n * sizeof(s[0]));
	qsort(s, m->n, sizeof(s[0]), cmp_u64);
	for (i = 0; i < m->n; i++)
		sum += s[i];
	m->median_us = rank(s, m->n, 50) / 1e3;
	printf("{\"kind\":\"ring-pool-c\",\"method\":\"%s\",%s,\"samples\":%u,"
	       "\"min_us\":%.3f,\"median_us\":%.3f,\"p99_us\":%.3f,"
	       "\"max_us\":%.3f,\"mean_us\":%.3f,\"samples_us\":[",
	       m->name, desc, m->n, s[0] / 1e3, m->median_us,
	       rank(s, m->n, 99) / 1e3, s[m->n - 1] / 1e3,
	       (double)(uint64_t)(sum / m->n) / 1e3);
	for (i = 0; i < m->n; i++)
		printf("%s%.3f", i ? "," : "", m->ns[i] / 1e3);
	printf("]}\n");
	free(s);
}

/* A median as JSON: null without samples. */
static const char *median(const struct method *m, char *buf, size_t len)
{
	if (!m->n)
		return "null";
	snprintf(buf, len, "%.3f", m->median_us);
	return buf;
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -1;
	if (*end == 'K' || *end == 'k')
		v <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		v <<= 20, end++;
	else if (*end == 'G' || *end == 'g')
		v <<= 30, end++;
	if (*end)
		return -1;
	*out = v;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ring-pool-c [--rings N (2..%u, default 8)] "
		"[--size BYTES (default 4M)] [--buf BYTES (default 1M)] "
		"[--ios N (per ring, default 16)] [--scratch BACKEND] [--polled] "
		"[--huge]\n",
		MAX_RINGS);
}

static void parse(int argc, char **argv, struct params *p)
{
	int i;
	uint64_t v;

	*p = (struct params){ .rings = 8, .size = 4 << 20, .buf = 1 << 20,
			      .ios = 16, .scratch = -1 };
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--polled")) {
			p->polled = 1;
			continue;
		}
		if (!strcmp(a, "--huge")) {
			p->huge = 1;
			continue;
		}
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		}
		if (!val || parse_size(val, &v)) {
			fprintf(stderr, "ring-pool-c: bad or missing value for %s\n", a);
			usage(stderr);
			exit(2);
		}
		i++;
		if (!strcmp(a, "--rings"))
			p->rings = (unsigned)v;
		else if (!strcmp(a, "--size"))
			p->size = v;
		else if (!strcmp(a, "--buf"))
			p->buf = v;
		else if (!strcmp(a, "--ios"))
			p->ios = (unsigned)v;
		else if (!strcmp(a, "--scratch") && v < 16)
			p->scratch = (int)v;
		else {
			fprintf(stderr, "ring-pool-c: unknown argument %s\n", a);
			usage(stderr);
			exit(2);
		}
	}
	if (p->rings < 2 || p->rings > MAX_RINGS || p->size < 2 * BLOCK ||
	    p->size % BLOCK || p->buf < BLOCK || p->buf % BLOCK ||
	    p->ios > MAX_SAMPLES / MAX_RINGS) {
		fprintf(stderr, "ring-pool-c: need 2 <= rings <= %u, size and buf "
			"multiples of %u (size >= 2 blocks), ios <= %u\n",
			MAX_RINGS, BLOCK, MAX_SAMPLES / MAX_RINGS);
		exit(2);
	}
}

/* Submits one SQE and reaps its CQE; returns the CQE's result. */
static int32_t round_trip(struct pvu_ring *r, int ring, struct pvu_sqe *sqe,
			  uint64_t tag, uint64_t *ns)
{
	struct pvu_cqe *cqe;
	uint64_t t0;
	int32_t res;
	int ret;

	pvu_sqe_set_data64(sqe, tag);
	t0 = now_ns();
	ret = pvu_submit(r);
	if (ret != 1)
		fail("pvu_submit", ring, ret < 0 ? ret : -EIO);
	ret = pvu_wait_cqe_timeout(r, &cqe, 10ull * 1000000000u);
	*ns = now_ns() - t0;
	if (ret)
		fail("pvu_wait_cqe_timeout", ring, ret);
	if (pvu_cqe_get_data64(cqe) != tag)
		fail_check("cqe", ring, "user_data of another request");
	res = cqe->res;
	pvu_cqe_seen(r, cqe);
	return res;
}

static struct pvu_sqe *sqe_of(struct pvu_ring *r, int ring)
{
	struct pvu_sqe *sqe = pvu_get_sqe(r);

	if (!sqe)
		fail("pvu_get_sqe", ring, -EBUSY);
	return sqe;
}

/* A block's bytes for (ring, io): no two blocks of the run alike. */
static void pattern(uint8_t *p, unsigned ring, unsigned io)
{
	unsigned i;

	for (i = 0; i < BLOCK; i++)
		p[i] = (uint8_t)(i * 31 + ring * 7 + io * 13 + (i >> 8));
}

/*
 * One request at a time on every ring: NOPs; with --scratch, a block of
 * the pool written to that backend through ring k and read back through
 * ring k+1 into another block of the pool, then compared.
 */
static void io_phase(const struct params *p, uint8_t *pool)
{
	unsigned blocks = (unsigned)(p->size / BLOCK), half = blocks / 2;
	unsigned k, i, j = 0, bi;
	uint64_t ns, bo, tag;
	struct pvu_sqe *sqe;
	int32_t res;
	int ret;

	for (k = 0; k < p->rings; k++) {
		for (i = 0; i < p->ios; i++) {
			tag = (uint64_t)k << 32 | i;
			sqe = sqe_of(rings[k], (int)k);
			pvu_prep_nop(sqe);
			res = round_trip(rings[k], (int)k, sqe, tag, &ns);
			if (res)
				fail("nop", (int)k, res);
			add(&m_nop, ns);
		}
	}
	if (p->scratch < 0)
		return;
	for (k = 0; k < p->rings; k++) {
		unsigned next = (k + 1) % p->rings;

		for (i = 0; i < p->ios; i++, j++) {
			uint8_t *src = pool + (size_t)(j % half) * BLOCK;
			uint8_t *dst = pool + (size_t)(half + j % half) * BLOCK;
			uint64_t file_off = (uint64_t)(j % SCRATCH_BLOCKS) * BLOCK;

			pattern(src, k, i);
			ret = pvu_translate(rings[k], src, BLOCK, &bi, &bo);
			if (ret)
				fail("pvu_translate", (int)k, ret);
			sqe = sqe_of(rings[k], (int)k);
			pvu_prep_write_fixed(sqe, (unsigned)p->scratch, bi, bo,
					     BLOCK, file_off);
			res = round_trip(rings[k], (int)k, sqe, 1ull << 62 | j, &ns);
			if (res != (int32_t)BLOCK)
				fail("write_fixed", (int)k, res < 0 ? res : -EIO);
			add(&m_write, ns);

			memset(dst, 0, BLOCK);
			ret = pvu_translate(rings[next], dst, BLOCK, &bi, &bo);
			if (ret)
				fail("pvu_translate", (int)next, ret);
			sqe = sqe_of(rings[next], (int)next);
			pvu_prep_read_fixed(sqe, (unsigned)p->scratch, bi, bo,
					    BLOCK, file_off);
			res = round_trip(rings[next], (int)next, sqe,
					 2ull << 62 | j, &ns);
			if (res != (int32_t)BLOCK)
				fail("read_fixed", (int)next, res < 0 ? res : -EIO);
			add(&m_read, ns);
			if (memcmp(src, dst, BLOCK))
				fail_check("read_fixed", (int)next,
					   "the block read differs from the one written");
		}
	}
}

int main(int argc, char **argv)
{
	struct params p;
	struct pvu_device *dev;
	struct pvu_info info;
	struct pvu_ring_params rp;
	struct iovec *iovs;
	struct pvu_buf *t0, *tk;
	uint8_t *pool;
	const char *page = "4K";
	unsigned k, n_iovs, i;
	int nbufs, ret;
	uint64_t t, token = 0;
	char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse(argc, argv, &p);

	ret = pvu_open(NULL, &dev);
	if (ret)
		fail("pvu_open", -1, ret);
	ret = pvu_device_info(dev, &info);
	if (ret)
		fail("pvu_device_info", -1, ret);
	fprintf(stderr, "ring-pool-c: device: %u ring slots, %u backends, "
		"features %#" PRIx64 ", %" PRIu64 " bytes registrable\n",
		info.max_rings, info.nr_backends, info.features,
		info.max_registered);

	pool = MAP_FAILED;
	if (p.huge) {
		pool = mmap(NULL, p.size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB |
			    MAP_POPULATE, -1, 0);
		if (pool == MAP_FAILED)
			fprintf(stderr, "ring-pool-c: warning: 2 MiB pages: %s: "
				"using 4K pages\n", strerror(errno));
		else
			page = "2M";
	}
	if (pool == MAP_FAILED)
		pool = mmap(NULL, p.size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (pool == MAP_FAILED)
		fail("mmap", -1, -errno);

	n_iovs = (unsigned)((p.size + p.buf - 1) / p.buf);
	iovs = calloc(n_iovs, sizeof(*iovs));
	if (!iovs)
		fail("calloc", -1, -ENOMEM);
	for (i = 0; i < n_iovs; i++) {
		uint64_t at = (uint64_t)i * p.buf;

		iovs[i].iov_base = pool + at;
		iovs[i].iov_len = p.size - at < p.buf ? p.size - at : p.buf;
	}

	for (k = 0; k < p.rings; k++) {
		unsigned flags = (k == 0 && p.polled) ? PVU_RING_POLLED : 0;

		ret = pvu_queue_init(dev, ENTRIES, &rings[k], flags);
		if (ret)
			fail("pvu_queue_init", (int)k, ret);
	}
	ret = pvu_ring_params(rings[0], &rp);
	if (ret)
		fail("pvu_ring_params", 0, ret);
	if (p.polled && !(rp.flags & PVU_RING_POLLED))
		fail_check("pvu_ring_params", 0, "ring 0 is not polled");

	/* Ring 0 registers the pool. */
	t = now_ns();
	nbufs = pvu_register_buffers(rings[0], iovs, n_iovs);
	add(&m_first, now_ns() - t);
	if (nbufs < 0)
		fail("pvu_register_buffers", 0, nbufs);
	if ((unsigned)nbufs < n_iovs)
		fail_check("pvu_register_buffers", 0, "fewer buffers than iovecs");
	snprintf(desc, sizeof(desc),
		 "\"rings\":%u,\"pool_bytes\":%" PRIu64 ",\"buf_bytes\":%" PRIu64
		 ",\"bufs\":%d,\"page\":\"%s\",\"polled\":%s", p.rings, p.size,
		 p.buf, nbufs, page, p.polled ? "true" : "false");
	fprintf(stderr, "ring-pool-c: %u rings; pool %" PRIu64 " bytes (%s pages) "
		"in %d buffers, registered on ring 0 in %.1f us\n", p.rings,
		p.size, page, nbufs, m_first.ns[0] / 1e3);

	/* Every other ring: register the pool again (then drop it). */
	for (k = 1; k < p.rings; k++) {
		t = now_ns();
		ret = pvu_register_buffers(rings[k], iovs, n_iovs);
		add(&m_register, now_ns() - t);
		if (ret < 0)
			fail("pvu_register_buffers", (int)k, ret);
		ret = pvu_unregister_buffers(rings[k]);
		if (ret)
			fail("pvu_unregister_buffers", (int)k, ret);
	}

	/* Through the host table, when the device has one. */
	if (info.features & PVU_FEAT_TABLE) {
		t = now_ns();
		ret = pvu_publish_buffers(rings[0], &token);
		add(&m_publish, now_ns() - t);
		if (ret)
			fail("pvu_publish_buffers", 0, ret);
		for (k = 1; k < p.rings; k++) {
			t = now_ns();
			ret = pvu_clone_buffers_from_table(rings[k], token, 0, 0, 0, 0);
			add(&m_table, now_ns() - t);
			if (ret < 0)
				fail("pvu_clone_buffers_from_table", (int)k, ret);
			if (ret != nbufs)
				fail_check("pvu_clone_buffers_from_table", (int)k,
					   "buffer count differs from ring 0");
			ret = pvu_unregister_buffers(rings[k]);
			if (ret)
				fail("pvu_unregister_buffers", (int)k, ret);
		}
		ret = pvu_unpublish_buffers(rings[0], token);
		if (ret)
			fail("pvu_unpublish_buffers", 0, ret);
	} else {
		fprintf(stderr, "ring-pool-c: no host table (PVU_FEAT_TABLE): "
			"no table-clone\n");
	}

	/* The pool: every ring clones ring 0's buffers, and keeps them. */
	t0 = calloc((size_t)nbufs, sizeof(*t0));
	tk = calloc((size_t)nbufs, sizeof(*tk));
	if (!t0 || !tk)
		fail("calloc", -1, -ENOMEM);
	if (pvu_buffer_table(rings[0], t0, (unsigned)nbufs) != nbufs)
		fail_check("pvu_buffer_table", 0, "count differs");
	for (k = 1; k < p.rings; k++) {
		t = now_ns();
		ret = pvu_clone_buffers(rings[k], rings[0]);
		add(&m_clone, now_ns() - t);
		if (ret < 0)
			fail("pvu_clone_buffers", (int)k, ret);
		if (ret != nbufs ||
		    pvu_buffer_table(rings[k], tk, (unsigned)nbufs) != nbufs ||
		    memcmp(t0, tk, (size_t)nbufs * sizeof(*tk)))
			fail_check("pvu_clone_buffers", (int)k,
				   "the clone's table differs from ring 0's");
	}

	if (p.scratch >= 0 && (unsigned)p.scratch >= info.nr_backends)
		fail("--scratch", -1, -EBADF);
	io_phase(&p, pool);

	emit(&m_first);
	emit(&m_register);
	emit(&m_clone);
	emit(&m_publish);
	emit(&m_table);
	emit(&m_nop);
	emit(&m_write);
	emit(&m_read);
	printf("{\"kind\":\"ring-pool-c-summary\",%s,\"first_register_us\":%.3f,"
	       "\"register_median_us\":%s,\"clone_median_us\":%s,"
	       "\"table_clone_median_us\":%s,\"ratio_register_over_clone\":",
	       desc, m_first.ns[0] / 1e3, median(&m_register, b1, sizeof(b1)),
	       median(&m_clone, b2, sizeof(b2)), median(&m_table, b3, sizeof(b3)));
	if (m_register.n && m_clone.n && m_clone.median_us > 0)
		printf("%.1f", m_register.median_us / m_clone.median_us);
	else
		printf("null");
	printf(",\"nop_median_us\":%s,\"write_median_us\":%s,"
	       "\"read_median_us\":%s,\"verified_blocks\":%u}\n",
	       median(&m_nop, b4, sizeof(b4)), median(&m_write, b5, sizeof(b5)),
	       median(&m_read, b6, sizeof(b6)), m_read.n);

	for (k = 0; k < p.rings; k++)
		pvu_queue_exit(rings[k]);
	pvu_close(dev);
	free(t0);
	free(tk);
	free(iovs);
	munmap(pool, p.size);
	return 0;
}
