// The emulator's runtime (see cuda_emu.h for the semantics): fibers per thread of a block on
// ucontext stacks, a scheduler that runs them in a seeded permuted order until each waits at a
// barrier, releases barriers when every live thread (or lane of a warp) has arrived, and
// reports a barrier that can never be released as a launch failure.
#include "cuda_emu.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <link.h>
#include <pthread.h>
#include <string>
#include <sys/mman.h>
#include <ucontext.h>
#include <vector>

namespace stylegan_emu {

thread_local ThreadState state = {};

namespace {

constexpr size_t kStackBytes = 256 * 1024;  // kernels keep register tiles in local arrays
constexpr size_t kGuardBytes = 4096;         // PROT_NONE below each stack: an overflow faults
constexpr size_t kMaxDynamicShared = 48 * 1024;  // the device's limit without an opt-in
constexpr size_t kRedZone = 1024;  // poisoned bytes on both sides of the dynamic shared memory

enum class FiberState { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
    uint3 thread_idx;
    int warp, lane;
    FiberState state;
    uint64_t warp_ops;  // warp intrinsics executed: the generation of its next deposit
    ucontext_t context;
    char* stack;  // kStackBytes above a guard page, reused across blocks and launches
};

struct Warp {
    WarpSlot slots[2][32];  // double-buffered: a fast lane's next deposit must not overwrite
                            // a slot that a slower lane has yet to read
};

struct Scheduler {
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    std::vector<int> order;
    std::vector<unsigned char> dynamic_shared;  // [red zone][the launch's bytes][red zone]
    ucontext_t main_context;
    Fiber* running = nullptr;
    void (*body)(void*) = nullptr;
    void* payload = nullptr;
    std::string failure;  // set by a fiber that found a contract violation
    std::string message;  // what went wrong in the last failed launch
    uint64_t rng = 0;
    unsigned char* tls_data = nullptr;  // this library's TLS block on this thread (see below)
    size_t tls_size = 0;
};

uint64_t next_random(uint64_t& s) {  // xorshift64*
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ull;
}

uint64_t base_seed() {
    const char* text = std::getenv("STYLEGAN_EMU_SEED");
    return text && *text ? std::strtoull(text, nullptr, 10) : 1;
}

// The scheduler (fiber stacks included) of a thread that exits: freed, so that short-lived
// threads (the run-time guard's) leave no mappings behind.
void destroy_scheduler(void* pointer) {
    Scheduler* s = static_cast<Scheduler*>(pointer);
    for (Fiber& f : s->fibers) munmap(f.stack - kGuardBytes, kStackBytes + kGuardBytes);
    delete s;
}

pthread_key_t scheduler_key;
pthread_once_t scheduler_key_once = PTHREAD_ONCE_INIT;

Scheduler& scheduler() {
    if (state.scheduler == nullptr) {  // one per OS thread, until it exits
        pthread_once(&scheduler_key_once, [] { pthread_key_create(&scheduler_key, destroy_scheduler); });
        state.scheduler = new Scheduler();
        pthread_setspecific(scheduler_key, state.scheduler);
    }
    return *static_cast<Scheduler*>(state.scheduler);
}

// This library's thread-local block for the calling thread: every __shared__ array lives there.
struct TlsBlock {
    unsigned char* data = nullptr;
    size_t size = 0;
};

int find_own_tls(struct dl_phdr_info* info, size_t, void* out) {
    const uintptr_t own = reinterpret_cast<uintptr_t>(&find_own_tls);
    bool mine = false;
    size_t tls_size = 0;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& h = info->dlpi_phdr[i];
        const uintptr_t start = info->dlpi_addr + h.p_vaddr;
        if (h.p_type == PT_LOAD && own >= start && own < start + h.p_memsz) mine = true;
        if (h.p_type == PT_TLS) tls_size = h.p_memsz;
    }
    if (!mine) return 0;
    TlsBlock* block = static_cast<TlsBlock*>(out);
    block->data = static_cast<unsigned char*>(info->dlpi_tls_data);
    block->size = tls_size;
    return 1;
}

// Fill every __shared__ array with 0xFF bytes. The only other thread-local of this library is
// `state` (everything else hangs off its heap-allocated scheduler): saved and restored.
void poison_static_shared(Scheduler& s) {
    if (s.tls_data == nullptr) {
        TlsBlock found;
        dl_iterate_phdr(find_own_tls, &found);
        if (found.data == nullptr) return;  // not glibc: shared memory keeps the last block's bytes
        s.tls_data = found.data;
        s.tls_size = found.size;
    }
    const ThreadState saved = state;
    std::memset(s.tls_data, 0xFF, s.tls_size);
    state = saved;
}

void fiber_main() {
    Scheduler& s = scheduler();
    s.body(s.payload);
    s.running->state = FiberState::kDone;
    swapcontext(&s.running->context, &s.main_context);
}

// Back to the scheduler until this fiber is released.
void wait(FiberState reason) {
    Scheduler& s = scheduler();
    Fiber* self = s.running;
    self->state = reason;
    swapcontext(&self->context, &s.main_context);
}

void fail(const std::string& message) {
    Scheduler& s = scheduler();
    if (s.failure.empty()) s.failure = message;
    wait(FiberState::kAtBlockBarrier);  // never resumed: the scheduler abandons the block
}

std::string block_name() {
    char text[96];
    std::snprintf(text, sizeof text, "block (%u, %u, %u)", state.block_idx.x, state.block_idx.y, state.block_idx.z);
    return text;
}

void prepare_fibers(Scheduler& s, const dim3& block) {
    const int count = (int)(block.x * block.y * block.z);
    while ((int)s.fibers.size() < count) {
        void* memory = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (memory == MAP_FAILED) return;
        mprotect(memory, kGuardBytes, PROT_NONE);
        s.fibers.push_back(Fiber{});
        s.fibers.back().stack = static_cast<char*>(memory) + kGuardBytes;
    }
    s.warps.resize((count + 31) / 32);
    for (int i = 0; i < count; ++i) {
        Fiber& f = s.fibers[i];
        f.thread_idx = {i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
        f.warp = i / 32;
        f.lane = i % 32;
        f.state = FiberState::kRunnable;
        f.warp_ops = 0;
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack;
        f.context.uc_stack.ss_size = kStackBytes;
        f.context.uc_link = nullptr;
        makecontext(&f.context, fiber_main, 0);
    }
    for (Warp& w : s.warps) std::memset(w.slots, 0xFF, sizeof w.slots);
}

// A permutation of 0..count-1 that differs from the natural order (count > 1).
void shuffle_order(Scheduler& s, int count) {
    s.order.resize(count);
    for (int i = 0; i < count; ++i) s.order[i] = i;
    for (int i = count - 1; i > 0; --i) std::swap(s.order[i], s.order[next_random(s.rng) % (uint64_t)(i + 1)]);
    bool natural = true;
    for (int i = 0; i < count && natural; ++i) natural = s.order[i] == i;
    if (natural) std::reverse(s.order.begin(), s.order.end());
}

// Release the warps whose live lanes all wait at a warp intrinsic; else, the block barrier if
// every live thread waits there. Returns false when nothing can be released (or all are done).
bool release(Scheduler& s, int count, bool* all_done) {
    bool released = false;
    *all_done = true;
    for (int w = 0; w * 32 < count; ++w) {
        bool waiting = false, blocked = false;
        for (int i = w * 32; i < count && i < (w + 1) * 32; ++i) {
            waiting |= s.fibers[i].state == FiberState::kAtWarpBarrier;
            blocked |= s.fibers[i].state == FiberState::kAtBlockBarrier;
        }
        if (!waiting || blocked) continue;
        for (int i = w * 32; i < count && i < (w + 1) * 32; ++i) {
            if (s.fibers[i].state == FiberState::kAtWarpBarrier) s.fibers[i].state = FiberState::kRunnable;
        }
        released = true;
    }
    if (released) {
        *all_done = false;
        return true;
    }
    bool any_warp = false, any_block = false;
    for (int i = 0; i < count; ++i) {
        any_warp |= s.fibers[i].state == FiberState::kAtWarpBarrier;
        any_block |= s.fibers[i].state == FiberState::kAtBlockBarrier;
    }
    if (any_warp || any_block) *all_done = false;
    if (!any_block || any_warp) return false;
    for (int i = 0; i < count; ++i) {
        if (s.fibers[i].state == FiberState::kAtBlockBarrier) s.fibers[i].state = FiberState::kRunnable;
    }
    return true;
}

// A block that wrote outside its dynamic shared memory (an indexing bug that a GPU may or may
// not survive) fails the launch.
int check_red_zones(Scheduler& s) {
    const size_t size = s.dynamic_shared.size();
    for (size_t i = 0; i < size; i = (i + 1 == kRedZone) ? size - kRedZone : i + 1) {
        if (s.dynamic_shared[i] != 0xFF) {
            s.message = block_name() + ": wrote at byte " + std::to_string((long long)i - (long long)kRedZone) +
                        " of its " + std::to_string(size - 2 * kRedZone) + " bytes of dynamic shared memory";
            return cudaErrorLaunchFailure;
        }
    }
    return cudaSuccess;
}

int run_block(Scheduler& s, int count) {
    s.rng = base_seed() * 0x9E3779B97F4A7C15ull ^
            ((uint64_t)state.block_idx.x << 1 | (uint64_t)state.block_idx.y << 32 | (uint64_t)state.block_idx.z << 48);
    s.rng |= 1;
    poison_static_shared(s);
    std::memset(s.dynamic_shared.data(), 0xFF, s.dynamic_shared.size());
    prepare_fibers(s, state.block_dim);
    s.failure.clear();
    for (;;) {
        shuffle_order(s, count);
        for (int i : s.order) {
            Fiber& f = s.fibers[i];
            if (f.state != FiberState::kRunnable) continue;
            s.running = &f;
            state.thread_idx = f.thread_idx;
            swapcontext(&s.main_context, &f.context);
            if (!s.failure.empty()) {
                s.message = block_name() + ": " + s.failure;
                return cudaErrorLaunchFailure;
            }
        }
        bool all_done = false;
        if (release(s, count, &all_done)) continue;
        if (all_done) return check_red_zones(s);
        s.message = block_name() + ": a barrier that can never be released: some threads wait at "
                       "__syncthreads while others of the block finished or wait at a warp intrinsic";
        return cudaErrorLaunchFailure;
    }
}

int set_error(int error, const std::string& message) {
    state.last_error = error;
    scheduler().message = message;
    return error;
}

}  // namespace

int run_grid(dim3 grid, dim3 block, size_t dynamic_shared_bytes, void (*body)(void*), void* payload) {
    const uint64_t threads = (uint64_t)block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
        grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
        return set_error(cudaErrorInvalidConfiguration, "invalid grid or block dimensions");
    }
    if (dynamic_shared_bytes > kMaxDynamicShared) {
        return set_error(cudaErrorInvalidValue, "more than 48 KiB of dynamic shared memory");
    }
    Scheduler& s = scheduler();
    const ThreadState outer = state;  // a launch from inside a kernel is not allowed; keep it sane
    s.body = body;
    s.payload = payload;
    s.dynamic_shared.assign(kRedZone + (dynamic_shared_bytes + 15) / 16 * 16 + kRedZone, 0xFF);
    prepare_fibers(s, block);
    if (s.fibers.size() < threads) return set_error(cudaErrorMemoryAllocation, "no memory for fiber stacks");
    state.block_dim = block;
    state.grid_dim = grid;
    state.dynamic_shared = s.dynamic_shared.data() + kRedZone;
    // Last block first: a kernel that relies on blocks running in order fails here.
    const uint64_t blocks = (uint64_t)grid.x * grid.y * grid.z;
    int error = cudaSuccess;
    for (uint64_t n = blocks; n-- > 0 && error == cudaSuccess;) {
        state.block_idx = {(unsigned)(n % grid.x), (unsigned)(n / grid.x % grid.y), (unsigned)(n / grid.x / grid.y)};
        error = run_block(s, (int)threads);
    }
    const std::string message = s.message;
    state = outer;
    return error == cudaSuccess ? cudaSuccess : set_error(error, message);
}

const WarpSlot* warp_exchange(unsigned int mask, uint64_t value, uint64_t* generation, int* lane) {
    Scheduler& s = scheduler();
    Fiber* self = s.running;
    if (mask != 0xffffffffu) fail("a warp intrinsic with a partial mask (the emulation supports full masks only)");
    Warp& warp = s.warps[self->warp];
    const int buffer = (int)(self->warp_ops & 1);
    *generation = self->warp_ops++;
    *lane = self->lane;
    warp.slots[buffer][self->lane] = WarpSlot{value, *generation};
    wait(FiberState::kAtWarpBarrier);
    return warp.slots[buffer];
}

}  // namespace stylegan_emu

using stylegan_emu::state;

void __syncthreads() { stylegan_emu::wait(stylegan_emu::FiberState::kAtBlockBarrier); }

void __syncwarp(unsigned int mask) {
    uint64_t generation = 0;
    int lane = 0;
    stylegan_emu::warp_exchange(mask, 0, &generation, &lane);
}

cudaError_t cudaGetLastError() {
    const int error = state.last_error;
    state.last_error = cudaSuccess;
    return static_cast<cudaError_t>(error);
}

const char* cudaGetErrorString(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
    }
}

// What went wrong in the last failed launch on this thread, in more words than the error code.
extern "C" const char* stylegan_emu_last_message() { return stylegan_emu::scheduler().message.c_str(); }

// Element-wise conversions, so a test can compare the emulated rounding with torch's.
extern "C" void stylegan_emu_round_to_half(const float* in, uint16_t* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = __float2half_rn(in[i]).bits_;
}

extern "C" void stylegan_emu_round_to_bfloat16(const float* in, uint16_t* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = __float2bfloat16_rn(in[i]).bits_;
}
