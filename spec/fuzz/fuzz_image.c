/* libFuzzer target for the PNG and JPEG decoders (core/data/image.c): decodes the input
 * as it is, as gray and as RGB; a success must give a uint8 [H, W, C] tensor whose bytes
 * can all be read, a failure must say why. Seed corpus: spec/fuzz/corpus/image (the
 * fixtures of spec/fixtures/data are good seeds). */
#include <stdint.h>
#include <stdlib.h>

#include "data/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const int channels[3] = {0, 1, 3};
    for (int k = 0; k < 3; k++) {
        graft_tensor *t;
        if (graft_image_decode(&t, data, size, channels[k], "fuzz")) {
            if (!graft_last_error()[0]) abort();
            continue;
        }
        if (t->dtype != GRAFT_U8 || t->ndim != 3 || (channels[k] && t->shape[2] != channels[k])) abort();
        const unsigned char *p = graft_tensor_data(t);
        unsigned sum = 0;
        for (int64_t i = 0; i < graft_tensor_numel(t); i++) sum += p[i];
        (void)sum;
        graft_tensor_release(t);
    }
    return 0;
}
