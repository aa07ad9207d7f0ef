// Helpers shared by the otkd kernels: log-sum-exp accumulators and warp/block reductions.
//
// Compiled at run time by NVRTC (the Rust side inlines this file where a kernel source
// includes it), so it uses only built-ins: no <cmath>, no <cuda/std>.
#pragma once

#define OTKD_WARP_SIZE 32
#define OTKD_FULL_MASK 0xffffffffu
// Scratch floats a block reduction needs in shared memory (two per warp, up to 32 warps).
#define OTKD_REDUCE_SCRATCH 64

__device__ __forceinline__ float otkd_neg_inf() { return __int_as_float(0xff800000); }

// A running log-sum-exp: max and the sum of exp(x - max). Empty: (-inf, 0).
struct Lse {
    float max;
    float sum;
};

__device__ __forceinline__ Lse lse_empty() { return Lse{otkd_neg_inf(), 0.0f}; }

// Adds one finite term with a single exp (the smaller side is rescaled).
__device__ __forceinline__ void lse_push(Lse& acc, float x) {
    if (x > acc.max) {
        acc.sum = acc.sum * expf(acc.max - x) + 1.0f;
        acc.max = x;
    } else {
        acc.sum += expf(x - acc.max);
    }
}

__device__ __forceinline__ Lse lse_merge(Lse a, Lse b) {
    const float max = fmaxf(a.max, b.max);
    // Both empty: exp(-inf - -inf) would be NaN.
    if (max == otkd_neg_inf()) return a;
    return Lse{max, a.sum * expf(a.max - max) + b.sum * expf(b.max - max)};
}

__device__ __forceinline__ float lse_value(Lse a) { return a.max + logf(a.sum); }

// Every lane ends with the merge of all 32 lanes (butterfly: the same order on every lane).
__device__ __forceinline__ Lse warp_lse(Lse a) {
    for (int offset = OTKD_WARP_SIZE / 2; offset > 0; offset >>= 1) {
        Lse other{__shfl_xor_sync(OTKD_FULL_MASK, a.max, offset),
                  __shfl_xor_sync(OTKD_FULL_MASK, a.sum, offset)};
        a = lse_merge(a, other);
    }
    return a;
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = OTKD_WARP_SIZE / 2; offset > 0; offset >>= 1) {
        x += __shfl_xor_sync(OTKD_FULL_MASK, x, offset);
    }
    return x;
}

// Sum over the block, returned to every thread; a fixed order for a fixed block size, so runs
// repeat bit for bit. `scratch` holds OTKD_REDUCE_SCRATCH floats; all threads must call it.
__device__ float block_sum(float x, float* scratch) {
    const int lane = threadIdx.x % OTKD_WARP_SIZE, warp = threadIdx.x / OTKD_WARP_SIZE;
    const int warps = blockDim.x / OTKD_WARP_SIZE;
    x = warp_sum(x);
    __syncthreads();  // earlier readers of scratch are done
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    float total = lane < warps ? scratch[lane] : 0.0f;
    total = warp_sum(total);
    return total;
}

// Log-sum-exp over the block, returned to every thread; same contract as block_sum.
__device__ float block_lse(Lse acc, float* scratch) {
    const int lane = threadIdx.x % OTKD_WARP_SIZE, warp = threadIdx.x / OTKD_WARP_SIZE;
    const int warps = blockDim.x / OTKD_WARP_SIZE;
    acc = warp_lse(acc);
    __syncthreads();
    if (lane == 0) {
        scratch[2 * warp] = acc.max;
        scratch[2 * warp + 1] = acc.sum;
    }
    __syncthreads();
    Lse total = lane < warps ? Lse{scratch[2 * lane], scratch[2 * lane + 1]} : lse_empty();
    return lse_value(warp_lse(total));
}
