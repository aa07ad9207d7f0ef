/* A bare-metal C firmware over otkd's C API, for QEMU's mps2-an386 (Cortex-M4F): linked with the
 * thumbv7em-none-eabihf staticlib (libotkd_capi.a) and nothing else (no libc: freestanding C,
 * output through semihosting). tests/c_firmware.rs builds it with clang and rust-lld, runs it in
 * QEMU and compares its output with the Rust runtime on the host, bit for bit.
 *
 * QEMU's loader places two files before it starts:
 *   0x00100000  the blob, at the start of a 3 MiB region (as firmware-tests' memory.x);
 *   0x21000000  the job: u32 words, u32 k, u32 count, then per query u32 length and its bytes.
 * It prints the lines tests/c/otkd_query.c prints for the same job (info, q ... lines, done),
 * plus SysTick counts (instructions when QEMU runs with -icount shift=0):
 *   calib instructions 2097152 ticks T     a loop of exactly two instructions per iteration
 *   t I encode E search S                   ticks of otkd_encode and of the CSLS otkd_search */
#include <stddef.h>
#include <stdint.h>

#include "otkd.h"

#define BLOB_REGION ((const uint8_t *)0x00100000u)
#define BLOB_REGION_SIZE (3u << 20)
#define JOB ((const uint8_t *)0x21000000u)

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

extern uint32_t _stack_top, _sidata, _sdata, _edata, _sbss, _ebss;

/* Semihosting: operation in r0, argument in r1, `bkpt 0xab`. */
static uint32_t semihost(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void exit_with(uint32_t reason) {
    /* SYS_EXIT with ADP_Stopped_ApplicationExit (QEMU exits 0) or RunTimeErrorUnknown (1). */
    semihost(0x18, (const void *)reason);
    for (;;) {
    }
}

static char out[8192];
static size_t at;

static void put(const char *s) {
    while (*s && at + 2 < sizeof out) out[at++] = *s++;
}

static void put_u(uint32_t v) {
    char digits[11];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && at + 2 < sizeof out) out[at++] = digits[--n];
}

static void put_i(int32_t v) {
    if (v < 0) {
        put("-");
        put_u((uint32_t)0 - (uint32_t)v);
    } else {
        put_u((uint32_t)v);
    }
}

/* Ends the line and writes it (SYS_WRITE0). */
static void line(void) {
    out[at++] = '\n';
    out[at] = '\0';
    semihost(0x04, out);
    at = 0;
}

static uint32_t bits(float f) {
    union {
        float f;
        uint32_t u;
    } v;
    v.f = f;
    return v.u;
}

static uint32_t read_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* SysTick counts down, 24 bits. */
static uint32_t ticks_since(uint32_t start) {
    return (start - SYST_CVR) & 0xFFFFFFu;
}

static OtkdModel model;
static OtkdEmbedding embedding;
static uint8_t scratch[64 * 1024 + 8];

static uint32_t hits(uint32_t i, const char *name, int32_t scoring, size_t k) {
    uint32_t ids[OTKD_MAX_K];
    float scores[OTKD_MAX_K];
    size_t found = 0, j;
    uint32_t start = SYST_CVR, ticks;
    OtkdStatus status = otkd_search(&model, &embedding, scoring, k, ids, scores, &found);
    ticks = ticks_since(start);
    put("q ");
    put_u(i);
    put(" ");
    put(name);
    if (status != OTKD_OK) {
        put("-error ");
        put(otkd_status_name(status));
    }
    for (j = 0; status == OTKD_OK && j < found; j++) {
        put(" ");
        put_u(ids[j]);
        put(":");
        put_u(bits(scores[j]));
    }
    line();
    return ticks;
}

static int run(void) {
    OtkdInfo info;
    size_t scratch_len = 0, j;
    uint32_t words = read_u32(JOB), k = read_u32(JOB + 4), count = read_u32(JOB + 8), i;
    const uint8_t *query = JOB + 12;
    uint32_t start, encode, search, n = 1u << 20;
    OtkdStatus status = otkd_load(BLOB_REGION, BLOB_REGION_SIZE, &model);
    if (status != OTKD_OK) {
        put("load ");
        put(otkd_status_name(status));
        line();
        return 1;
    }
    if (otkd_info(&model, &info) != OTKD_OK || otkd_scratch_size(&model, words, &scratch_len) != OTKD_OK ||
        scratch_len > sizeof scratch - 1)
        return 1;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 5; /* enabled, core clock */
    start = SYST_CVR;
    __asm__ volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(n));
    encode = ticks_since(start);
    put("calib instructions ");
    put_u(2u << 20);
    put(" ticks ");
    put_u(encode);
    line();
    put("info dim ");
    put_u(info.dim);
    put(" layers ");
    put_u(info.layers);
    put(" out_dim ");
    put_u(info.out_dim);
    put(" max_words ");
    put_u(info.max_words);
    put(" documents ");
    put_u(info.documents);
    put(" scratch ");
    put_u((uint32_t)scratch_len);
    line();
    for (i = 0; i < count; i++) {
        uint32_t len = read_u32(query);
        /* One byte past an aligned address: any alignment works. */
        start = SYST_CVR;
        status = otkd_encode(&model, (const char *)query + 4, len, scratch + 1, scratch_len, &embedding);
        encode = ticks_since(start);
        query += 4 + len;
        if (status != OTKD_OK) {
            put("q ");
            put_u(i);
            put(" error ");
            put(otkd_status_name(status));
            line();
            continue;
        }
        put("q ");
        put_u(i);
        put(" embedding ");
        put_u(embedding.len);
        put(" ");
        put_u(bits(embedding.scale));
        for (j = 0; j < embedding.len; j++) {
            put(" ");
            put_i(embedding.values[j]);
        }
        line();
        hits(i, "cosine", OTKD_SCORING_COSINE, k);
        search = hits(i, "csls", OTKD_SCORING_CSLS, k);
        put("t ");
        put_u(i);
        put(" encode ");
        put_u(encode);
        put(" search ");
        put_u(search);
        line();
    }
    put("done");
    line();
    return 0;
}

void Reset_Handler(void) {
    uint32_t *from = &_sidata, *to = &_sdata;
    /* The FPU (CP10, CP11) before any float instruction. */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n isb" ::: "memory");
    while (to < &_edata) *to++ = *from++;
    for (to = &_sbss; to < &_ebss; to++) *to = 0;
    exit_with(run() == 0 ? 0x20026u : 0x20023u);
}

void HardFault_Handler(void) {
    semihost(0x04, "hard fault\n");
    exit_with(0x20023u);
}

__attribute__((section(".vectors"), used)) static const void *const vectors[16] = {
    &_stack_top, (const void *)Reset_Handler, (const void *)HardFault_Handler, (const void *)HardFault_Handler,
    (const void *)HardFault_Handler, (const void *)HardFault_Handler, (const void *)HardFault_Handler,
};
