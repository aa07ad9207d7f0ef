/* A C program over otkd's C API (include/otkd.h, libotkd_capi.a): loads a blob file, answers every
 * line of stdin as a query (encode, then the top k by cosine and by CSLS) and exercises the error
 * paths. tests/c_program.rs compiles it, runs it and compares every line with the Rust runtime.
 *
 *   otkd_query BLOB WORDS K < queries
 *
 * Output, one line each (scores as the bits of the float, decimal, as Rust's f32::to_bits):
 *   info dim D layers L out_dim O max_words M documents N scratch BYTES
 *   q I error STATUS                      the query was refused
 *   q I embedding LEN SCALE_BITS V0 V1 ... the query's embedding
 *   q I cosine ID:BITS ...                 the top k by cosine (then `csls`)
 *   check NAME STATUS                      an error path's status
 *   done
 * The program allocates (the library does not): the blob and the scratch memory, which it hands
 * to the library one byte past an aligned address to check that any alignment works. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "otkd.h"

static unsigned bits(float value) {
    uint32_t u;
    memcpy(&u, &value, sizeof u);
    return (unsigned)u;
}

static void check(const char *name, OtkdStatus status) {
    printf("check %s %s\n", name, otkd_status_name(status));
}

static void print_hits(size_t i, const char *name, const OtkdModel *model, const OtkdEmbedding *query,
                       int32_t scoring, size_t k) {
    uint32_t ids[OTKD_MAX_K];
    float scores[OTKD_MAX_K];
    size_t found = 0, j;
    OtkdStatus status = otkd_search(model, query, scoring, k, ids, scores, &found);
    if (status != OTKD_OK) {
        printf("q %zu %s-error %s\n", i, name, otkd_status_name(status));
        return;
    }
    printf("q %zu %s", i, name);
    for (j = 0; j < found; j++) printf(" %u:%u", (unsigned)ids[j], bits(scores[j]));
    printf("\n");
}

int main(int argc, char **argv) {
    FILE *file;
    long length;
    unsigned char *blob, *copy, *scratch_block, *scratch;
    size_t words, k, scratch_len = 0, i = 0, j, blob_len;
    static OtkdModel model, other;
    OtkdInfo info;
    OtkdEmbedding embedding;
    static char line[1 << 16];
    OtkdStatus status;

    if (argc != 4) {
        fprintf(stderr, "usage: %s BLOB WORDS K < queries\n", argv[0]);
        return 2;
    }
    words = (size_t)strtoul(argv[2], NULL, 10);
    k = (size_t)strtoul(argv[3], NULL, 10);
    file = fopen(argv[1], "rb");
    if (!file || fseek(file, 0, SEEK_END) != 0 || (length = ftell(file)) < 0 || fseek(file, 0, SEEK_SET) != 0) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    blob_len = (size_t)length;
    /* Room for the blob followed by erased flash, as in a flash region. */
    blob = malloc(blob_len + 4096);
    copy = malloc(blob_len + 4096);
    if (!blob || !copy || fread(blob, 1, blob_len, file) != blob_len) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    fclose(file);
    memset(blob + blob_len, 0xff, 4096);

    status = otkd_load(blob, blob_len, &model);
    if (status != OTKD_OK) {
        printf("load %s\n", otkd_status_name(status));
        return 1;
    }
    if (otkd_info(&model, &info) != OTKD_OK || otkd_scratch_size(&model, words, &scratch_len) != OTKD_OK) return 1;
    printf("info dim %u layers %u out_dim %u max_words %u documents %u scratch %zu\n", (unsigned)info.dim,
           (unsigned)info.layers, (unsigned)info.out_dim, (unsigned)info.max_words, (unsigned)info.documents,
           scratch_len);
    scratch_block = malloc(scratch_len + 16);
    if (!scratch_block) return 2;
    scratch = scratch_block + 1;

    while (fgets(line, sizeof line, stdin)) {
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
        status = otkd_encode(&model, line, len, scratch, scratch_len, &embedding);
        if (status != OTKD_OK) {
            printf("q %zu error %s\n", i, otkd_status_name(status));
        } else {
            printf("q %zu embedding %u %u", i, (unsigned)embedding.len, bits(embedding.scale));
            for (j = 0; j < embedding.len; j++) printf(" %d", (int)embedding.values[j]);
            printf("\n");
            print_hits(i, "cosine", &model, &embedding, OTKD_SCORING_COSINE, k);
            print_hits(i, "csls", &model, &embedding, OTKD_SCORING_CSLS, k);
        }
        i++;
    }

    /* Error paths: each prints its status; the Rust test names the one expected. */
    {
        uint32_t ids[OTKD_MAX_K + 1];
        float scores[OTKD_MAX_K + 1];
        size_t found;
        const char *query = "Jaʼa, qhana!";
        check("null-model", otkd_info(NULL, &info));
        memset(&other, 0, sizeof other);
        check("not-loaded", otkd_info(&other, &info));
        check("null-text", otkd_encode(&model, NULL, 3, scratch, scratch_len, &embedding));
        check("bad-utf8", otkd_encode(&model, "\xff\xfe", 2, scratch, scratch_len, &embedding));
        check("empty-text", otkd_encode(&model, NULL, 0, scratch, scratch_len, &embedding));
        check("tiny-scratch", otkd_encode(&model, query, strlen(query), scratch, 16, &embedding));
        check("encode", otkd_encode(&model, query, strlen(query), scratch, scratch_len, &embedding));
        check("bad-scoring", otkd_search(&model, &embedding, 7, 1, ids, scores, &found));
        check("k-too-large", otkd_search(&model, &embedding, OTKD_SCORING_CSLS, OTKD_MAX_K + 1, ids, scores, &found));
        embedding.len = 3;
        check("wrong-width", otkd_search(&model, &embedding, OTKD_SCORING_COSINE, 1, ids, scores, &found));
        check("null-blob", otkd_load(NULL, 16, &other));
        check("too-short", otkd_load(blob, 8, &other));
        check("truncated", otkd_load(blob, blob_len - 1, &other));
        check("region", otkd_load(blob, blob_len + 4096, &other));
        check("region-info", otkd_info(&other, &info));
        memset(copy, 0xff, blob_len);
        check("erased", otkd_load(copy, blob_len, &other));
        check("failed-load-unloads", otkd_info(&other, &info));
        memcpy(copy, blob, blob_len);
        copy[16 + (blob_len - 16) / 2] ^= 0x10;
        check("corrupt", otkd_load(copy, blob_len, &other));
        copy[16 + (blob_len - 16) / 2] ^= 0x10;
        copy[4] = 9;
        check("version", otkd_load(copy, blob_len, &other));
        check("unknown-status", 12345);
    }
    printf("done\n");
    free(scratch_block);
    free(copy);
    free(blob);
    return 0;
}
