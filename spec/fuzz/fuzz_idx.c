/* libFuzzer target for the IDX reader (core/data/idx.c) and the CSV reader
 * (core/data/csv.c): both read files, so the input is written to a temporary file and
 * read as IDX (plain, and gzip when it starts with gzip's magic) and as CSV with and
 * without a header. A success must give a tensor whose bytes can be read; a failure
 * must say why. Seed corpus: spec/fuzz/corpus/idx. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "data/csv.h"
#include "data/idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch(graft_tensor *t) {
    const unsigned char *p = graft_tensor_data(t);
    size_t n = (size_t)graft_tensor_numel(t) * graft_dtype_size(t->dtype);
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) sum += p[i];
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[] = "/tmp/graft_fuzz_idx_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    FILE *f = fdopen(fd, "wb");
    if (!f) { close(fd); unlink(path); return 0; }
    fwrite(data, 1, size, f);
    fclose(f);

    graft_tensor *t;
    if (graft_idx_read(&t, path) == GRAFT_OK) {
        touch(t);
        graft_tensor_release(t);
    } else if (!graft_last_error()[0]) {
        abort();
    }
    for (int header = -1; header <= 1; header++) {
        graft_csv_opts o = {.delimiter = ',', .header = header, .dtype = header ? GRAFT_F32 : GRAFT_F64};
        graft_csv_table tab;
        if (graft_csv_read(&tab, path, &o) == GRAFT_OK) {
            touch(tab.values);
            if (tab.values->ndim != 2 || tab.values->shape[1] != tab.ncols) abort();
            graft_csv_table_free(&tab);
        } else if (!graft_last_error()[0]) {
            abort();
        }
    }
    unlink(path);
    return 0;
}
