// Fused sentence-level KD losses (MSE, in-batch similarity KL, InfoNCE) and their gradient.
// The contract (and the CPU reference) is kernels/src/kd/{mod,cpu}.rs. S (student) and T
// (teacher) are [b, d] row-major; Z = S T^T / tau, Y = T T^T / tau.
//
//   kd_rows_f32     grid b: block i forms row i of Z (and of Y for KL, column i of Z for
//                   InfoNCE) with one warp per dot product, and writes row i's statistics;
//   kd_reduce_f32   one block: the loss, the mean of the row losses in a fixed order;
//   kd_grad_f32     grid b: block i forms row i of dLoss/dZ and then dLoss/dS_i = ... T / tau.
//
// Forward output (one buffer, 1 + 4b floats): [loss, row_lse[b], col_lse[b], target_lse[b],
// row_loss[b]]; the gradient kernel reads the log-sum-exps from it instead of recomputing them.
#include "common.cuh"

#define KD_MSE 0
#define KD_KL 1
#define KD_INFONCE 2
#define KD_THREADS 256

// x . y for d-vectors by one warp; every lane gets the result.
__device__ __forceinline__ float warp_dot(const float* __restrict__ x, const float* __restrict__ y, int d) {
    const int lane = threadIdx.x % OTKD_WARP_SIZE;
    float acc = 0.0f;
    for (int c = lane; c < d; c += OTKD_WARP_SIZE) acc += x[c] * y[c];
    return warp_sum(acc);
}

// Shared memory: z_row[b], y_row[b], z_col[b], scratch[OTKD_REDUCE_SCRATCH].
extern "C" __global__ void __launch_bounds__(KD_THREADS)
    kd_rows_f32(const float* __restrict__ s, const float* __restrict__ t, float* __restrict__ out, int b,
                int d, float inv_temperature, int variant) {
    extern __shared__ float shared[];
    float* z_row = shared;
    float* y_row = z_row + b;
    float* z_col = y_row + b;
    float* scratch = z_col + b;
    const int i = blockIdx.x, tid = threadIdx.x;
    const int warp = tid / OTKD_WARP_SIZE, warps = blockDim.x / OTKD_WARP_SIZE;
    const float* si = s + (size_t)i * d;
    const float* ti = t + (size_t)i * d;

    float part = 0.0f;
    for (int c = tid; c < d; c += blockDim.x) {
        const float e = si[c] - ti[c];
        part += e * e;
    }
    float loss = block_sum(part, scratch);
    float row_lse = 0.0f, col_lse = 0.0f, target_lse = 0.0f;
    if (variant != KD_MSE) {
        for (int j = warp; j < b; j += warps) {
            const float* tj = t + (size_t)j * d;
            const float z = warp_dot(si, tj, d) * inv_temperature;
            const float y = variant == KD_KL ? warp_dot(ti, tj, d) * inv_temperature : 0.0f;
            const float zc = variant == KD_INFONCE ? warp_dot(s + (size_t)j * d, ti, d) * inv_temperature : 0.0f;
            if (tid % OTKD_WARP_SIZE == 0) {
                z_row[j] = z;
                y_row[j] = y;
                z_col[j] = zc;
            }
        }
        __syncthreads();
        Lse acc = lse_empty();
        for (int j = tid; j < b; j += blockDim.x) lse_push(acc, z_row[j]);
        row_lse = block_lse(acc, scratch);
        if (variant == KD_KL) {
            acc = lse_empty();
            for (int j = tid; j < b; j += blockDim.x) lse_push(acc, y_row[j]);
            target_lse = block_lse(acc, scratch);
            part = 0.0f;
            for (int j = tid; j < b; j += blockDim.x) {
                const float p = expf(y_row[j] - target_lse);
                part += p * (logf(p + 1e-12f) - (z_row[j] - row_lse));
            }
            loss += block_sum(part, scratch);
        } else {
            acc = lse_empty();
            for (int j = tid; j < b; j += blockDim.x) lse_push(acc, z_col[j]);
            col_lse = block_lse(acc, scratch);
            loss += 0.5f * ((row_lse - z_row[i]) + (col_lse - z_col[i]));
        }
    }
    if (tid == 0) {
        out[1 + i] = row_lse;
        out[1 + b + i] = col_lse;
        out[1 + 2 * b + i] = target_lse;
        out[1 + 3 * b + i] = loss;
    }
}

extern "C" __global__ void __launch_bounds__(KD_THREADS) kd_reduce_f32(float* __restrict__ out, int b) {
    __shared__ float scratch[OTKD_REDUCE_SCRATCH];
    float part = 0.0f;
    for (int i = threadIdx.x; i < b; i += blockDim.x) part += out[1 + 3 * b + i];
    const float total = block_sum(part, scratch);
    if (threadIdx.x == 0) out[0] = total / (float)b;
}

// dLoss/dS for an upstream gradient of 1. Shared memory: delta[b], p[b], scratch.
extern "C" __global__ void __launch_bounds__(KD_THREADS)
    kd_grad_f32(const float* __restrict__ s, const float* __restrict__ t, const float* __restrict__ forward,
                float* __restrict__ grad, int b, int d, float inv_temperature, int variant) {
    extern __shared__ float shared[];
    float* delta = shared;
    float* p = delta + b;
    float* scratch = p + b;
    const int i = blockIdx.x, tid = threadIdx.x;
    const int warp = tid / OTKD_WARP_SIZE, warps = blockDim.x / OTKD_WARP_SIZE;
    const float* si = s + (size_t)i * d;
    const float* ti = t + (size_t)i * d;
    const float inv_b = 1.0f / (float)b;

    if (variant != KD_MSE) {
        const float row_lse = forward[1 + i];
        const float target_lse = forward[1 + 2 * b + i];
        for (int j = warp; j < b; j += warps) {
            const float* tj = t + (size_t)j * d;
            const float z = warp_dot(si, tj, d) * inv_temperature;
            const float q = expf(z - row_lse);
            if (variant == KD_KL) {
                const float pj = expf(warp_dot(ti, tj, d) * inv_temperature - target_lse);
                if (tid % OTKD_WARP_SIZE == 0) {
                    delta[j] = q;
                    p[j] = pj;
                }
            } else if (tid % OTKD_WARP_SIZE == 0) {
                const float column = expf(z - forward[1 + b + j]);
                delta[j] = 0.5f * (q + column) - (i == j ? 1.0f : 0.0f);
            }
        }
        __syncthreads();
        if (variant == KD_KL) {
            float part = 0.0f;
            for (int j = tid; j < b; j += blockDim.x) part += p[j];
            const float mass = block_sum(part, scratch);
            for (int j = tid; j < b; j += blockDim.x) delta[j] = delta[j] * mass - p[j];
            __syncthreads();
        }
    }
    const float scale = inv_temperature * inv_b;
    for (int c = tid; c < d; c += blockDim.x) {
        float acc = 0.0f;
        if (variant != KD_MSE) {
            for (int j = 0; j < b; ++j) acc += delta[j] * t[(size_t)j * d + c];
        }
        grad[(size_t)i * d + c] = 2.0f * (si[c] - ti[c]) * inv_b + scale * acc;
    }
}
