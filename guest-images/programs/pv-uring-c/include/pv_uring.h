/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pv_uring.h: the C API of ringvisor's paravirtual io_uring rings (pv rings)
 * for guest programs, through the guest driver's /dev/vuring.
 *
 * Link with libpv_uring_c.a (guest-images/programs/pv-uring-c), statically:
 *   cc -static prog.c -Iinclude libpv_uring_c.a -lpthread -ldl -lm
 * The reference is docs/c-api.md; the device is docs/pv-uring.md (ABI v2).
 *
 * Names follow liburing where the meaning is the same (pvu_queue_init,
 * pvu_get_sqe, pvu_submit, pvu_wait_cqe, pvu_cqe_seen, ...). Every function
 * that can fail returns 0 (or a count) on success and a negative errno on
 * failure, as liburing does; none sets errno. Every pointer argument is
 * checked: NULL where one is required is -EINVAL. No function aborts the
 * program: a bug inside the library is reported as -ENOTRECOVERABLE.
 *
 * Differences from liburing that matter:
 *  - A ring is opaque and allocated by pvu_queue_init (freed by
 *    pvu_queue_exit); rings come from an open device (pvu_open).
 *  - Data is named by (buffer index, byte offset in that buffer), never by
 *    address: an SQE's addr is an offset. One registered iovec may become
 *    several buffers (the driver splits it where guest-physical memory is
 *    not contiguous): pvu_translate turns a pointer into the pair.
 *  - Files are the VM's backends (--uring-backend), by index: every SQE
 *    carries PVU_SQE_FIXED_FILE (the prep helpers set it).
 *  - Only NOP, READ_FIXED, WRITE_FIXED and FSYNC exist; the device answers
 *    anything else with a CQE of -EACCES (docs/pv-uring.md).
 *  - Submitting and reaping make no system call (the device reads the
 *    shared SQ; the CQ is shared memory).
 *
 * One thread at a time per ring (as liburing); different rings may be used
 * from different threads. A ring stays usable after pvu_close of its
 * device.
 */
#ifndef PV_URING_H
#define PV_URING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The driver's device node (pvu_open with a NULL path). */
#define PVU_DEFAULT_PATH "/dev/vuring"

/* pvu_queue_init flags. */
#define PVU_RING_POLLED		(1U << 0)	/* a VMM thread polls the SQ */

/* pvu_clone_buffers_offset / pvu_clone_buffers_from_table flags. */
#define PVU_CLONE_DST_REPLACE	(1U << 1)	/* = IORING_REGISTER_DST_REPLACE */

/* struct pvu_info.features bits. */
#define PVU_FEAT_POLLED		(1ULL << 0)	/* polled rings may be asked for */
#define PVU_FEAT_TABLE		(1ULL << 1)	/* the host buffer table */
#define PVU_FEAT_ARENA		(1ULL << 2)	/* the buffer arena */

/* Opcodes the device runs (io_uring's values). */
#define PVU_OP_NOP		0
#define PVU_OP_FSYNC		3
#define PVU_OP_READ_FIXED	4
#define PVU_OP_WRITE_FIXED	5

/* SQE flags the device allows (io_uring's IOSQE_* values). */
#define PVU_SQE_FIXED_FILE	(1U << 0)	/* required on every SQE */
#define PVU_SQE_IO_DRAIN	(1U << 1)
#define PVU_SQE_IO_LINK		(1U << 2)
#define PVU_SQE_IO_HARDLINK	(1U << 3)

/* pvu_prep_fsync flags (IORING_FSYNC_DATASYNC). */
#define PVU_FSYNC_DATASYNC	(1U << 0)

/* The device's limits and features (struct vuring_info of the driver). */
struct pvu_info {
	uint32_t max_rings;	/* ring slots of the device */
	uint32_t max_entries;	/* largest SQ a ring may ask for */
	uint32_t max_buffers;	/* largest buffer table of a ring */
	uint32_t nr_backends;	/* backends: file indices 0..nr_backends-1 */
	uint32_t sq_slot_size;
	uint32_t max_table;	/* entries of the host buffer table */
	uint64_t features;	/* PVU_FEAT_* */
	uint32_t abi_version;	/* 2 */
	uint32_t cq_slot_size;
	uint32_t max_polled;	/* most polled rings at once */
	uint32_t resv;
	uint64_t max_registered; /* most bytes registered at once (the VM) */
};

/* A ring as created. */
struct pvu_ring_params {
	uint32_t id;		/* the device's ring id */
	uint32_t sq_entries;	/* a power of two */
	uint32_t cq_entries;	/* a power of two, >= sq_entries */
	uint32_t flags;		/* PVU_RING_POLLED if the ring is polled */
	int32_t fd;		/* the ring's /dev/vuring fd (poll(2): POLLIN) */
	uint32_t resv;
};

/* One registered buffer: its index is its position in the ring's table. */
struct pvu_buf {
	uint64_t addr;		/* first byte (0: unknown to this process) */
	uint64_t len;		/* 0: an empty entry */
};

/* A submission queue entry: struct io_uring_sqe's layout (64 bytes). */
struct pvu_sqe {
	uint8_t opcode;		/* PVU_OP_* */
	uint8_t flags;		/* PVU_SQE_* (PVU_SQE_FIXED_FILE always) */
	uint16_t ioprio;	/* 0 */
	int32_t fd;		/* the backend index */
	uint64_t off;		/* the file offset */
	uint64_t addr;		/* READ/WRITE_FIXED: offset in the buffer */
	uint32_t len;		/* bytes */
	uint32_t rw_flags;	/* 0; FSYNC: PVU_FSYNC_DATASYNC */
	uint64_t user_data;	/* comes back in the CQE */
	uint16_t buf_index;	/* READ/WRITE_FIXED: the registered buffer */
	uint16_t personality;	/* 0 */
	uint32_t file_index;	/* 0 */
	uint64_t resv[2];	/* 0 */
};

/* A completion queue entry: struct io_uring_cqe's layout (16 bytes). */
struct pvu_cqe {
	uint64_t user_data;
	int32_t res;		/* bytes moved, 0, or a negative errno */
	uint32_t flags;
};

/* The buffer arena (struct vuring_arena_info of the driver). */
struct pvu_arena_info {
	uint64_t chunk_size;	/* bytes of a chunk: one buffer */
	uint64_t len;		/* bytes of the arena */
	uint32_t nr_chunks;
	uint32_t free_chunks;	/* chunks no file, ring or mapping holds */
};

/* Opaque handles. */
struct pvu_device;
struct pvu_ring;
struct pvu_arena;	/* chunks of the buffer arena, mapped */

/* ------------------------------------------------------------- device */

/*
 * Opens the device (path NULL: PVU_DEFAULT_PATH), reads its limits and maps
 * its doorbell page; *dev receives a handle to free with pvu_close.
 * -ENOENT no such node (no pv-uring device, or no driver); -EPROTONOSUPPORT
 * the device speaks another ABI version; other errors of open/ioctl/mmap.
 */
int pvu_open(const char *path, struct pvu_device **dev);

/* Frees the handle (NULL: nothing). Its rings stay usable. */
void pvu_close(struct pvu_device *dev);

/* Copies the device's limits and features into *info. */
int pvu_device_info(const struct pvu_device *dev, struct pvu_info *info);

/* --------------------------------------------------------------- rings */

/*
 * Creates a ring of `entries` SQ entries (1..max_entries, rounded up to a
 * power of two) on its own fd and maps its queues; flags: 0 (doorbell) or
 * PVU_RING_POLLED. *ring receives a handle to free with pvu_queue_exit.
 * -EINVAL bad entries or flags; -ENOSPC no free ring slot; -EOPNOTSUPP
 * polled without PVU_FEAT_POLLED; -EBUSY max_polled polled rings live.
 */
int pvu_queue_init(struct pvu_device *dev, unsigned entries,
		   struct pvu_ring **ring, unsigned flags);

/*
 * Destroys the ring (the device waits for its requests in flight) and
 * frees the handle; SQEs and CQEs it handed out become invalid. Buffers
 * other rings cloned from it stay theirs. NULL: nothing.
 */
void pvu_queue_exit(struct pvu_ring *ring);

/* The ring's id, sizes, flags and fd. */
int pvu_ring_params(const struct pvu_ring *ring, struct pvu_ring_params *p);

/*
 * Completion interrupts on (1, the default) or off (0). With them off the
 * ring must be busy-polled: pvu_wait_cqe only notices completions at 10 ms
 * poll timeouts after its first 200 ms of spinning.
 */
int pvu_ring_set_cq_interrupt(struct pvu_ring *ring, int enabled);

/* ------------------------------------------------------------- buffers */

/*
 * Registers iovecs[0..nr_iovecs) (REGISTER): the driver pins them and makes
 * one buffer per guest-physically contiguous piece. Returns the number of
 * buffers (>= nr_iovecs, in iovec order). -EBUSY the ring has buffers;
 * -EINVAL overlapping iovecs or a bad count; -ENOSPC more bytes than the
 * VM may register; -ENOBUFS more pieces than max_buffers.
 */
int pvu_register_buffers(struct pvu_ring *ring, const struct iovec *iovecs,
			 unsigned nr_iovecs);

/* Drops the ring's buffers. -ENXIO none; -EBUSY (see docs/c-api.md). */
int pvu_unregister_buffers(struct pvu_ring *ring);

/*
 * Gives dst all of src's buffers (CLONE, the host's
 * IORING_REGISTER_CLONE_BUFFERS: no page is pinned again). dst must have
 * no buffers. Returns dst's buffer count. -EBUSY dst has buffers; -ENXIO
 * src has none.
 */
int pvu_clone_buffers(struct pvu_ring *dst, const struct pvu_ring *src);

/*
 * As liburing's io_uring_clone_buffers_offset: nr buffers of src from
 * src_off to dst from dst_off (nr 0: all of src); flags 0 or
 * PVU_CLONE_DST_REPLACE (the range must then reach the end of dst's
 * table, and dst may not have more buffers than src: else -EINVAL). dst
 * may be src. Returns dst's buffer count. -EINVAL, -EBUSY, -ENXIO,
 * -EOVERFLOW as IORING_REGISTER_CLONE_BUFFERS.
 */
int pvu_clone_buffers_offset(struct pvu_ring *dst, const struct pvu_ring *src,
			     unsigned dst_off, unsigned src_off, unsigned nr,
			     unsigned flags);

/*
 * Puts a clone of the ring's buffers in the host buffer table; *token
 * receives the unguessable token other rings (of any process) clone it
 * with. -ENXIO no buffers; -ENOSPC table full; -EOPNOTSUPP no
 * PVU_FEAT_TABLE.
 */
int pvu_publish_buffers(struct pvu_ring *ring, uint64_t *token);

/* Removes the table entry `token` (only its publisher may: -EPERM). */
int pvu_unpublish_buffers(struct pvu_ring *ring, uint64_t token);

/*
 * As pvu_clone_buffers_offset from the table entry `token`. The buffers'
 * addresses are unknown to dst (pvu_buf.addr 0): name them by index.
 * -ENOENT unknown token.
 */
int pvu_clone_buffers_from_table(struct pvu_ring *dst, uint64_t token,
				 unsigned dst_off, unsigned src_off,
				 unsigned nr, unsigned flags);

/*
 * The ring's buffer table: copies min(count, max) entries to bufs (NULL
 * only with max 0) and returns count.
 */
int pvu_buffer_table(const struct pvu_ring *ring, struct pvu_buf *bufs,
		     unsigned max);

/*
 * The registered buffer holding [ptr, ptr + len) whole: its index and the
 * offset of ptr in it (what READ/WRITE_FIXED SQEs carry). -EFAULT not
 * inside one buffer of the ring (or its address is unknown).
 */
int pvu_translate(const struct pvu_ring *ring, const void *ptr, size_t len,
		  unsigned *buf_index, uint64_t *buf_off);

/* ------------------------------------------------------- buffer arena */

/*
 * Host memory the host registered once (--uring arena=SIZE): a ring gets
 * a pool of chunks of any size with one command and no page pinned, and
 * many rings with one command for all of them (docs/pv-uring.md, "The
 * buffer arena"). Every function is -EOPNOTSUPP without PVU_FEAT_ARENA.
 */

/* Copies the arena's size and free chunks into *info. */
int pvu_arena_info(const struct pvu_device *dev, struct pvu_arena_info *info);

/*
 * Allocates chunks for at least len bytes (first fit, whole chunks) and
 * maps them read-write; *arena receives a handle to free with
 * pvu_arena_free. The chunks are the device file's (the handle keeps it
 * open; pvu_close first is fine). -EINVAL len 0; -ENOSPC no run of free
 * chunks that long.
 */
int pvu_arena_alloc(struct pvu_device *dev, uint64_t len,
		    struct pvu_arena **arena);

/*
 * Unmaps the chunks, gives them up and frees the handle (NULL: nothing).
 * Rings that registered them keep them: they return to the arena when the
 * last such ring drops them.
 */
int pvu_arena_free(struct pvu_arena *arena);

/* The mapped chunks' first byte (NULL: a NULL handle); *len (if not
 * NULL) receives their length. */
void *pvu_arena_addr(const struct pvu_arena *arena, uint64_t *len);

/*
 * The chunks become the ring's buffers 0..nr-1, one per chunk (one
 * command; nothing is pinned); pvu_translate works on their addresses.
 * Returns the buffer count. -EBUSY the ring has buffers.
 */
int pvu_register_arena(struct pvu_ring *ring, const struct pvu_arena *arena);

/*
 * pvu_register_arena on each of rings[0..nr_rings) with one command for
 * all of them (the rings share one table), all or none. Returns each
 * ring's buffer count. -EINVAL nr_rings 0 or above max_rings, a NULL or
 * repeated ring; -EBUSY a ring has buffers.
 */
int pvu_register_arena_rings(struct pvu_ring *const *rings, unsigned nr_rings,
			     const struct pvu_arena *arena);

/* ---------------------------------------------------- submit and reap */

/*
 * The next free SQE, zeroed, or NULL when the SQ is full (reap completions:
 * the device takes SQEs only while the CQ has room for their CQEs). It
 * reaches the device at the next pvu_submit.
 */
struct pvu_sqe *pvu_get_sqe(struct pvu_ring *ring);

/* Free SQ entries (what pvu_get_sqe can still hand out). */
unsigned pvu_sq_space_left(const struct pvu_ring *ring);

/*
 * Makes every SQE got since the last submit visible to the device and
 * rings the doorbell (a polled ring: only when its submitter sleeps). No
 * system call. Returns the number of SQEs submitted.
 */
int pvu_submit(struct pvu_ring *ring);

/*
 * pvu_submit, then waits until at least wait_nr CQEs are ready (at most
 * cq_entries). Returns the number submitted.
 */
int pvu_submit_and_wait(struct pvu_ring *ring, unsigned wait_nr);

/* CQEs ready to reap. */
unsigned pvu_cq_ready(const struct pvu_ring *ring);

/*
 * The oldest CQE not yet seen, without waiting: 0 and *cqe_ptr set, or
 * -EAGAIN none ready. *cqe_ptr stays valid until pvu_cqe_seen /
 * pvu_cq_advance / pvu_queue_exit.
 */
int pvu_peek_cqe(struct pvu_ring *ring, struct pvu_cqe **cqe_ptr);

/*
 * As pvu_peek_cqe, waiting for one (busy-polls the shared CQ for 200 ms,
 * then poll(2)s the ring fd). Never times out.
 */
int pvu_wait_cqe(struct pvu_ring *ring, struct pvu_cqe **cqe_ptr);

/* As pvu_wait_cqe for at most timeout_ns: -ETIME when none came. */
int pvu_wait_cqe_timeout(struct pvu_ring *ring, struct pvu_cqe **cqe_ptr,
			 uint64_t timeout_ns);

/* Marks the CQE pvu_peek_cqe / pvu_wait_cqe gave as consumed (NULL cqe: nothing). */
void pvu_cqe_seen(struct pvu_ring *ring, struct pvu_cqe *cqe);

/* Marks the nr oldest CQEs as consumed. */
void pvu_cq_advance(struct pvu_ring *ring, unsigned nr);

/* ------------------------------------------ SQE helpers (inline, no checks) */

/* Zeroes sqe and sets what every SQE needs. sqe: from pvu_get_sqe. */
static inline void pvu_prep_rw(struct pvu_sqe *sqe, uint8_t op, unsigned backend,
			       unsigned buf_index, uint64_t buf_off,
			       unsigned len, uint64_t file_off)
{
	*sqe = (struct pvu_sqe){ 0 };
	sqe->opcode = op;
	sqe->flags = PVU_SQE_FIXED_FILE;
	sqe->fd = (int32_t)backend;
	sqe->off = file_off;
	sqe->addr = buf_off;
	sqe->len = len;
	sqe->buf_index = (uint16_t)buf_index;
}

/* A NOP (completes with 0). */
static inline void pvu_prep_nop(struct pvu_sqe *sqe)
{
	pvu_prep_rw(sqe, PVU_OP_NOP, 0, 0, 0, 0, 0);
}

/* Reads len bytes at file_off of the backend into buffer buf_index at buf_off. */
static inline void pvu_prep_read_fixed(struct pvu_sqe *sqe, unsigned backend,
				       unsigned buf_index, uint64_t buf_off,
				       unsigned len, uint64_t file_off)
{
	pvu_prep_rw(sqe, PVU_OP_READ_FIXED, backend, buf_index, buf_off, len,
		    file_off);
}

/* Writes len bytes of buffer buf_index from buf_off at file_off of the backend. */
static inline void pvu_prep_write_fixed(struct pvu_sqe *sqe, unsigned backend,
					unsigned buf_index, uint64_t buf_off,
					unsigned len, uint64_t file_off)
{
	pvu_prep_rw(sqe, PVU_OP_WRITE_FIXED, backend, buf_index, buf_off, len,
		    file_off);
}

/* fsync(2) of the backend (fsync_flags: 0 or PVU_FSYNC_DATASYNC). */
static inline void pvu_prep_fsync(struct pvu_sqe *sqe, unsigned backend,
				  unsigned fsync_flags)
{
	pvu_prep_rw(sqe, PVU_OP_FSYNC, backend, 0, 0, 0, 0);
	sqe->rw_flags = fsync_flags;
}

/* Sets the SQE's flags; PVU_SQE_FIXED_FILE stays set. */
static inline void pvu_sqe_set_flags(struct pvu_sqe *sqe, unsigned flags)
{
	sqe->flags = (uint8_t)(flags | PVU_SQE_FIXED_FILE);
}

static inline void pvu_sqe_set_data64(struct pvu_sqe *sqe, uint64_t data)
{
	sqe->user_data = data;
}

static inline uint64_t pvu_cqe_get_data64(const struct pvu_cqe *cqe)
{
	return cqe->user_data;
}

#ifdef __cplusplus
}
#endif

#endif /* PV_URING_H */
