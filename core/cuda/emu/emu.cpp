/* graft CUDA emulator: the launch scheduler and the CUDA runtime calls graft uses.
 *
 * Linked instead of libcudart in the emulated build. Blocks run one after another on
 * the calling thread; the threads of a block are ucontext coroutines that yield at a
 * barrier (__syncthreads) or a warp exchange (shuffles), and are released when every
 * live thread of the block (or of the warp) waits there. Device memory is mmap'ed with
 * its end against an inaccessible page (an overrun faults) and, unless
 * GRAFT_EMU_GUARD=0, made inaccessible outside kernels and copies. Each allocation
 * belongs to the device current at cudaMalloc: a kernel (or a cuBLAS/cuDNN call) that
 * touches memory of another device than the one current at its launch aborts, as it
 * would fault on a multi-GPU machine; copies may cross devices (unified addressing).
 * Environment: GRAFT_EMU_DEVICES (1), GRAFT_EMU_MEMORY (bytes of device memory, 8 GiB).
 */
#include "emu.h"

#include <map>
#include <signal.h>
#include <vector>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

static inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) {
    uint3 u;
    u.x = x;
    u.y = y;
    u.z = z;
    return u;
}

thread_local uint3 emu_thread_idx, emu_block_idx;
thread_local dim3 emu_block_dim, emu_grid_dim;

/* ---- device memory ---- */

namespace {
struct emu_alloc { char *map; size_t map_len; size_t size; int device; };
std::map<uintptr_t, emu_alloc> allocs;   /* keyed by the pointer handed out */
size_t used_bytes, limit_bytes;
int guard_on = -1;
volatile int guard_depth; /* read by the SIGSEGV handler: every change must be a real store */
int n_devices = -1, cur_device;
int launch_device = -1;       /* the device current at the running launch; -1: none (a copy) */
const char *launch_name = ""; /* that launch's kernel */
cudaError_t last_error = cudaSuccess;
size_t page_size;

} // namespace
static void emu_segv(int sig, siginfo_t *info, void *uctx);
static struct sigaction old_segv;
namespace {
void emu_init(void) {
    if (n_devices >= 0) return;
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    const char *d = getenv("GRAFT_EMU_DEVICES");
    n_devices = d ? atoi(d) : 1;
    if (n_devices < 0) n_devices = 0;
    const char *m = getenv("GRAFT_EMU_MEMORY");
    limit_bytes = m ? strtoull(m, NULL, 10) : ((size_t)8 << 30);
    const char *g = getenv("GRAFT_EMU_GUARD");
    guard_on = g ? atoi(g) != 0 : 1;
    if (guard_on) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = emu_segv;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &old_segv);
    }
}

/* The accessible pages of an allocation (everything but the trailing guard page). */
void alloc_protect(const emu_alloc &a, int prot) {
    if (a.map_len > page_size) mprotect(a.map, a.map_len - page_size, prot);
}

cudaError_t fail(cudaError_t e) {
    last_error = e;
    return e;
}

/* Is [p, p+n) inside one live allocation? */
bool device_range(const void *p, size_t n) {
    auto it = allocs.upper_bound((uintptr_t)p);
    if (it == allocs.begin()) return false;
    --it;
    uintptr_t base = it->first;
    return (uintptr_t)p >= base && (uintptr_t)p + n <= base + it->second.size;
}
} // namespace

/* Device memory stays inaccessible; inside a kernel or a copy (guard_depth > 0) the
 * first touch of an allocation faults, and the handler opens that allocation until the
 * kernel ends. Outside, a touch is host code reading device memory: reported, then abort.
 * Touching the guard page after an allocation is an overrun: reported, then abort. */
static std::vector<uintptr_t> opened;

static void emu_segv(int sig, siginfo_t *info, void *uctx) {
    uintptr_t a = (uintptr_t)info->si_addr;
    auto it = allocs.upper_bound(a);
    if (it != allocs.begin()) {
        --it;
        const emu_alloc &al = it->second;
        uintptr_t map = (uintptr_t)al.map, guard = map + al.map_len - page_size;
        if (a >= map && a < guard && guard_depth > 0 && launch_device >= 0 && al.device != launch_device) {
            char msg[512];
            int n = snprintf(msg, sizeof msg, "graft CUDA emulator: kernel %s launched on device %d touched memory of "
                             "device %d (select the tensors' device before launching: GK_ON_DEVICE)\n",
                             launch_name, launch_device, al.device);
            if (n > 0 && write(2, msg, (size_t)n) < 0) {}
            abort();
        }
        if (a >= map && a < guard && guard_depth > 0) {
            mprotect(al.map, al.map_len - page_size, PROT_READ | PROT_WRITE);
            opened.push_back(it->first);
            return;
        }
        char msg[256];
        int n;
        if (a >= map && a < guard)
            n = snprintf(msg, sizeof msg, "graft CUDA emulator: host code touched device memory at %p (an allocation of %zu bytes): "
                         "copy the tensor to the host first\n", info->si_addr, al.size);
        else if (a >= guard && a < map + al.map_len)
            n = snprintf(msg, sizeof msg, "graft CUDA emulator: access %zu bytes past the end of a %zu-byte device allocation\n",
                         (size_t)(a - it->first) - al.size, al.size);
        else n = 0;
        if (n > 0) {
            if (write(2, msg, (size_t)n) < 0) {}
            abort();
        }
    }
    sigaction(SIGSEGV, &old_segv, NULL); /* not ours: fault again with the old handler */
    (void)sig;
    (void)uctx;
}

static void emu_guard_open(void) {
    emu_init();
    guard_depth++;
}
static void emu_guard_close(void) {
    if (--guard_depth || !guard_on) return;
    for (uintptr_t k : opened) {
        auto it = allocs.find(k);
        if (it != allocs.end()) alloc_protect(it->second, PROT_NONE);
    }
    opened.clear();
}

extern "C" {

cudaError_t cudaMalloc(void **p, size_t size) {
    emu_init();
    *p = NULL;
    if (n_devices == 0) return fail(cudaErrorNoDevice);
    if (size == 0) return cudaSuccess;
    if (size > limit_bytes || used_bytes + size > limit_bytes) return fail(cudaErrorMemoryAllocation);
    size_t body = (size + 255) & ~(size_t)255;
    size_t len = ((body + page_size - 1) / page_size + 1) * page_size;
    char *map = (char *)mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) return fail(cudaErrorMemoryAllocation);
    mprotect(map + len - page_size, page_size, PROT_NONE);
    char *user = map + len - page_size - body;
    memset(user, 0xA5, body); /* like fresh device memory, not zeros */
    emu_alloc a = {map, len, size, cur_device};
    if (guard_on) alloc_protect(a, PROT_NONE);
    allocs[(uintptr_t)user] = a;
    used_bytes += size;
    *p = user;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    emu_init();
    if (!p) return cudaSuccess;
    auto it = allocs.find((uintptr_t)p);
    if (it == allocs.end()) return fail(cudaErrorInvalidValue);
    munmap(it->second.map, it->second.map_len);
    used_bytes -= it->second.size;
    allocs.erase(it);
    return cudaSuccess;
}

/* Device memory: its device; anything else: unregistered host memory. */
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attr, const void *p) {
    emu_init();
    memset(attr, 0, sizeof *attr);
    auto it = allocs.upper_bound((uintptr_t)p);
    if (it != allocs.begin()) {
        --it;
        if ((uintptr_t)p >= it->first && (uintptr_t)p < it->first + (it->second.size ? it->second.size : 1)) {
            attr->type = cudaMemoryTypeDevice;
            attr->device = it->second.device;
            attr->devicePointer = (void *)p;
            return cudaSuccess;
        }
    }
    attr->type = cudaMemoryTypeUnregistered;
    attr->device = -2;
    attr->hostPointer = (void *)p;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t size) {
    *p = NULL;
    if (posix_memalign(p, 4096, size ? size : 1)) return fail(cudaErrorMemoryAllocation);
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaHostRegister(void *, size_t, unsigned int) { return cudaSuccess; }
cudaError_t cudaHostUnregister(void *) { return cudaSuccess; }

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
    emu_init();
    if (n == 0) return cudaSuccess;
    bool dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind == cudaMemcpyDefault) { dd = device_range(dst, 1); sd = device_range(src, 1); }
    if ((dd && !device_range(dst, n)) || (sd && !device_range(src, n))) {
        fprintf(stderr, "graft CUDA emulator: cudaMemcpy of %zu bytes outside a device allocation\n", n);
        abort();
    }
    emu_guard_open();
    memmove(dst, src, n);
    emu_guard_close();
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t) {
    return cudaMemcpy(dst, src, n, kind);
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t) {
    emu_init();
    if (n && !device_range(p, n)) {
        fprintf(stderr, "graft CUDA emulator: cudaMemset of %zu bytes outside a device allocation\n", n);
        abort();
    }
    emu_guard_open();
    memset(p, v, n);
    emu_guard_close();
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int v, size_t n) { return cudaMemsetAsync(p, v, n, 0); }

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total) {
    emu_init();
    *total = limit_bytes;
    *free_b = limit_bytes - used_bytes;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int *n) {
    emu_init();
    *n = n_devices;
    return n_devices ? cudaSuccess : fail(cudaErrorNoDevice);
}
cudaError_t cudaSetDevice(int d) {
    emu_init();
    if (d < 0 || d >= n_devices) return fail(cudaErrorInvalidDevice);
    cur_device = d;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) { emu_init(); *d = cur_device; return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
    emu_init();
    if (d < 0 || d >= n_devices) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "graft CUDA emulator");
    p->totalGlobalMem = limit_bytes;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 4;
    p->maxThreadsPerBlock = 1024;
    p->regsPerBlock = 65536;
    p->sharedMemPerBlock = 48 * 1024;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int) {
    switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = 4; break;
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    default: *v = 0; break;
    }
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v) { *v = 13000; return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int *v) { *v = 13000; return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamCreate(cudaStream_t *s) { *s = (cudaStream_t)malloc(16); return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) { free(s); return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) { return cudaSuccess; }

/* An event belongs to the device current at its creation and records only there. */
struct emu_event { double t; int device; };
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    emu_init();
    emu_event *ev = (emu_event *)calloc(1, sizeof(emu_event));
    if (!ev) return fail(cudaErrorMemoryAllocation);
    ev->device = cur_device;
    *e = (cudaEvent_t)ev;
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) { free(e); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
    if (((emu_event *)e)->device != cur_device) return fail(cudaErrorInvalidResourceHandle);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ((emu_event *)e)->t = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = (float)(((emu_event *)b)->t - ((emu_event *)a)->t);
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) { cudaError_t e = last_error; last_error = cudaSuccess; return e; }
cudaError_t cudaPeekAtLastError(void) { return last_error; }
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    default: return "unknown error";
    }
}
const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    default: return "cudaErrorUnknown";
    }
}

} // extern "C"

/* ---- the launch scheduler ---- */

/* Switching coroutines: on x86-64 a few instructions that save the callee-saved
 * registers and swap stacks (swapcontext makes a sigprocmask system call per switch,
 * which dominated kernels with barriers); ucontext elsewhere. */
#if defined(__x86_64__)
extern "C" void emu_ctx_switch(void **save_sp, void *load_sp);
__asm__(".text\n"
        ".globl emu_ctx_switch\n"
        ".type emu_ctx_switch,@function\n"
        "emu_ctx_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size emu_ctx_switch, .-emu_ctx_switch\n");
#define EMU_FAST_SWITCH 1
#endif

namespace {
enum { T_RUN, T_WAIT_BLOCK, T_WAIT_WARP, T_DONE };
struct emu_thread {
#ifdef EMU_FAST_SWITCH
    void *sp;
#else
    ucontext_t ctx;
#endif
    int state;
    uint3 idx;
    unsigned char slot[16];
};
const size_t STACK = 256 * 1024;
std::vector<char *> stacks;
std::vector<emu_thread> threads;
#ifdef EMU_FAST_SWITCH
void *sched_sp;
#else
ucontext_t sched_ctx;
#endif
int cur, flat_mode, nthreads;
bool reverse_order = getenv("GRAFT_EMU_ORDER") && strcmp(getenv("GRAFT_EMU_ORDER"), "reverse") == 0;
const char *kname;
void (*kfn)(void *);
void *kctx;
std::vector<unsigned char> dyn_smem;

void die(const char *what) {
    fprintf(stderr, "graft CUDA emulator: kernel %s, block (%u, %u, %u): %s\n", kname, blockIdx.x, blockIdx.y,
            blockIdx.z, what);
    abort();
}

void thread_main(void) {
    kfn(kctx);
    threads[cur].state = T_DONE;
#ifdef EMU_FAST_SWITCH
    void *dead;
    emu_ctx_switch(&dead, sched_sp); /* never resumed */
#endif
}

/* Runs thread i until it finishes or waits. */
void resume(int i) {
#ifdef EMU_FAST_SWITCH
    emu_ctx_switch(&sched_sp, threads[i].sp);
#else
    swapcontext(&sched_ctx, &threads[i].ctx);
#endif
}

void yield_as(int state) {
    if (flat_mode) die("it synchronises (__syncthreads or a shuffle): launch it with GK_LAUNCH, not GK_LAUNCH_FLAT");
    emu_thread &t = threads[cur];
    t.state = state;
#ifdef EMU_FAST_SWITCH
    emu_ctx_switch(&t.sp, sched_sp);
#else
    swapcontext(&t.ctx, &sched_ctx);
#endif
    threadIdx = threads[cur].idx;
}

void run_block(void) {
    for (int i = 0; i < nthreads; i++) {
        emu_thread &t = threads[i];
        if ((size_t)i >= stacks.size()) {
            void *s = mmap(NULL, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (s == MAP_FAILED) die("no memory for thread stacks");
            stacks.push_back((char *)s);
        }
#ifdef EMU_FAST_SWITCH
        /* A fresh stack that emu_ctx_switch "returns" into thread_main from: the saved
         * MXCSR/x87 control words, six callee-saved registers, then the entry address,
         * with a fake return address above it so thread_main sees an aligned frame. */
        uint64_t *top = (uint64_t *)(stacks[i] + STACK);
        uint64_t *sp = top - 2;
        sp[1] = 0;
        sp[0] = (uint64_t)(uintptr_t)thread_main;
        sp -= 6;
        for (int r = 0; r < 6; r++) sp[r] = 0;
        sp -= 1;
        uint32_t mx;
        uint16_t cw;
        __asm__ volatile("stmxcsr %0" : "=m"(mx));
        __asm__ volatile("fnstcw %0" : "=m"(cw));
        memcpy(sp, &mx, 4);
        memcpy((char *)sp + 4, &cw, 2);
        t.sp = sp;
#else
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = stacks[i];
        t.ctx.uc_stack.ss_size = STACK;
        t.ctx.uc_link = &sched_ctx;
        makecontext(&t.ctx, thread_main, 0);
#endif
        t.state = T_RUN;
    }
    for (;;) {
        for (int k = 0; k < nthreads; k++) {
            int i = reverse_order ? nthreads - 1 - k : k;
            if (threads[i].state != T_RUN) continue;
            cur = i;
            threadIdx = threads[i].idx;
            resume(i);
        }
        int live = 0, at_block = 0;
        for (int i = 0; i < nthreads; i++) {
            if (threads[i].state == T_DONE) continue;
            live++;
            if (threads[i].state == T_WAIT_BLOCK) at_block++;
        }
        if (!live) return;
        bool released = false;
        for (int w = 0; w * 32 < nthreads; w++) {
            int lo = w * 32, hi = lo + 32 < nthreads ? lo + 32 : nthreads, wl = 0, ww = 0;
            for (int i = lo; i < hi; i++) {
                if (threads[i].state == T_DONE) continue;
                wl++;
                if (threads[i].state == T_WAIT_WARP) ww++;
            }
            if (wl && ww == wl) {
                for (int i = lo; i < hi; i++)
                    if (threads[i].state == T_WAIT_WARP) threads[i].state = T_RUN;
                released = true;
            }
        }
        if (released) continue;
        if (at_block == live) {
            for (int i = 0; i < nthreads; i++)
                if (threads[i].state == T_WAIT_BLOCK) threads[i].state = T_RUN;
            continue;
        }
        die("its threads wait at different barriers (a __syncthreads or shuffle not reached by all)");
    }
}
} // namespace

void emu_syncthreads(void) { yield_as(T_WAIT_BLOCK); }
void emu_syncwarp(void) { yield_as(T_WAIT_WARP); }

void emu_exchange(const void *mine, void *out, int src_lane, size_t n, unsigned mask) {
    int me = cur;
    memcpy(threads[me].slot, mine, n);
    yield_as(T_WAIT_WARP);
    /* __shfl_*_sync(mask, ...): on a GPU every lane in mask must execute it */
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1u)) continue;
        int t = (me / 32) * 32 + l;
        if (t >= nthreads || threads[t].state == T_DONE)
            die("a shuffle's mask names a lane that has exited or does not exist (undefined on a GPU)");
    }
    int src = (me / 32) * 32 + src_lane;
    if (src >= nthreads || threads[src].state == T_DONE) src = me;
    memcpy(out, threads[src].slot, n);
    yield_as(T_WAIT_WARP);
}

void *emu_dynamic_smem(void) { return dyn_smem.data(); }

void emu_launch(const char *name, dim3 grid, dim3 block, size_t smem, int flat, void (*fn)(void *), void *ctx) {
    emu_init();
    uint64_t nt = (uint64_t)block.x * block.y * block.z;
    if (!block.x || !block.y || !block.z || !grid.x || !grid.y || !grid.z || nt > 1024 || block.z > 64 ||
        grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu || smem > 48 * 1024) {
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    kname = name;
    kfn = fn;
    kctx = ctx;
    flat_mode = flat;
    nthreads = (int)nt;
    dyn_smem.assign(smem ? smem : 1, 0xFF); /* uninitialised on a GPU: NaN-like bytes */
    if (!flat && threads.size() < nt) threads.resize(nt);
    gridDim = grid;
    blockDim = block;
    launch_device = cur_device;
    launch_name = name;
    emu_guard_open();
    /* GRAFT_EMU_ORDER=reverse runs blocks, and threads between barriers, last first: a
     * kernel whose result depends on that order has a race that a GPU would show. */
    uint64_t nblocks = (uint64_t)grid.x * grid.y * grid.z;
    for (uint64_t bk = 0; bk < nblocks; bk++) {
        uint64_t b = reverse_order ? nblocks - 1 - bk : bk;
        blockIdx = make_uint3((unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y), (unsigned)(b / grid.x / grid.y));
        for (int k = 0; k < nthreads; k++) {
            int i = reverse_order && flat ? nthreads - 1 - k : k;
            uint3 id = make_uint3((unsigned)i % block.x, (unsigned)i / block.x % block.y, (unsigned)i / block.x / block.y);
            if (flat) {
                threadIdx = id;
                fn(ctx);
            } else {
                threads[i].idx = id;
            }
        }
        if (!flat) run_block();
    }
    emu_guard_close();
    launch_device = -1;
}
