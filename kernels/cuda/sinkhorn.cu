// Batched, masked, log-domain Sinkhorn: one block per batch item, the whole solve in one launch.
// The contract (and the CPU reference) is kernels/src/sinkhorn/{mod,cpu}.rs; this file follows
// its maths step by step:
//   u_i = log a_i - LSE_j(v_j + k_ij)   (row update: one warp per row, lanes over j)
//   v_j = log b_j - LSE_i(u_i + k_ij)   (column update: one thread per column, a sweep over i)
// with k_ij = -C_ij / eps. Both loops read consecutive j across threads, so the cost is read
// coalesced from global memory and without bank conflicts from shared memory.
//
// Two entries, one template:
//   sinkhorn_smem_f32: the item's real cost block is staged in shared memory once (items with
//                      n*m + 2n + m + 64 floats <= 48 KiB, e.g. 64 x 64);
//   sinkhorn_gmem_f32: larger items read the cost from global memory (L2) every sweep; only the
//                      potentials live in shared memory.
// Output (one buffer): plan [batch, n, m] (exact zeros outside each real block), then per item
// the loss sum(P * C), the marginal error and the iterations (as float).
#include "common.cuh"

#define SINKHORN_THREADS 256

template <bool STAGED>
__device__ void sinkhorn_item(const float* __restrict__ cost, const unsigned* __restrict__ row_lengths,
                              const unsigned* __restrict__ col_lengths, float* __restrict__ out,
                              int batch, int n, int m, float epsilon, unsigned max_iterations,
                              float tolerance) {
    extern __shared__ float shared[];
    const int item = blockIdx.x;
    const int tid = threadIdx.x, lane = tid % OTKD_WARP_SIZE, warp = tid / OTKD_WARP_SIZE;
    const int warps = blockDim.x / OTKD_WARP_SIZE;
    const int rows = (int)row_lengths[item], cols = (int)col_lengths[item];
    const size_t item_len = (size_t)n * m;
    const float* c = cost + (size_t)item * item_len;
    float* plan = out + (size_t)item * item_len;
    float* statistics = out + (size_t)batch * item_len;

    if (rows == 0 || cols == 0) {
        for (size_t x = tid; x < item_len; x += blockDim.x) plan[x] = 0.0f;
        if (tid == 0) {
            statistics[item] = 0.0f;
            statistics[batch + item] = 0.0f;
            statistics[2 * batch + item] = 0.0f;
        }
        return;
    }

    float* u = shared;
    float* v = u + n;
    float* row_lse = v + m;
    float* scratch = row_lse + n;
    float* staged = scratch + OTKD_REDUCE_SCRATCH;

    const float inv_epsilon = 1.0f / epsilon;
    // k_ij = kmat[i * kstride + j] * kscale: staged blocks hold k already, global memory holds C.
    const float* kmat;
    int kstride;
    float kscale;
    if (STAGED) {
        for (int x = tid; x < rows * cols; x += blockDim.x) {
            const int i = x / cols, j = x - i * cols;
            staged[x] = -c[(size_t)i * m + j] * inv_epsilon;
        }
        kmat = staged;
        kstride = cols;
        kscale = 1.0f;
    } else {
        kmat = c;
        kstride = m;
        kscale = -inv_epsilon;
    }
    for (int j = tid; j < cols; j += blockDim.x) v[j] = 0.0f;
    __syncthreads();

    const float log_a = -logf((float)rows), log_b = -logf((float)cols), a = 1.0f / (float)rows;
    unsigned iterations = 0;
    float error = 0.0f;
    for (;;) {
        // LSE_j(v_j + k_ij) for the current v: the next row update needs it, and it gives the
        // row sums of the current plan, r_i = exp(u_i + row_lse_i).
        for (int i = warp; i < rows; i += warps) {
            const float* ki = kmat + (size_t)i * kstride;
            Lse acc = lse_empty();
            for (int j = lane; j < cols; j += OTKD_WARP_SIZE) lse_push(acc, v[j] + ki[j] * kscale);
            acc = warp_lse(acc);
            if (lane == 0) row_lse[i] = lse_value(acc);
        }
        __syncthreads();
        // The error is only needed to stop early (tolerance > 0) or to report it at the end.
        if (iterations > 0 && (tolerance > 0.0f || iterations >= max_iterations)) {
            float part = 0.0f;
            for (int i = tid; i < rows; i += blockDim.x) part += fabsf(expf(u[i] + row_lse[i]) - a);
            error = block_sum(part, scratch);
            if (error < tolerance || iterations >= max_iterations) break;
        }
        for (int i = tid; i < rows; i += blockDim.x) u[i] = log_a - row_lse[i];
        __syncthreads();
        for (int j = tid; j < cols; j += blockDim.x) {
            Lse acc = lse_empty();
            for (int i = 0; i < rows; ++i) lse_push(acc, u[i] + kmat[(size_t)i * kstride + j] * kscale);
            v[j] = log_b - lse_value(acc);
        }
        __syncthreads();
        ++iterations;
    }

    // P_ij = exp(u_i + v_j + k_ij) on the real block, exact zeros elsewhere; loss = sum P * C.
    float loss = 0.0f;
    for (size_t x = tid; x < item_len; x += blockDim.x) {
        const int i = (int)(x / m), j = (int)(x - (size_t)i * m);
        float p = 0.0f;
        if (i < rows && j < cols) {
            p = expf(u[i] + v[j] + kmat[(size_t)i * kstride + j] * kscale);
            loss += p * c[x];
        }
        plan[x] = p;
    }
    loss = block_sum(loss, scratch);
    if (tid == 0) {
        statistics[item] = loss;
        statistics[batch + item] = error;
        statistics[2 * batch + item] = (float)iterations;
    }
}

#define SINKHORN_OP(STAGED, NAME)                                                              \
    extern "C" __global__ void __launch_bounds__(SINKHORN_THREADS)                             \
        NAME(const float* cost, const unsigned* row_lengths, const unsigned* col_lengths,      \
             float* out, int batch, int n, int m, float epsilon, unsigned max_iterations,      \
             float tolerance) {                                                                \
        sinkhorn_item<STAGED>(cost, row_lengths, col_lengths, out, batch, n, m, epsilon,       \
                              max_iterations, tolerance);                                      \
    }

SINKHORN_OP(true, sinkhorn_smem_f32)
SINKHORN_OP(false, sinkhorn_gmem_f32)
