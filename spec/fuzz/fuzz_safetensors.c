/* libFuzzer target for the safetensors reader: parses the input as a whole file,
 * creates every tensor (copies: graft_safetensors_load_buffer) and touches its bytes,
 * then writes what was read to a temporary file and parses that again, which must
 * succeed. Seed corpus: spec/fuzz/corpus/safetensors (`make fuzz`). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    graft_safetensors *st;
    if (graft_safetensors_load_buffer(&st, data, size, "fuzz")) {
        if (!graft_last_error()[0]) abort(); /* every failure says why */
        return 0;
    }
    /* touch every byte of every tensor (ASan checks the copies' bounds) */
    unsigned sum = 0;
    for (int64_t i = 0; i < st->n; i++) {
        graft_tensor *t = st->entries[i].tensor;
        size_t nbytes = (size_t)graft_tensor_numel(t) * graft_dtype_size(t->dtype);
        const unsigned char *p = graft_tensor_data(t);
        for (size_t k = 0; k < nbytes; k++) sum += p[k];
    }
    (void)sum;

    /* write back what was read (names without NUL only) and read it again */
    const char **names = calloc((size_t)st->n + 1, sizeof *names);
    graft_tensor **tensors = calloc((size_t)st->n + 1, sizeof *tensors);
    const char **mk = calloc((size_t)st->nmeta + 1, sizeof *mk);
    const char **mv = calloc((size_t)st->nmeta + 1, sizeof *mv);
    int ok = names && tensors && mk && mv;
    for (int64_t i = 0; ok && i < st->n; i++) {
        names[i] = st->entries[i].name;
        tensors[i] = st->entries[i].tensor;
        if (strlen(names[i]) != st->entries[i].name_len) ok = 0;
    }
    for (int64_t i = 0; ok && i < st->nmeta; i++) {
        mk[i] = st->meta[i].key;
        mv[i] = st->meta[i].value;
        if (strlen(mk[i]) != st->meta[i].key_len || strlen(mv[i]) != st->meta[i].value_len) ok = 0;
    }
    if (ok) {
        char path[] = "/tmp/graft-fuzz-st-XXXXXX";
        int fd = mkstemp(path);
        if (fd >= 0) {
            close(fd);
            if (graft_safetensors_save(path, st->n, names, tensors, st->nmeta, mk, mv)) abort();
            graft_safetensors *back;
            if (graft_safetensors_load(&back, path)) abort(); /* graft's own output must read back */
            if (back->n != st->n || back->nmeta != st->nmeta) abort();
            graft_safetensors_free(back);
            unlink(path);
        }
    }
    free(names);
    free(tensors);
    free(mk);
    free(mv);
    graft_safetensors_free(st);
    return 0;
}
