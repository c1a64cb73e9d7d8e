// SPDX-License-Identifier: GPL-2.0
/*
 * A smoke test of the pv-uring driver on ABI v2, run as a guest workload:
 * mappings (the CQ slot read-only), NOP / refused SQE / fixed I/O, table
 * tokens, retired-table bound, device removal. Build it statically against
 * the patched tree's exported headers and append it to an initramfs:
 *
 *   make O=build headers
 *   gcc -static -I build/usr/include -o vuring-smoke vuring-smoke.c
 *   mkdir -p r/bin && cp vuring-smoke r/bin/
 *   (cd r && find bin | cpio -o -H newc) | cat initramfs.cpio - >i.cpio
 *   truncate -s 16M b.img
 *   ringvisor run --kernel vmlinux --initramfs i.cpio --uring rings=4 \
 *       --uring-backend path=b.img --cmdline '-- /bin/vuring-smoke'
 *
 * It unbinds the device at the end. Exit status: the number of failures.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/io_uring.h>
#include <linux/vuring.h>

static int fails;
#define CHECK(cond, ...) do { if (cond) { printf("ok   "); } else { printf("FAIL "); fails++; } printf(__VA_ARGS__); printf("\n"); fflush(stdout); } while (0)

struct ring {
	int fd;
	struct vuring_create c;
	unsigned char *sq, *cq;
	volatile uint32_t *db;
	uint32_t tail, head;
};

static int ring_open(struct ring *r, const char *what)
{
	struct vuring_info info;

	memset(r, 0, sizeof(*r));
	r->fd = open("/dev/vuring", O_RDWR);
	if (r->fd < 0) { printf("FAIL open %s: %s\n", what, strerror(errno)); fails++; return -1; }
	ioctl(r->fd, VURING_IOC_INFO, &info);
	r->c.entries = 8;
	if (ioctl(r->fd, VURING_IOC_CREATE, &r->c)) { printf("FAIL create %s: %s\n", what, strerror(errno)); fails++; return -1; }
	r->sq = mmap(NULL, info.sq_slot_size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, VURING_MMAP_SQ);
	r->cq = mmap(NULL, info.cq_slot_size, PROT_READ, MAP_SHARED, r->fd, VURING_MMAP_CQ);
	r->db = mmap(NULL, 4096, PROT_WRITE, MAP_SHARED, r->fd, VURING_MMAP_DOORBELL);
	CHECK(r->sq != MAP_FAILED && r->cq != MAP_FAILED && r->db != MAP_FAILED, "%s: ring %u sq %u cq %u cq_tail %#x cqes %#x flags %u mapped", what,
	      r->c.ring_id, r->c.sq_entries, r->c.cq_entries, r->c.cq_tail, r->c.cqes, r->c.ring_flags);
	return 0;
}

static void submit_nowait(struct ring *r, uint8_t op, int fd, uint64_t ud)
{
	struct io_uring_sqe *sqe = (void *)(r->sq + PVU_SLOT_SQES) + (r->tail & (r->c.sq_entries - 1)) * 64;

	memset(sqe, 0, 64);
	sqe->opcode = op; sqe->flags = IOSQE_FIXED_FILE; sqe->fd = fd; sqe->len = 512; sqe->user_data = ud;
	r->tail++;
	__atomic_store_n((uint32_t *)(r->sq + PVU_SLOT_SQ_TAIL), r->tail, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	*r->db = r->c.ring_id;
}

static int submit(struct ring *r, uint8_t op, uint8_t flags, int fd, uint16_t buf, uint64_t addr, uint32_t len, uint64_t off, uint64_t ud)
{
	struct io_uring_sqe *sqe = (void *)(r->sq + PVU_SLOT_SQES) + (r->tail & (r->c.sq_entries - 1)) * 64;
	volatile uint32_t *cq_tail = (void *)(r->cq + r->c.cq_tail);
	struct io_uring_cqe *cqes = (void *)(r->cq + r->c.cqes);
	int i, res;

	memset(sqe, 0, 64);
	sqe->opcode = op; sqe->flags = flags; sqe->fd = fd; sqe->buf_index = buf;
	sqe->addr = addr; sqe->len = len; sqe->off = off; sqe->user_data = ud;
	r->tail++;
	__atomic_store_n((uint32_t *)(r->sq + PVU_SLOT_SQ_TAIL), r->tail, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	*r->db = r->c.ring_id;
	for (i = 0; i < 5000000; i++) {
		if (__atomic_load_n(cq_tail, __ATOMIC_ACQUIRE) != r->head)
			break;
		if (i > 1000)
			usleep(100);
	}
	if (__atomic_load_n(cq_tail, __ATOMIC_ACQUIRE) == r->head) { printf("FAIL no CQE for %llu\n", (unsigned long long)ud); fails++; return -99999; }
	{
		struct io_uring_cqe *cqe = &cqes[r->head & (r->c.cq_entries - 1)];
		if (cqe->user_data != ud) { printf("FAIL user_data %llu != %llu\n", (unsigned long long)cqe->user_data, (unsigned long long)ud); fails++; }
		res = cqe->res;
	}
	r->head++;
	__atomic_store_n((uint32_t *)(r->sq + PVU_SLOT_CQ_HEAD), r->head, __ATOMIC_RELEASE);
	return res;
}

int main(void)
{
	struct vuring_info info = {0};
	struct ring a, b;
	static struct vuring_extent ext[1024];
	struct vuring_publish pub;
	struct vuring_clone cl;
	struct vuring_register reg;
	struct iovec iov;
	struct pollfd pfd;
	unsigned char *buf;
	void *p;
	int fd, res, i, e;

	fd = open("/dev/vuring", O_RDWR);
	CHECK(fd >= 0, "open /dev/vuring (%s)", fd < 0 ? strerror(errno) : "");
	if (fd < 0) return 1;
	CHECK(!ioctl(fd, VURING_IOC_INFO, &info), "INFO");
	printf("     max_rings %u max_entries %u max_buffers %u nr_backends %u sq_slot %u max_table %u features %#llx abi %u cq_slot %u max_polled %u max_registered %llu\n",
	       info.max_rings, info.max_entries, info.max_buffers, info.nr_backends, info.sq_slot_size, info.max_table,
	       (unsigned long long)info.features, info.abi_version, info.cq_slot_size, info.max_polled, (unsigned long long)info.max_registered);
	CHECK(info.abi_version == 2, "abi_version 2");
	e = ioctl(fd, VURING_IOC_UNREGISTER) ? errno : 0;
	CHECK(e == ENOENT, "UNREGISTER without ring: ENOENT (%d)", e);
	close(fd);

	if (ring_open(&a, "a")) return 1;
	p = mmap(NULL, info.cq_slot_size, PROT_READ | PROT_WRITE, MAP_SHARED, a.fd, VURING_MMAP_CQ);
	CHECK(p == MAP_FAILED && errno == EACCES, "CQ mapped writable refused (%s)", p == MAP_FAILED ? strerror(errno) : "mapped!");
	e = mprotect(a.cq, 4096, PROT_READ | PROT_WRITE) ? errno : 0;
	CHECK(e == EACCES, "mprotect CQ writable refused (%d)", e);

	res = submit(&a, IORING_OP_NOP, IOSQE_FIXED_FILE, 0, 0, 0, 0, 0, 1);
	CHECK(res == 0, "NOP res %d", res);
	res = submit(&a, IORING_OP_READV, IOSQE_FIXED_FILE, 0, 0, 0, 0, 0, 2);
	CHECK(res == -EACCES, "READV refused res %d", res);

	buf = aligned_alloc(1 << 21, 1 << 21);
	memset(buf, 0xab, 1 << 21);
	iov.iov_base = buf; iov.iov_len = 1 << 20;
	memset(&reg, 0, sizeof(reg));
	reg.iovecs = (uintptr_t)&iov; reg.nr_iovecs = 1; reg.max_extents = 1024; reg.extents = (uintptr_t)ext;
	CHECK(!ioctl(a.fd, VURING_IOC_REGISTER, &reg), "REGISTER (%s) nr %u ext0 %#llx+%llu", strerror(errno), reg.nr_extents,
	      (unsigned long long)ext[0].user_addr, (unsigned long long)ext[0].len);
	if (info.nr_backends) {
		memcpy(buf, "hello pv-uring v2", 18);
		res = submit(&a, IORING_OP_WRITE_FIXED, IOSQE_FIXED_FILE, 0, 0, 0, 4096, 0, 3);
		CHECK(res == 4096, "WRITE_FIXED res %d", res);
		memset(buf, 0, 4096);
		res = submit(&a, IORING_OP_READ_FIXED, IOSQE_FIXED_FILE, 0, 0, 0, 4096, 0, 4);
		CHECK(res == 4096 && !memcmp(buf, "hello pv-uring v2", 18), "READ_FIXED res %d data %.17s", res, buf);
		res = submit(&a, IORING_OP_READ_FIXED, IOSQE_FIXED_FILE, 0, 0, (1 << 20) - 100, 4096, 0, 5);
		CHECK(res == -EFAULT, "READ_FIXED beyond buffer res %d", res);
	}
	/* poll: one CQE pending */
	submit(&a, IORING_OP_NOP, IOSQE_FIXED_FILE, 0, 0, 0, 0, 0, 6);
	pfd.fd = a.fd; pfd.events = POLLIN;
	res = poll(&pfd, 1, 0);
	CHECK(res == 0, "poll with CQ empty: %d", res);

	{
		struct ring c;
		int cfd = open("/dev/vuring", O_RDWR);

		memset(&c, 0, sizeof(c));
		c.c.entries = 4; c.c.flags = VURING_RING_POLLED;
		e = ioctl(cfd, VURING_IOC_CREATE, &c.c) ? errno : 0;
		CHECK(info.max_polled ? (!e && c.c.ring_flags == VURING_RING_POLLED) : e == EOPNOTSUPP,
		      "polled ring: %d flags %u", e, c.c.ring_flags);
		if (!e) {
			c.fd = cfd;
			c.sq = mmap(NULL, info.sq_slot_size, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, VURING_MMAP_SQ);
			c.cq = mmap(NULL, info.cq_slot_size, PROT_READ, MAP_SHARED, cfd, VURING_MMAP_CQ);
			c.db = mmap(NULL, 4096, PROT_WRITE, MAP_SHARED, cfd, VURING_MMAP_DOORBELL);
			res = submit(&c, IORING_OP_NOP, IOSQE_FIXED_FILE, 0, 0, 0, 0, 0, 50);
			CHECK(res == 0, "NOP on the polled ring res %d", res);
			munmap(c.sq, info.sq_slot_size); munmap(c.cq, info.cq_slot_size); munmap((void *)c.db, 4096);
		}
		close(cfd);
	}

	if (ring_open(&b, "b")) return 1;
	e = ioctl(a.fd, VURING_IOC_PUBLISH, &pub) ? errno : 0;
	CHECK(e == 0 && pub.token, "PUBLISH token %#llx (%d)", (unsigned long long)pub.token, e);
	memset(&cl, 0, sizeof(cl));
	cl.flags = VURING_CLONE_SRC_TABLE; cl.token = pub.token ^ 1; cl.max_extents = 1024; cl.extents = (uintptr_t)ext;
	e = ioctl(b.fd, VURING_IOC_CLONE, &cl) ? errno : 0;
	CHECK(e == ENOENT, "CLONE with a wrong token: ENOENT (%d)", e);
	cl.token = pub.token;
	e = ioctl(b.fd, VURING_IOC_CLONE, &cl) ? errno : 0;
	CHECK(e == 0 && cl.nr_extents == reg.nr_extents, "CLONE from table (%d) nr %u user_addr %#llx", e, cl.nr_extents, (unsigned long long)ext[0].user_addr);
	if (info.nr_backends) {
		memset(buf, 0, 4096);
		res = submit(&b, IORING_OP_READ_FIXED, IOSQE_FIXED_FILE, 0, 0, 0, 4096, 0, 7);
		CHECK(res == 4096 && !memcmp(buf, "hello pv-uring v2", 18), "READ_FIXED through the clone res %d", res);
	}
	e = ioctl(b.fd, VURING_IOC_UNPUBLISH, &pub) ? errno : 0;
	CHECK(e == EPERM, "UNPUBLISH by another file: EPERM (%d)", e);
	/* replacing clone from a */
	memset(&cl, 0, sizeof(cl));
	cl.src = a.fd; cl.flags = VURING_CLONE_DST_REPLACE; cl.max_extents = 1024; cl.extents = (uintptr_t)ext;
	e = ioctl(b.fd, VURING_IOC_CLONE, &cl) ? errno : 0;
	CHECK(e == 0, "replacing CLONE from a file (%d)", e);
	e = ioctl(a.fd, VURING_IOC_UNPUBLISH, &pub) ? errno : 0;
	CHECK(e == 0, "UNPUBLISH by the publisher (%d)", e);
	e = ioctl(a.fd, VURING_IOC_UNPUBLISH, &pub) ? errno : 0;
	CHECK(e == ENOENT, "UNPUBLISH again: ENOENT (%d)", e);
	/* idle rings: unregister/register cycles never hit the retired bound */
	for (i = 0; i < 20; i++) {
		e = ioctl(a.fd, VURING_IOC_UNREGISTER) ? errno : 0;
		if (e) break;
		reg.max_extents = 1024;
		e = ioctl(a.fd, VURING_IOC_REGISTER, &reg) ? errno : 0;
		if (e) break;
	}
	CHECK(i == 20, "20 UNREGISTER/REGISTER cycles of an idle ring (%d at %d)", e, i);
	/* publish again, close the publisher: the token dies */
	e = ioctl(a.fd, VURING_IOC_PUBLISH, &pub) ? errno : 0;
	CHECK(e == 0, "PUBLISH again (%d)", e);
	munmap(a.sq, info.sq_slot_size); munmap(a.cq, info.cq_slot_size); munmap((void *)a.db, 4096);
	close(a.fd);
	memset(&cl, 0, sizeof(cl));
	cl.flags = VURING_CLONE_SRC_TABLE | VURING_CLONE_DST_REPLACE; cl.token = pub.token; cl.max_extents = 1024; cl.extents = (uintptr_t)ext;
	e = ioctl(b.fd, VURING_IOC_CLONE, &cl) ? errno : 0;
	CHECK(e == ENOENT, "CLONE from a closed publisher's token: ENOENT (%d)", e);
	/* a request in flight: the sentinel read waits until the ring goes */
	submit_nowait(&b, IORING_OP_READ_FIXED, 16, 100);
	usleep(200000);
	for (i = 0; i < 12; i++) {
		e = ioctl(b.fd, VURING_IOC_UNREGISTER) ? errno : 0;
		if (e) break;
		reg.max_extents = 1024;
		e = ioctl(b.fd, VURING_IOC_REGISTER, &reg) ? errno : 0;
		if (e) break;
	}
	CHECK(i == 8 && e == EBUSY, "busy ring: the 9th retired table is EBUSY (%d at %d)", e, i);
	pfd.fd = b.fd; pfd.events = POLLIN;
	{
		FILE *f;
		char path[256];
		int n = 0;
		for (i = 0; i < 16 && !n; i++) {
			snprintf(path, sizeof(path), "/sys/bus/virtio/drivers/virtio_vuring/virtio%d", i);
			if (!access(path, F_OK)) {
				f = fopen("/sys/bus/virtio/drivers/virtio_vuring/unbind", "w");
				if (f) { fprintf(f, "virtio%d", i); fclose(f); n = 1; }
			}
		}
		CHECK(n, "unbound the device");
	}
	res = poll(&pfd, 1, 0);
	CHECK(res == 1 && (pfd.revents & POLLERR), "poll after removal: %d revents %#x", res, pfd.revents);
	e = ioctl(b.fd, VURING_IOC_INFO, &info) ? errno : 0;
	CHECK(e == ENODEV, "INFO after removal: ENODEV (%d)", e);
	close(b.fd);
	printf("vuring-test: %d failures\n", fails);
	return fails;
}
